"""What an executor is, and how the node finds the one for a task.

An executor runs a task once the node holds its decrypted parameters. Its errors fall in
two kinds, because the node answers them differently on chain:

- ``InvalidTaskParameters``: the task's fault (a field of the wrong type, a model the
  node does not serve). The node reports it with ``reportTaskError(code)``; another node
  would refuse the same parameters the same way.
- anything else (``ExecutorFailure``, a crash, an unreachable backend): the node's own
  fault. The node aborts the task instead, and the fee goes back to its creator.

Executors do their heavy CPU work in a thread (``asyncio.to_thread``) so the node's event
loop keeps following the chain while a model runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from gridtask.exceptions import ValidationError
from gridtask.types import TaskErrorCode, TaskType


class InvalidTaskParameters(Exception):
    """The task's parameters cannot be run: the node reports ``code`` on chain as a task error."""

    def __init__(
        self, message: str, *, code: TaskErrorCode = TaskErrorCode.INVALID_PARAMETERS
    ) -> None:
        self.code = code
        super().__init__(message)


class ExecutorFailure(RuntimeError):
    """The node could not run a valid task (backend down, model files missing): abort it."""


@runtime_checkable
class Executor(Protocol):
    """Runs one task type for the models it lists."""

    task_type: TaskType
    models: list[str]

    async def run(self, model: str, inputs: dict) -> dict:
        """Run ``inputs`` on ``model`` and return a JSON-able result."""
        ...


class ExecutorSet:
    """The executors a node runs, keyed by (task type, model ID)."""

    def __init__(self, executors: Iterable[Executor] = ()) -> None:
        self._by_key: dict[tuple[TaskType, str], Executor] = {}
        self._all: list[Executor] = []  # also those serving no model yet (sources come later)
        for executor in executors:
            self.add(executor)

    def add(self, executor: Executor) -> None:
        for model in executor.models:
            key = (TaskType(executor.task_type), model)
            if key in self._by_key:
                raise ValueError(f"two executors serve {key[0].name} model {model!r}")
            self._by_key[key] = executor
        if executor not in self._all:
            self._all.append(executor)

    def refresh(self, executor: Executor) -> None:
        """Take on the models an executor of this set added while running (a node that starts
        serving a newly published source)."""
        for model in executor.models:
            self._by_key.setdefault((TaskType(executor.task_type), model), executor)

    def find(self, task_type: TaskType | int, model: str) -> Executor:
        """The executor for a task; a model nobody here serves is the task's fault."""
        try:
            return self._by_key[(TaskType(task_type), model)]
        except (KeyError, ValueError):
            raise InvalidTaskParameters(
                f"unknown model {model!r} for task type {task_type!r}",
                code=TaskErrorCode.UNKNOWN_MODEL,
            ) from None

    def executors(self) -> list[Executor]:
        """Each executor once."""
        return list(self._all)

    def all_models(self) -> list[str]:
        """Every model ID served, sorted and without repeats: what the node announces."""
        return sorted({model for _, model in self._by_key})

    def __len__(self) -> int:
        return len(self._by_key)


def check_model(executor: Executor, model: str) -> None:
    """Refuse a model the executor does not serve (the task asked for the wrong one)."""
    if model not in executor.models:
        raise InvalidTaskParameters(
            f"unknown model {model!r}; this executor serves {executor.models}",
            code=TaskErrorCode.UNKNOWN_MODEL,
        )


@contextlib.contextmanager
def task_fault() -> Iterator[None]:
    """Inputs that break a rule of ``gridtask.limits`` are the task's fault: a task error.

    The SDK refused the same inputs with the same message before paying; a node sees
    them only from a client that did not check.
    """
    try:
        yield
    except ValidationError as exc:
        raise InvalidTaskParameters(str(exc)) from None
