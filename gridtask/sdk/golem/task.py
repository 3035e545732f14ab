"""One unit of work the job must get done (yapapi's ``Task``): its data, and how it ended."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

from gridtask.exceptions import GridtaskError

D = TypeVar("D")
R = TypeVar("R")


class TaskStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"
    """Rejected, or its worker failed, more times than the job allows: not retried again."""


class Task(Generic[D, R]):
    """``Task(data)``: the worker reads ``task.data``, runs scripts for it, then calls
    ``accept_result(result)`` or ``reject_result(reason, retry=...)``."""

    _ids: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(self, data: D) -> None:
        self.id = str(next(Task._ids))
        self._data = data
        self._result: R | None = None
        self.status = TaskStatus.WAITING
        self.tries = 0
        """How many times a worker took it."""
        self.reason: str | None = None
        """Why it was last rejected or failed."""
        self.nodes: list[str] = []
        """The nodes its fragments ran on, oldest first."""
        self._avoid: list[str] = []  # nodes it was rejected on: its next try's fragments go elsewhere
        self._started: float | None = None
        self._finished: float | None = None
        self._on_end: Callable[[Task[D, R], bool], None] | None = None

    def __repr__(self) -> str:
        return f"Task(id={self.id}, data={self._data!r:.60}, status={self.status.value})"

    @property
    def data(self) -> D:
        return self._data

    @property
    def result(self) -> R | None:
        return self._result

    @property
    def running_time(self) -> float | None:
        """Seconds from the worker taking it to its end (or until now)."""
        if self._started is None:
            return None
        return (self._finished or time.monotonic()) - self._started

    def accept_result(self, result: R | None = None) -> None:
        """The task is done, with ``result`` (what ``execute_tasks`` hands back)."""
        self._check_running("accept_result")
        self._result = result
        self.status = TaskStatus.ACCEPTED
        self._end(retry=False)

    def reject_result(self, reason: str | None = None, retry: bool = False) -> None:
        """The result is not good: ``retry=True`` runs the task again (on another node), up to
        the job's ``max_task_tries``; otherwise it ends rejected."""
        self._check_running("reject_result")
        self.reason = reason
        self.status = TaskStatus.REJECTED
        self._end(retry=retry)

    def _check_running(self, what: str) -> None:
        if self.status != TaskStatus.RUNNING:
            raise GridtaskError(f"task {self.id}: {what} on a task that is {self.status.value}, not running "
                                "(a task is accepted or rejected once, by the worker that took it)")

    def _start(self, on_end: Callable[[Task[Any, Any], bool], None]) -> None:
        self.status = TaskStatus.RUNNING
        self.tries += 1
        self._on_end = on_end
        self._started, self._finished = time.monotonic(), None

    def _end(self, *, retry: bool) -> None:
        self._finished = time.monotonic()
        if self._on_end is not None:
            self._on_end(self, retry)
