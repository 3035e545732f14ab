"""``Dria``: Dria's client on top of gridtask's core ``Client``.

    dria = Dria()                       # the config file the devnet wrote, or GRIDTASK_*
    results = await dria.execute(Task(workflow=..., models=[Model.TINY_LLM]), timeout=45)

The core client does not know this module: ``Dria`` only calls its public methods
(``submit``, ``result``) and the one "how many nodes serve these models" look-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from gridtask.chain.models import ZERO_ADDRESS
from gridtask.exceptions import ConfigError, TaskTimeout, ValidationError
from gridtask.limits import check_positive, check_validate_mode
from gridtask.sdk._checks import MAX_TASK_MODELS
from gridtask.sdk._client import Client, ClientState
from gridtask.sdk._handle import TaskHandle
from gridtask.sdk.dria.models import Task, TaskResult
from gridtask.types import TaskType

log = logging.getLogger("gridtask.sdk.dria")

DEFAULT_BATCH_SIZE = 16
"""Most tasks in flight at once per model: each one is followed on its own, so a slow task
holds only its own slot, never a batch."""
PER_NODE = 2
"""Tasks in flight per node serving the model: one running and one queued behind it. More
would wait in the contract's queue past their stage deadline and be aborted unrun."""


@dataclass(frozen=True)
class TaskFailure:
    """A task of a list that produced no result: ``error`` says why (``TaskTimeout`` when
    ``execute``'s timeout came first, and then ``task_id`` is its key on chain if it was
    created, to follow or abort it later)."""

    index: int
    task: Task
    task_id: str | None
    error: BaseException
    node: str = ""
    """The node that had the task, if one took it (a retry may keep it off: ``exclude``)."""

    @property
    def finished(self) -> bool:
        return not isinstance(self.error, TaskTimeout)


class ExecuteResults(list[TaskResult]):
    """The results of ``execute``, in the order of the tasks that finished; ``failures``
    names every task that did not (by its index in the list given to ``execute``)."""

    def __init__(self, results: Sequence[TaskResult] = (), failures: Sequence[TaskFailure] = ()) -> None:
        super().__init__(results)
        self.failures = list(failures)

    @property
    def unfinished(self) -> list[TaskFailure]:
        """Tasks still running when the timeout came."""
        return [f for f in self.failures if not f.finished]


async def served_counts(client: Client, models: Sequence[str]) -> dict[str, int]:
    """How many registered nodes serve each model (the core's one look-up, ``Client.serving``)."""
    await client.open()
    return {m: await client.serving([m]) for m in models}


def on_chain(alternatives: Sequence[str], counts: dict[str, int]) -> tuple[str, ...]:
    """The alternatives a task lists on chain, in the order given: all of them, or, when there
    are more than a task takes (``MAX_TASK_MODELS``, a group such as ``Model.SMALL``), the
    first ones some node serves now, then the first others (a node that joins may serve them)."""
    if len(alternatives) <= MAX_TASK_MODELS:
        return tuple(alternatives)
    ranked = sorted(alternatives, key=lambda m: (not counts.get(m), alternatives.index(m)))
    kept = set(ranked[:MAX_TASK_MODELS])
    return tuple(m for m in alternatives if m in kept)


