"""``Golem``: batch jobs split into fragments that run on many nodes at once (yapapi's API).

    async with Golem(budget=1.0) as golem:
        async for task in golem.execute_tasks(worker, [Task(data=x) for x in chunks], payload=package):
            print(task.result)

How it maps onto gridtask: each script a worker yields is one fragment, one gridtask task of
``TaskType.SCRIPT`` on model ``vm``, created by the core ``Client`` with its fee taken from the
budget (``Budget``: escrowed plus spent never pass it). The network picks each fragment's node.
A fragment that fails (aborted, errored, outvoted, not delivered) is sent again as a new task
that excludes the nodes it failed on, up to ``max_fragment_tries``; a node that hangs is
abandoned at its stage deadline (the core client aborts the task on chain, refunding the fee)
and the fragment goes elsewhere, while the other workers go on. ``max_workers`` workers run at
once, each one fragment at a time; a task a worker rejects with ``retry=True``, or holds when it
fails, goes back to the queue for any worker, up to ``max_task_tries``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import sys
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from gridtask.chain.client import GROUP_SIZE
from gridtask.exceptions import (
    ChainError,
    GridtaskError,
    RelayError,
    ResultMismatch,
    TaskFailed,
    TaskTimeout,
    TransactionReverted,
    ValidationError,
)
from gridtask.limits import VM_MODEL, check_positive, default_stage_timeout
from gridtask.retry import Policy
from gridtask.scripts import ScriptResult, ScriptSpec, check_script
from gridtask.sdk._client import DEFAULT_FEE, Client, TaskHandle
from gridtask.sdk.dria.client import PER_NODE
from gridtask.sdk.golem import events
from gridtask.sdk.golem.budget import ETHER, Budget, BudgetExceeded
from gridtask.sdk.golem.ctx import WorkContext
from gridtask.sdk.golem.script import CommandExecutionError, Script
from gridtask.sdk.golem.task import Task, TaskStatus
from gridtask.sdk.golem.vm import VmPayload
from gridtask.types import TaskType

log = logging.getLogger("gridtask.sdk.golem")

Worker = Callable[[WorkContext, AsyncIterator[Task[Any, Any]]], AsyncGenerator[Script, Any]]
EventConsumer = Callable[[events.Event], None]

DEFAULT_MAX_WORKERS = 10
DEFAULT_FRAGMENT_TRIES = 3
DEFAULT_TASK_TRIES = 3
STAGES = 4
"""A fragment's stages on chain (queued, running, validated, delivered), each at most its stage
timeout: the longest ``Client.result`` may follow one try (plus ``FOLLOW_MARGIN_S``)."""
FOLLOW_MARGIN_S = 30.0
EXCLUDE_MAX = 2  # the contract's exclude list

FRAGMENT_RETRY = Policy(
    "fragment elsewhere",
    lambda exc: isinstance(exc, TaskFailed | RelayError | ChainError) and not isinstance(exc, TransactionReverted),
    first=0.2, cap=2.0, jitter=0.2)
"""A fragment that failed on chain (aborted, errored, outvoted, a result that did not fit), or whose
relay or chain call failed, is sent again as a new task on another node; ``max_fragment_tries``
bounds the tries."""


class FragmentFailed(GridtaskError):
    """A script failed on every node it was tried on (``max_fragment_tries``); raised in the
    worker at its ``yield``. ``errors`` are the tries' errors, oldest first."""

    def __init__(self, message: str, errors: Sequence[BaseException] = ()) -> None:
        self.errors = list(errors)
        super().__init__(message)


def _wei(budget: float | Decimal | int) -> int:
    """yapapi's budget is in GLM; gridtask's in ether, the chain's own currency."""
    if isinstance(budget, bool) or not isinstance(budget, int | float | Decimal) or not budget > 0:
        raise ValidationError(f"budget: a positive amount of ether (got {budget!r})")
    return int(Decimal(str(budget)) * ETHER)


