"""The application's SDK: ``Client`` (async), ``SyncClient``, and the styles users know.

    from gridtask.sdk import Client, Model, Simple, Task
"""

from gridtask.sdk._client import (
    Client,
    ClientState,
    GroupResult,
    Member,
    NoNodeWarning,
    StageTimeoutWarning,
    TaskHandle,
    parse_task_id,
)
from gridtask.sdk._hooks import STEP_NAMES, TaskStep
from gridtask.sdk._dria import Model, Simple, Task, TaskResult
from gridtask.sdk._sync import SyncClient
from gridtask.types import GroupOutcome, TaskState, TaskType

__all__ = [
    "Client",
    "ClientState",
    "GroupOutcome",
    "GroupResult",
    "Member",
    "Model",
    "NoNodeWarning",
    "STEP_NAMES",
    "Simple",
    "StageTimeoutWarning",
    "SyncClient",
    "Task",
    "TaskHandle",
    "TaskResult",
    "TaskState",
    "TaskStep",
    "TaskType",
    "parse_task_id",
]