class Dria:
    """Dria's ``Dria`` client on gridtask: ``await dria.execute(task | [tasks], timeout=...)``.

    ``rpc_token``: the application's private key (0x-hex), the one credential that lets it
    pay for tasks; ``None`` (or empty) takes the key from the config file or
    ``GRIDTASK_PRIVATE_KEY``. ``client``: a core ``Client`` to use instead (its owner
    opens and closes it). Other keyword arguments go to ``Client``.

    A task's models are alternatives: a task listing several (or a group such as
    ``Model.SMALL``) goes on chain as ONE any-of task (``Client.submit(any_model=True)``): the
    contract gives it to an idle node serving at least one of them, which runs the first
    listed that it serves; ``TaskResult.model`` says which ran. A task takes at most
    ``MAX_TASK_MODELS`` on chain: of a longer list, the first that nodes serve (``on_chain``).
    """

    def __init__(self, rpc_token: str | None = None, api_mode: bool = False, log_level: int | str | None = None,
                 *, client: Client | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 **client_options: Any) -> None:
        # Dria's ``log_level`` sets its package logger's level; here, gridtask's (when given). ``api_mode``
        # (Dria: keep its background poller running between calls) has nothing to change:
        # the core client follows its tasks through one subscription, open while it is.
        if not isinstance(api_mode, bool):
            raise ValidationError(f"api_mode: must be True or False (got {api_mode!r})")
        try:
            if log_level is not None:
                logging.getLogger("gridtask").setLevel(log_level)
        except (TypeError, ValueError):
            raise ValidationError(f"log_level: a logging level such as logging.INFO or 'INFO' "
                                  f"(got {log_level!r})") from None
        self.api_mode = api_mode
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValidationError(f"batch_size: must be a positive integer (got {batch_size!r})")
        if client is not None and (rpc_token or client_options):
            raise ValidationError("Dria: give either a client or the options to make one, not both")
        if rpc_token:
            client_options["private_key"] = rpc_token
        self._options = client_options
        # Made now so that a bad config fails here, not at the first task.
        try:
            self._client = client if client is not None else Client(**client_options)
        except ConfigError as exc:
            if not rpc_token:
                raise
            raise ConfigError(f"rpc_token: gridtask takes the paying account's private key here "
                              f"(0x + 64 hex digits), not a Dria RPC token ({exc})") from None
        self._owned = client is None
        self._depth = 0  # nested ``async with dria`` blocks: the outermost one closes
        self._slots: dict[tuple[str, ...], asyncio.Semaphore] = {}  # per list of models, for the open session
        self.batch_size = batch_size

    @property
    def client(self) -> Client:
        """The core client underneath."""
        return self._client

    async def __aenter__(self) -> Dria:
        """Keep the client open for the block (``execute`` otherwise opens it per call)."""
        if self._owned and self._client.state == ClientState.CLOSED:
            self._client = Client(**self._options)
        await self._client.open()
        self._depth += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._owned and not self._depth:
            self._slots.clear()
            await self._client.aclose()

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Client]:
        """The open client: ours, opened for this call and closed after it unless an
        ``async with dria`` block holds it open (so each ``asyncio.run`` may call
        ``execute``); or the caller's, left as it is."""
        if not self._owned or self._client.state == ClientState.OPENED:
            yield self._client
            return
        if self._client.state == ClientState.CLOSED:
            self._client = Client(**self._options)
        try:
            async with self._client as client:
                yield client
        finally:
            self._slots.clear()  # semaphores belong to this event loop

    async def execute(self, task: Task | Sequence[Task], timeout: float = 300, *,
                      validate: str = "sampled", exclude: Sequence[str] = ()) -> ExecuteResults:
        """Run a task, or a list of tasks concurrently, and return their results.

        A list runs each task on its own (a slow one holds only its own slot), at most
        ``PER_NODE`` per node serving one of its models and ``batch_size`` per list of models
        at a time. At
        ``timeout`` seconds it returns what finished; ``results.failures`` names every task
        that did not, with its error (``TaskTimeout`` for one still running, with its key on
        chain). A single ``Task`` (not in a list) raises its error instead. ``validate`` and
        ``exclude`` (nodes that must not run these tasks): as ``Client.submit`` (``"always"``
        only for tasks of one model).
        """
        check_positive("timeout", timeout, "seconds")
        validate = check_validate_mode(validate)
        single = isinstance(task, Task)
        tasks: list[Task] = [task] if isinstance(task, Task) else list(task) if isinstance(task, Sequence) else []
        if not tasks or not all(isinstance(t, Task) for t in tasks):
            raise ValidationError("execute takes a Task or a non-empty list of Task objects")
        alternatives = [t.model_names for t in tasks]  # checks every name before anything is paid
        if validate == "always" and any(len(names) > 1 for names in alternatives):
            raise ValidationError("validate='always' runs each task as a group of three from the start, on one "
                                  "model: give each task one model, or validate='sampled' (a sampled task's group "
                                  "runs the model its first node ran)")
        deadline = time.monotonic() + timeout
        async with self._session() as client:
            counts = await served_counts(client, sorted({m for names in alternatives for m in names}))
            listed = [on_chain(names, counts) for names in alternatives]
            serving = {names: await client.serving(list(names), any_model=True) for names in set(listed)}
            handles: dict[int, TaskHandle] = {}

            async def one(index: int) -> TaskResult:
                names = listed[index]
                async with self._model_slots(names, serving[names]):
                    return await self._run(client, tasks[index], names, deadline, validate, exclude,
                                           lambda handle: handles.__setitem__(index, handle))

            runs = [asyncio.create_task(one(i)) for i in range(len(tasks))]
            try:
                done, _ = await asyncio.wait(runs, timeout=max(0.0, deadline - time.monotonic()))
            finally:  # at the timeout, or when the caller is cancelled (Ctrl-C): stop following the rest
                for run in runs:
                    run.cancel()
                await asyncio.gather(*runs, return_exceptions=True)
        results: list[TaskResult] = []
        failures: list[TaskFailure] = []
        for index, run in enumerate(runs):
            handle = handles.get(index)
            error = run.exception() if run in done else TaskTimeout(
                f"task {index} did not finish within {timeout} s"
                + (f" (task {handle.task_id} is still on chain: follow it, or abort it once its stage "
                   "deadline passed, to get its fee back)" if handle else " (it was never created)"))
            if error is None:
                results.append(run.result())
            else:
                failures.append(TaskFailure(index, tasks[index], handle.task_id if handle else None, error,
                                            _node_of(handle)))
        if single and failures:
            raise failures[0].error
        for failure in failures:
            log.warning("task %d (%s) produced no result: %s", failure.index, failure.task_id or "not created",
                        failure.error)
        return ExecuteResults(results, failures)

    def _model_slots(self, models: tuple[str, ...], serving: int) -> asyncio.Semaphore:
        """Slots for tasks on ``models``: ``PER_NODE`` per node serving one of them, at most
        ``batch_size``, shared by every ``execute`` of this session (a dataset's rows)."""
        slots = self._slots.get(models)
        if slots is None:
            slots = self._slots[models] = asyncio.Semaphore(max(1, min(self.batch_size, PER_NODE * serving)))
        return slots

    @staticmethod
    async def _run(client: Client, task: Task, models: tuple[str, ...], deadline: float, validate: str,
                   exclude: Sequence[str], created: Any) -> TaskResult:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TaskTimeout("the timeout passed before this task could start")
        handle: TaskHandle = await client.submit(TaskType.LLM, list(models), {"workflow": task.workflow},
                                                 validate=validate, exclude=exclude, any_model=True)
        task.id = handle.task_id
        created(handle)
        output = await client.result(handle, timeout=max(deadline - time.monotonic(), 0.001))
        if isinstance(output, dict):
            text, memory = output.get("text", output), output.get("memory") or {}
        else:
            text, memory = output, {}
        return TaskResult(
            id=handle.task_id, task_input=task.workflow, step_name=task.step_name, result=text,
            model=handle.model_run, node=handle.node, fee=handle.fee, memory=memory,
            group=handle.group.describe() if handle.group else "",
        )


def _node_of(handle: TaskHandle | None) -> str:
    """The node a task was started on, if it was ("" while it waited in the queue)."""
    node = handle.node if handle else ""
    return "" if node in ("", ZERO_ADDRESS) else node


__all__ = ["DEFAULT_BATCH_SIZE", "Dria", "ExecuteResults", "TaskFailure", "on_chain", "served_counts"]