class Golem:
    """The job runner (yapapi's ``Golem``): ``async with Golem(budget=...) as golem``.

    ``budget``: ether the session may spend in all (escrowed fees count until refunded);
    ``fee``: wei per fragment; ``fragment_timeout``: seconds a fragment may take per stage on its
    node (a script's own ``timeout`` wins; default: the network's stage timeout);
    ``event_consumer``: called with every ``events.Event``; ``progress``: a terminal progress
    bar (done, running, failed, spent; default: when stderr is a terminal).
    ``subnet_tag``, ``payment_driver`` and ``payment_network`` are accepted for yapapi's
    examples and mean nothing here: one chain is both the market and the payment."""

    def __init__(
        self,
        *,
        budget: float | Decimal | int,
        event_consumer: EventConsumer | None = None,
        fee: int = DEFAULT_FEE,
        fragment_timeout: float | None = None,
        max_fragment_tries: int = DEFAULT_FRAGMENT_TRIES,
        max_task_tries: int = DEFAULT_TASK_TRIES,
        progress: bool | None = None,
        client: Client | None = None,
        config_path: Path | str | None = None,
        subnet_tag: str | None = None,
        payment_driver: str | None = None,
        payment_network: str | None = None,
    ) -> None:
        self.budget = Budget(_wei(budget))
        if isinstance(fee, bool) or not isinstance(fee, int) or fee <= 0:
            raise ValidationError(f"fee: a positive number of wei (got {fee!r})")
        if fragment_timeout is not None:
            check_positive("fragment_timeout", fragment_timeout, "seconds")
        for name, value in (("max_fragment_tries", max_fragment_tries), ("max_task_tries", max_task_tries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name}: an integer of at least 1 (got {value!r})")
        self.fee = fee
        self.fragment_timeout = fragment_timeout
        self.max_fragment_tries = max_fragment_tries
        self.max_task_tries = max_task_tries
        self._own_client = client is None
        self._client = client if client is not None else Client(config_path=config_path)
        self._consumers: list[tuple[EventConsumer, tuple[type[events.Event], ...] | None]] = []
        if event_consumer is not None:
            self.add_event_consumer(event_consumer)
        if progress if progress is not None else sys.stderr.isatty():
            from gridtask.sdk.golem.progress import ProgressBar

            self.add_event_consumer(ProgressBar(self.budget))
        self._job_ids = itertools.count(1)
        self.operative = False

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Golem:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._client.open()
        self.operative = True

    async def stop(self) -> None:
        self.operative = False
        if self._own_client:
            await self._client.aclose()

    @property
    def client(self) -> Client:
        return self._client

    async def publish_image(self, directory: Path | str) -> str:
        """Pack ``directory`` into a bundle (deterministic: the same files give the same hash) and
        upload it to the relay; returns the hash for ``vm.repo(image_hash=...)``. The same as
        ``gridtask bundle publish DIR``."""
        from gridtask.bundles import pack_dir

        folder = Path(directory)
        if not folder.is_dir():
            raise ValidationError(f"image: {folder} is not a directory")
        return str(await self._client.relay.put_bundle(pack_dir(folder)))

    # ------------------------------------------------------------ events

    def add_event_consumer(self, consumer: EventConsumer,
                           event_classes_or_names: Iterable[type[events.Event] | str] | None = None) -> None:
        """Call ``consumer(event)`` for every event, or only those of the classes named."""
        classes: tuple[type[events.Event], ...] | None = None
        if event_classes_or_names is not None:
            found = []
            for c in event_classes_or_names:
                cls = getattr(events, c, None) if isinstance(c, str) else c
                if not (isinstance(cls, type) and issubclass(cls, events.Event)):
                    raise ValidationError(f"event_classes_or_names: {c!r} is not an event of gridtask.sdk.golem.events")
                found.append(cls)
            classes = tuple(found)
        self._consumers.append((consumer, classes))

    def _emit(self, event: events.Event) -> None:
        for consumer, classes in self._consumers:
            if classes is None or isinstance(event, classes):
                try:
                    consumer(event)
                except Exception:  # a consumer's bug must not stop the job
                    log.exception("event consumer %r failed on %s", consumer, type(event).__name__)

    # ------------------------------------------------------------ jobs

    async def execute_tasks(
        self,
        worker: Worker,
        data: Iterable[Task[Any, Any]] | AsyncIterable[Task[Any, Any]],
        payload: VmPayload,
        max_workers: int | None = None,
        timeout: timedelta | float | None = None,
        job_id: str | None = None,
        implicit_init: bool = True,
    ) -> AsyncIterator[Task[Any, Any]]:
        """Run ``worker`` over the tasks on the network's ``vm`` nodes; yield each task as it is
        accepted. ``timeout``: the whole job's (``TaskTimeout`` when it passes)."""
        if not isinstance(payload, VmPayload):
            raise ValidationError("payload: use `await vm.repo(image_hash=...)` from gridtask.sdk.golem")
        if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                                        or max_workers < 1):
            raise ValidationError(f"max_workers: an integer of at least 1 (got {max_workers!r})")
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if seconds is not None:
            check_positive("timeout", seconds, "seconds")
        if not self.operative:
            raise GridtaskError("Golem is not started: use `async with Golem(...) as golem`")
        job = _Job(self, job_id or str(next(self._job_ids)), worker, data, payload)
        await job.prepare(max_workers)
        async for task in job.run(seconds):
            yield task


