"""Types shared by every role: the task states and error codes that mirror the contract."""

from __future__ import annotations

from enum import IntEnum


class TaskState(IntEnum):
    """A task's state, exactly as ``TaskNetwork.vy`` numbers it.

    CREATED: escrowed, waiting for ``startTask`` (a later block's hash picks its node).
    INVALIDATED: its result was shown wrong (a validation group outvoted it, or the creator
    won a dispute): the fee went back to the creator and the node was slashed."""

    NONE = 0
    CREATED = 1
    QUEUED = 2
    STARTED = 3
    SCORE_READY = 4
    VALIDATED = 5
    SUCCESS = 6
    ABORTED = 7
    ERRORED = 8
    INVALIDATED = 9

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATES


_FINAL_STATES = frozenset({TaskState.SUCCESS, TaskState.ABORTED, TaskState.ERRORED, TaskState.INVALIDATED})


class NodeStatus(IntEnum):
    """A node's status, exactly as ``TaskNetwork.vy`` numbers it.

    LEAVING: it quit; it takes no work, and its stake stays slashable until its release time."""

    NONE = 0
    IDLE = 1
    BUSY = 2
    PAUSED = 3
    LEAVING = 4


class GroupOutcome(IntEnum):
    """How ``validateTaskGroup`` ended (``TaskGroupValidated.outcome``)."""

    AGREED = 1
    """At least two scores agree: they are validated, a disagreeing member is slashed."""
    NO_MAJORITY = 2
    """Scores were in, but no two agree: every scored member aborted and refunded, nobody slashed."""
    TOO_FEW = 3
    """Fewer than two members scored: every scored member aborted and refunded, nobody slashed."""


class TaskErrorCode(IntEnum):
    """Why a node refused a task's parameters (``reportTaskError``): the task's fault, not the node's."""

    PARAMETERS_HASH_MISMATCH = 1
    UNKNOWN_MODEL = 2
    INVALID_PARAMETERS = 3
    UNDECRYPTABLE = 4
    UNSUPPORTED_OPERATOR = 5
    WORKFLOW_FAILED = 6
    SANDBOX_TIME = 7
    SANDBOX_MEMORY = 8
    SANDBOX_PROCESSES = 9
    SANDBOX_OUTPUT = 10
    SANDBOX_DISK = 11
    PAYLOAD_FAILED = 12
    UNKNOWN_FUNCTION = 13

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
    TaskErrorCode.UNSUPPORTED_OPERATOR: (
        "the workflow needs what the node does not offer (web search, sampling, built-in tools, "
        "HaveSimilar): nothing ran; use generation or function calling with custom tools"
    ),
    TaskErrorCode.WORKFLOW_FAILED: (
        "the workflow ran and failed: a step with no fallback failed (an answer that never matched "
        "its JSON schema, an empty required input) or it reached its max_steps or max_time; give "
        "the step a fallback, or raise the limit"
    ),
    TaskErrorCode.SANDBOX_TIME: (
        "the task's code ran past its time limit in the node's sandbox and was killed: "
        "give it a longer timeout, or less work per task"
    ),
    TaskErrorCode.SANDBOX_MEMORY: (
        "the task's code used more memory than the node's sandbox allows and was killed: "
        "lower its memory use, or ask for more (the payload's min_mem_gib)"
    ),
    TaskErrorCode.SANDBOX_PROCESSES: (
        "the task's code started more processes than the node's sandbox allows (a fork bomb?) "
        "and was killed"
    ),
    TaskErrorCode.SANDBOX_OUTPUT: (
        "the task's code wrote more output than the node's sandbox allows: write less, or "
        "split the work"
    ),
    TaskErrorCode.SANDBOX_DISK: (
        "the task's code filled its work directory past the node's sandbox disk limit: "
        "write less, or ask for more (the payload's min_storage_gib)"
    ),
    TaskErrorCode.PAYLOAD_FAILED: (
        "the task's code failed in the node's sandbox (it raised, or could not load): "
        "run it locally with the same input to see why"
    ),
    TaskErrorCode.UNKNOWN_FUNCTION: (
        "the source has no exposed function of that name, or the data does not fit the "
        "function's input model: check TaskInput.function_name and data"
    ),
}


class TaskType(IntEnum):
    """What a task asks a node to do; one executor each."""

    ECHO = 0
    EMBED = 1
    LLM = 2
    SOURCE = 3
    """Call a typed function of a published OpenGPU-style source (``gridtask.sdk.opengpu``)."""
    SCRIPT = 4
    """Run a Golem-style script of commands over a content-addressed bundle (``gridtask.sdk.golem``)."""
