"""Types shared by every role: the task states and error codes that mirror the contract."""

from __future__ import annotations

from enum import IntEnum


class TaskState(IntEnum):
    """A task's state, exactly as ``TaskNetwork.vy`` numbers it."""

    NONE = 0
    QUEUED = 1
    STARTED = 2
    SCORE_READY = 3
    VALIDATED = 4
    SUCCESS = 5
    ABORTED = 6
    ERRORED = 7

    @property
    def is_final(self) -> bool:
        return self in (TaskState.SUCCESS, TaskState.ABORTED, TaskState.ERRORED)


class NodeStatus(IntEnum):
    """A node's status, exactly as ``TaskNetwork.vy`` numbers it."""

    NONE = 0
    IDLE = 1
    BUSY = 2
    PAUSED = 3


class TaskErrorCode(IntEnum):
    """Why a node refused a task's parameters (``reportTaskError``): the task's fault, not the node's."""

    PARAMETERS_HASH_MISMATCH = 1
    UNKNOWN_MODEL = 2
    INVALID_PARAMETERS = 3
    UNDECRYPTABLE = 4

    @property
    def explanation(self) -> str:
        """What the code means to the task's creator, and what to do (the documented message)."""
        return _ERROR_EXPLANATIONS[self]


_ERROR_EXPLANATIONS = {
    TaskErrorCode.PARAMETERS_HASH_MISMATCH: (
        "the parameters the node received do not match their hash on chain: they were altered "
        "on the way, or uploaded by another program holding your key"
    ),
    TaskErrorCode.UNKNOWN_MODEL: (
        "the selected node does not serve this model for this task type: check the model's "
        "task type (`gridtask run` for language models, `gridtask embed` for all-minilm-l6-v2)"
    ),
    TaskErrorCode.INVALID_PARAMETERS: (
        "the node refused the inputs: they break one of its limits (a prompt longer than the "
        "model's context, a max_tokens above the node's own limit) or a workflow step failed"
    ),
    TaskErrorCode.UNDECRYPTABLE: (
        "the node could not decrypt the parameters: they were not encrypted to its key "
        "(uploaded by another program, or corrupted)"
    ),
}


class TaskType(IntEnum):
    """What a task asks a node to do; one executor each."""

    ECHO = 0
    EMBED = 1
    LLM = 2