@dataclasses.dataclass
class _Slot:
    """One worker: the tasks it holds (taken and not yet accepted or rejected)."""

    index: int
    held: set[Task[Any, Any]] = dataclasses.field(default_factory=set)
    took: int = 0


class _Job:
    """One ``execute_tasks`` call: its task queue, workers and fragments."""

    def __init__(self, golem: Golem, job_id: str, worker: Worker,
                 data: Iterable[Task[Any, Any]] | AsyncIterable[Task[Any, Any]], payload: VmPayload) -> None:
        self.golem, self.id, self.worker, self.payload = golem, job_id, worker, payload
        self.client = golem.client
        self.budget = golem.budget
        self._source: AsyncIterator[Task[Any, Any]] = _aiter(data)
        self._source_done = False
        self._sized = len(data) if isinstance(data, Sequence) else None
        self._retry: deque[Task[Any, Any]] = deque()
        self._pulling = asyncio.Lock()
        self._changed = asyncio.Event()
        self._outstanding = 0  # taken from the source and not yet ended for good
        self._done: asyncio.Queue[Task[Any, Any]] = asyncio.Queue()
        self.accepted = 0
        self.failed = 0
        self.workers = 1
        self.sampling = True
        self.stage_timeout = 1
        self.min_timeout = 1
        self.last_worker_error: BaseException | None = None
        self.fatal: BaseException | None = None

    def emit(self, event: events.Event) -> None:
        self.golem._emit(event)

    async def prepare(self, max_workers: int | None) -> None:
        """Before anything is paid: the bundle is on the relay, nodes serve ``vm``, the timeout fits."""
        try:
            await self.client.relay.get_bundle(self.payload.image_hash)
        except RelayError as exc:
            raise ValidationError(
                f"payload: the relay has no bundle {self.payload.image_hash} ({exc.detail if exc.detail else exc}): "
                "publish the image directory first with `gridtask bundle publish DIR`") from None
        network = await self.client.chain.network_params()
        self.sampling = network.validation_rate_bps > 0
        self.min_timeout = network.min_timeout
        self.stage_timeout = default_stage_timeout(network.validation_window, network.min_timeout)
        if self.golem.fragment_timeout is not None:
            self.stage_timeout = max(network.min_timeout, math.ceil(self.golem.fragment_timeout))
        serving = await self.client.serving([VM_MODEL])
        if not serving:
            log.warning("no node serves %s yet: fragments wait in the queue until one joins", VM_MODEL)
        # More fragments in flight than the nodes can hold would wait in the contract's queue past
        # their stage deadline and be aborted unrun (gridtask.sdk.dria.client.PER_NODE).
        self.workers = min(max_workers or DEFAULT_MAX_WORKERS, PER_NODE * max(1, serving))

    # ------------------------------------------------------------ the queue

    async def next_task(self, slot: _Slot) -> Task[Any, Any] | None:
        """A task for a worker: one given back first, then the next from the input; ``None``
        once every task has ended for good (it waits while others may still be given back)."""
        while True:
            self._changed.clear()
            if self.fatal is not None:
                return None
            if self._retry:
                return self._take(slot, self._retry.popleft())
            if not self._source_done:
                async with self._pulling:
                    task = None if self._source_done else await anext(self._source, None)
                if task is None:
                    self._source_done = True
                    self._wake()
                    continue
                if not isinstance(task, Task):
                    raise ValidationError(f"tasks: each must be a gridtask.sdk.golem.Task (got {type(task).__name__})")
                self._outstanding += 1
                return self._take(slot, task)
            if self._outstanding == 0:
                return None
            await self._changed.wait()

    def _take(self, slot: _Slot, task: Task[Any, Any]) -> Task[Any, Any]:
        task._start(self._ended)
        slot.held.add(task)
        slot.took += 1
        self.emit(events.TaskStarted(self.id, task=task))
        return task

    def _ended(self, task: Task[Any, Any], retry: bool) -> None:
        """``accept_result`` / ``reject_result`` of a task, or a worker that failed holding it."""
        self.emit(events.TaskFinished(self.id, task=task))
        if task.status == TaskStatus.ACCEPTED:
            self._outstanding -= 1
            self.accepted += 1
            self.emit(events.TaskAccepted(self.id, task=task, result=task.result))
            self._done.put_nowait(task)
        else:
            again = retry and task.tries < self.golem.max_task_tries
            self.emit(events.TaskRejected(self.id, task=task, reason=task.reason, retry=again))
            if again:
                task.status = TaskStatus.WAITING
                task._avoid = list(dict.fromkeys(task.nodes))  # "on a different node"
                self._retry.append(task)
            else:
                self._outstanding -= 1
                self.failed += 1
                if retry:  # it wanted another try and had none left
                    task.status = TaskStatus.FAILED
                    self.emit(events.TaskFailed(self.id, task=task,
                                                reason=f"{task.reason} (after {task.tries} tries)"))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()

    async def _tasks_for(self, slot: _Slot) -> AsyncGenerator[Task[Any, Any], None]:
        while (task := await self.next_task(slot)) is not None:
            yield task

    # ------------------------------------------------------------ running

    async def run(self, timeout: float | None) -> AsyncIterator[Task[Any, Any]]:
        self.emit(events.JobStarted(self.id, tasks=self._sized))
        slots = [asyncio.create_task(self._slot(_Slot(i))) for i in range(self.workers)]
        error: BaseException | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    getter = asyncio.ensure_future(self._done.get())
                    waiting = {getter, *[s for s in slots if not s.done()]}
                    if len(waiting) == 1:  # every worker has ended
                        getter.cancel()
                        break
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                    else:
                        yield getter.result()
                    if self.fatal is not None:
                        raise self.fatal
                while not self._done.empty():
                    yield self._done.get_nowait()
                if self.fatal is not None:
                    raise self.fatal
                if self._outstanding or not self._source_done:
                    raise GridtaskError(
                        f"job {self.id}: every worker ended with tasks left undone (last worker error: "
                        f"{self.last_worker_error!r}); a worker must take tasks until there are none")
        except TimeoutError:
            error = TaskTimeout(f"job {self.id}: not finished within {timeout} s "
                                f"({self.accepted} tasks accepted, {self.failed} failed)")
            raise error from None
        except BaseException as exc:
            error = exc
            raise
        finally:
            for s in slots:
                s.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            self.emit(events.JobFinished(self.id, accepted=self.accepted, failed=self.failed,
                                         spent=self.budget.spent, error=error))

    async def _slot(self, slot: _Slot) -> None:
        """One worker slot: runs the worker, and a new one if it ended while work remains."""
        while self.fatal is None:
            ctx = WorkContext(self.id, slot.index, self.emit)
            self.emit(events.WorkerStarted(self.id, worker=slot.index))
            took_before = slot.took
            error: BaseException | None = None
            try:
                await self._drive(slot, ctx, self.worker(ctx, self._tasks_for(slot)))
            except (BudgetExceeded, ValidationError) as exc:  # no other worker would do better: the job ends
                error = self.fatal = exc
            except Exception as exc:
                log.warning("job %s: worker %d failed: %s: %s", self.id, slot.index, type(exc).__name__, exc)
                error = exc
            self.emit(events.WorkerFinished(self.id, worker=slot.index, error=error))
            why = f"worker failed: {type(error).__name__}: {error}" if error else "the worker ended without a verdict"
            for task in list(slot.held):
                slot.held.discard(task)
                if task.status == TaskStatus.RUNNING:
                    task.reject_result(why, retry=True)
            if error is not None:
                self.last_worker_error = error
            if self.fatal is not None:
                self._wake()
                return
            if slot.took == took_before or (self._source_done and self._outstanding == 0):
                return  # it took nothing (it wants no more work, or fails before any), or there is none

    async def _drive(self, slot: _Slot, ctx: WorkContext, gen: AsyncGenerator[Script, Any]) -> None:
        """The work generator pattern: run each yielded script, send its results back (a
        failure is thrown in at the ``yield``)."""
        try:
            script = await anext(gen)
            while True:
                try:
                    results = await self._execute(slot, ctx, script)
                except (CommandExecutionError, FragmentFailed) as exc:
                    script = await gen.athrow(exc)
                    continue
                sent: asyncio.Future[list[events.CommandExecuted]] = asyncio.get_running_loop().create_future()
                sent.set_result(results)
                script = await gen.asend(sent)
        except StopAsyncIteration:
            return
        finally:
            await gen.aclose()

    async def _execute(self, slot: _Slot, ctx: WorkContext, script: Script) -> list[events.CommandExecuted]:
        """One yielded script: run as a fragment (kept off the nodes that the worker's tasks were
        rejected on), its results given to its commands."""
        commands = script.commands
        if not commands:
            return []
        timeout = self.stage_timeout
        if script.timeout is not None:
            timeout = max(self.min_timeout, math.ceil(script.timeout.total_seconds()))
        fragment = _Fragment(self, script, timeout, avoid=[n for t in slot.held for n in t._avoid])
        result = await fragment.run()
        ctx.provider_id = fragment.node
        for task in slot.held:
            task.nodes.append(fragment.node)
        executed: list[events.CommandExecuted] = []
        failure: CommandExecutionError | None = None
        for index, command in enumerate(commands):
            if index >= len(result.results):
                skipped = CommandExecutionError(repr(command), "not run: an earlier command failed")
                command._result.set_exception(skipped)
                command._result.exception()  # retrieved: nobody need await a command that never ran
                continue
            r = result.results[index]
            failed = result.failed_index == index
            message = result.failed_message if failed else "ok"
            event = events.CommandExecuted(self.id, script=script, command=command, success=not failed,
                                           message=message, stdout=r.stdout if r.op == "run" else None,
                                           stderr=r.stderr if r.op == "run" else None, exit_code=r.exit_code)
            if not failed:
                await command.after(r)
            command._result.set_result(event)
            self.emit(event)
            executed.append(event)
            if failed:
                failure = CommandExecutionError(repr(command), message, r.stderr or None)
        self.emit(events.ScriptFinished(self.id, script=script, task_id=fragment.task_id, node=fragment.node))
        if failure is not None:
            raise failure
        return executed


