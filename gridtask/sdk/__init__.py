"""The application's SDK: ``Client`` (async), ``SyncClient``, and the styles users know.

    from gridtask.sdk import Client, Model, Simple, Task

Dria's whole API (``Dria``, singletons, ``DatasetGenerator``) is ``gridtask.sdk.dria``, a
layer over ``Client``; ``Model``, ``Simple``, ``Task`` and ``TaskResult`` are re-exported here.
"""

from gridtask.sdk._checks import NoNodeWarning, StageTimeoutWarning, parse_task_id
from gridtask.sdk._client import Client, ClientState
from gridtask.sdk._handle import GroupResult, Member, TaskHandle
from gridtask.sdk._hooks import STEP_NAMES, TaskStep
from gridtask.sdk._sync import SyncClient
from gridtask.sdk.dria.factory import Simple
from gridtask.sdk.dria.models import Model, Task, TaskResult
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
