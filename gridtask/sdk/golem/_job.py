"""One ``execute_tasks`` call: its task queue, its worker slots and the work generator pattern.

A slot runs the user's worker (an async generator) over a ``WorkContext`` and a stream of
tasks; each script the worker yields runs as a ``Fragment`` and its results are sent back at
the ``yield`` (a failure is thrown in there). A task a worker rejects with ``retry=True``, or
holds when it fails, goes back to the queue for any slot (and its next fragments avoid the
nodes it was rejected on), up to ``max_task_tries``; a slot whose worker ended while work
remains starts it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from gridtask.exceptions import GridtaskError, RelayError, TaskTimeout, ValidationError
from gridtask.limits import VM_MODEL, default_stage_timeout
from gridtask.sdk.dria.client import PER_NODE
from gridtask.sdk.golem import events
from gridtask.sdk.golem._fragment import Fragment, FragmentFailed
from gridtask.sdk.golem.budget import BudgetExceeded
from gridtask.sdk.golem.ctx import WorkContext
from gridtask.sdk.golem.script import CommandExecutionError, Script
from gridtask.sdk.golem.task import Task, TaskStatus
from gridtask.sdk.golem.vm import VmPayload

if TYPE_CHECKING:
    from gridtask.sdk.golem.golem import Golem, Worker

log = logging.getLogger("gridtask.sdk.golem")

DEFAULT_MAX_WORKERS = 10


@dataclasses.dataclass
class _Slot:
    """One worker: the tasks it holds (taken and not yet accepted or rejected)."""

    index: int
    held: set[Task[Any, Any]] = dataclasses.field(default_factory=set)
    took: int = 0


class Job:
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
        fragment = Fragment(self, script, timeout, avoid=[n for t in slot.held for n in t._avoid])
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




async def _aiter(data: Iterable[Task[Any, Any]] | AsyncIterable[Task[Any, Any]]) -> AsyncIterator[Task[Any, Any]]:
    if isinstance(data, AsyncIterable):
        async for task in data:
            yield task
    else:
        iterator: Iterator[Task[Any, Any]] = iter(data)
        for task in iterator:
            yield task