class _Fragment:
    """One script as gridtask tasks: a try per node until one delivers, at most ``max_fragment_tries``."""

    def __init__(self, job: _Job, script: Script, stage_timeout: int, *, avoid: Sequence[str] = ()) -> None:
        self.job, self.script, self.stage_timeout = job, script, stage_timeout
        payload = job.payload
        self.spec = ScriptSpec(image=payload.image_hash, commands=tuple(c.wire for c in script.commands),
                               timeout=_script_seconds(stage_timeout), memory_mib=payload.memory_mib,
                               disk_mib=payload.disk_mib)
        self.inputs = self.spec.to_inputs()
        check_script(self.inputs)  # the node's own rule, before anything is paid
        self.avoid = list(dict.fromkeys(avoid))  # nodes it failed on (or its task was rejected on): kept off
        self.errors: list[BaseException] = []
        self.node = ""
        self.task_id = ""

    async def run(self) -> ScriptResult:
        tries = self.job.golem.max_fragment_tries

        def more(exc: BaseException) -> bool:
            return len(self.errors) < tries and FRAGMENT_RETRY.retry_if(exc)

        try:
            return await dataclasses.replace(FRAGMENT_RETRY, retry_if=more).call(self._try)
        except (TaskFailed, RelayError, ChainError) as exc:
            raise FragmentFailed(
                f"script {self.script.id}: failed on {len(self.errors)} tries ({'; '.join(map(str, self.errors))})",
                self.errors) from exc

    async def _try(self) -> ScriptResult:
        job, fee, attempt = self.job, self.job.golem.fee, len(self.errors) + 1
        held = await job.budget.reserve(fee * (GROUP_SIZE if job.sampling else 1))
        try:
            handle = await job.client.submit(TaskType.SCRIPT, VM_MODEL, self.inputs, fee=fee,
                                             stage_timeout=self.stage_timeout, exclude=self.avoid[-EXCLUDE_MAX:])
        except ValidationError:  # refused before anything was paid
            job.budget.settle(held, 0)
            raise
        except BaseException:  # it may be on chain: count it as paid (the budget must never be passed)
            job.budget.settle(held, held)
            raise
        held = job.budget.shrink(held, fee * len(handle.members))
        self.task_id, self.node = handle.task_id, handle.node
        job.emit(events.FeeEscrowed(job.id, script=self.script, task_id=handle.task_id, amount=held))
        job.emit(events.ScriptSent(job.id, script=self.script, task_id=handle.task_id, node=handle.node,
                                   attempt=attempt))
        follow = STAGES * handle.stage_timeout + FOLLOW_MARGIN_S
        try:
            output = await job.client.result(handle, timeout=follow)
            result = ScriptResult.from_json(output)
        except BaseException as exc:
            self._failed(handle, held, exc)
            raise
        self.node = handle.node
        job.budget.settle(held, fee)
        job.emit(events.FeePaid(job.id, script=self.script, task_id=handle.task_id, node=handle.node, amount=fee))
        if held > fee:
            job.emit(events.FeeRefunded(job.id, script=self.script, task_id=handle.task_id, amount=held - fee))
        return result

    def _failed(self, handle: TaskHandle, held: int, exc: BaseException) -> None:
        """Settle a try that failed: refunded on chain unless the node may still be paid."""
        job = self.job
        # Refunded on chain: aborted, errored, outvoted, a disputed mismatch. Otherwise (the wait ran
        # out, the job was cancelled, a result that does not parse) the node may still be paid:
        # counted as spent, so that the budget holds whatever happens to it on chain.
        refunded = isinstance(exc, TaskFailed) and not isinstance(exc, TaskTimeout) and not (
            isinstance(exc, ResultMismatch) and not exc.disputed)
        job.budget.settle(held, 0 if refunded else held)
        if refunded:
            job.emit(events.FeeRefunded(job.id, script=self.script, task_id=handle.task_id, amount=held))
        node = handle.node
        if node and node not in self.avoid:
            self.avoid.append(node)
        self.errors.append(exc)
        retrying = isinstance(exc, Exception) and FRAGMENT_RETRY.retry_if(exc) and \
            len(self.errors) < job.golem.max_fragment_tries
        log.warning("job %s: script %d failed on node %s: %s: %s%s", job.id, self.script.id, node or "(none)",
                    type(exc).__name__, exc, "; trying another node" if retrying else "")
        job.emit(events.ScriptFailed(job.id, script=self.script, task_id=handle.task_id, node=node,
                                     reason=f"{type(exc).__name__}: {exc}", retrying=retrying))


def _script_seconds(stage_timeout: int) -> int:
    """The sandbox's time for the whole script: half the stage, so a script that runs too long
    is stopped (and reported as the task's error) well before its node must give up the task."""
    return max(1, stage_timeout // 2)


async def _aiter(data: Iterable[Task[Any, Any]] | AsyncIterable[Task[Any, Any]]) -> AsyncIterator[Task[Any, Any]]:
    if isinstance(data, AsyncIterable):
        async for task in data:
            yield task
    else:
        iterator: Iterator[Task[Any, Any]] = iter(data)
        for task in iterator:
            yield task


__all__ = ["DEFAULT_MAX_WORKERS", "FRAGMENT_RETRY", "FragmentFailed", "Golem"]

