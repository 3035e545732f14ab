"""Why a workflow did not run, in three kinds the node reports with three task-error codes.

- ``WorkflowError``: the workflow is malformed (a field of the wrong type, an edge to a task
  that does not exist, a placeholder no input fills). The SDK refuses it before paying and a
  node reports it as ``INVALID_PARAMETERS``; the message names the task or step and the field.
- ``UnsupportedOperator``: well formed, but it needs something this node does not offer
  (web search without a search backend). Found before any model runs.
- ``WorkflowFailed``: it ran and a step failed with no fallback (an answer that never
  matched its JSON schema, a required input that was empty), or it hit one of its limits.

All three are the task's fault (another honest node would end the same way): the node
reports a task error and the fee goes back to the task's creator.
"""

from __future__ import annotations


class WorkflowError(ValueError):
    """A malformed workflow. ``task`` (a task ID or ``step N``) and ``field`` say where."""

    def __init__(self, message: str, *, task: str | None = None, field: str | None = None) -> None:
        self.task = task
        self.field = field
        where = ": ".join(part for part in (task, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class UnsupportedOperator(WorkflowError):
    """The workflow needs an operator, tool or expression this node does not offer."""


class WorkflowFailed(WorkflowError):
    """A run that failed: a step with no fallback failed, or a limit was reached."""


class SchemaViolation(WorkflowFailed):
    """A step's answer did not match its JSON schema after every allowed attempt."""


class LimitExceeded(WorkflowFailed):
    """The workflow ran past its ``max_steps`` or ``max_time``."""
