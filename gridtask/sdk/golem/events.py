"""What a Golem job tells a program as it runs (yapapi's event names where they mean the same).

``Golem(event_consumer=fn)`` calls ``fn(event)`` for each, in order, from the job's event
loop; ``golem.add_event_consumer(fn, ["TaskAccepted"])`` narrows one consumer to some
classes. A fragment is one script run as one gridtask task; its money moves as
``FeeEscrowed`` (the fee locked on chain), then ``FeePaid`` (the node was paid) or
``FeeRefunded`` (it came back: aborted, errored, outvoted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gridtask.sdk.golem.script import Command, Script
    from gridtask.sdk.golem.task import Task


@dataclass(frozen=True)
class Event:
    """Every event: ``job_id`` names the ``execute_tasks`` call it belongs to."""

    job_id: str


@dataclass(frozen=True, kw_only=True)
class JobStarted(Event):
    tasks: int | None = None  # how many, when the input was a sized collection


@dataclass(frozen=True, kw_only=True)
class JobFinished(Event):
    accepted: int = 0
    failed: int = 0
    spent: int = 0  # wei paid to nodes
    error: BaseException | None = None


@dataclass(frozen=True, kw_only=True)
class WorkerStarted(Event):
    worker: int = 0


@dataclass(frozen=True, kw_only=True)
class WorkerFinished(Event):
    worker: int = 0
    error: BaseException | None = None


@dataclass(frozen=True, kw_only=True)
class TaskEvent(Event):
    task: Task[Any, Any]


@dataclass(frozen=True, kw_only=True)
class TaskStarted(TaskEvent):
    """A worker took the task."""


@dataclass(frozen=True, kw_only=True)
class TaskFinished(TaskEvent):
    """The worker moved past the task (accepted, rejected, or given back)."""


@dataclass(frozen=True, kw_only=True)
class TaskAccepted(TaskEvent):
    result: Any = None


@dataclass(frozen=True, kw_only=True)
class TaskRejected(TaskEvent):
    reason: str | None = None
    retry: bool = False


@dataclass(frozen=True, kw_only=True)
class TaskFailed(TaskEvent):
    """The task ran out of tries: it will not be retried again."""

    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ScriptEvent(Event):
    script: Script


@dataclass(frozen=True, kw_only=True)
class _ScriptTry(ScriptEvent):
    """About one try of the script: its gridtask task (``task_id`` on chain) and the node it ran on."""

    task_id: str = ""
    node: str = ""


@dataclass(frozen=True, kw_only=True)
class ScriptSent(_ScriptTry):
    """The script became a gridtask task (``task_id`` on chain) and ``node`` was selected for it."""

    attempt: int = 1


@dataclass(frozen=True, kw_only=True)
class ScriptFinished(_ScriptTry):
    pass


@dataclass(frozen=True, kw_only=True)
class ScriptFailed(_ScriptTry):
    """One try of the script failed on ``node`` (``retrying``: it goes to another node next)."""

    reason: str = ""
    retrying: bool = False


@dataclass(frozen=True, kw_only=True)
class CommandEvent(ScriptEvent):
    command: Command


@dataclass(frozen=True, kw_only=True)
class CommandExecuted(CommandEvent):
    """One command's outcome (yapapi's fields): ``success``, ``message``, ``stdout``, ``stderr``."""

    success: bool = True
    message: str = ""
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True, kw_only=True)
class FeeEscrowed(_ScriptTry):
    amount: int = 0


@dataclass(frozen=True, kw_only=True)
class FeePaid(_ScriptTry):
    """The node was paid for the fragment (Golem's accepted invoice)."""

    amount: int = 0


@dataclass(frozen=True, kw_only=True)
class FeeRefunded(_ScriptTry):
    amount: int = 0


__all__ = [
    "CommandEvent", "CommandExecuted", "Event", "FeeEscrowed", "FeePaid", "FeeRefunded", "JobFinished",
    "JobStarted", "ScriptEvent", "ScriptFailed", "ScriptFinished", "ScriptSent", "TaskAccepted", "TaskEvent",
    "TaskFailed", "TaskFinished", "TaskRejected", "TaskStarted", "WorkerFinished", "WorkerStarted",
]
