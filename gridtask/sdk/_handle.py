"""A task as its creator holds it: ``TaskHandle`` (what ``Client.submit`` returns) and its
``Member`` records, one per task on chain (one, or three when validated by a group), and
``GroupResult``, how a validation group ended. Records only: ``TaskRun`` (``_task.py``)
decides what to do with them.

Two names for two things: a task's *key* (``TaskHandle.task_id``, 0x-hex) is its public
name on chain; its *task ID* (``TaskHandle.secret``) is the application's secret behind
the commitment, shared by the members of a validation group and shown to nobody until
the creator opens it to the contract.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gridtask.crypto import task_id_hash
from gridtask.exceptions import ResultMismatch, TaskTimeout
from gridtask.limits import DEFAULT_STAGE_TIMEOUT_S
from gridtask.types import GroupOutcome, TaskState, TaskType


@dataclass
class Member:
    """One task on chain: a lone task, or one of the three of a validation group."""

    key: bytes
    nonce: bytes
    params: bytes
    node: str = ""
    state: TaskState = TaskState.CREATED
    uploaded: bool = False
    checked: bool = False  # its delivered result was downloaded and checked against its score
    output: Any = None  # the checked result
    rejected: ResultMismatch | None = None  # its delivered result did not match its score
    steps: set[str] = field(default_factory=set)  # steps told to the hooks already
    #: The model its parameters name; "" for a member of an any-of task until its node is
    #: known (then the first of the task's models that node serves).
    model: str = ""
    #: A member added to an any-of task's group, created needing only the model the original runs.
    pinned: bool = False

    @property
    def task_id(self) -> str:
        return "0x" + self.key.hex()


@dataclass(frozen=True)
class GroupResult:
    """How a validation group ended (``TaskGroupValidated``): ``keys`` are its three tasks,
    the original first; ``agreeing[i]`` says whether ``keys[i]``'s score was in the majority;
    ``slashed`` maps each slashed node to the wei taken from its stake; ``sampled`` is
    whether the network sampled the original (then the agreeing nodes shared its fee and the
    two extra fees came back) or the creator asked for it (each agreeing node kept its fee)."""

    outcome: GroupOutcome
    keys: tuple[bytes, ...]
    agreeing: tuple[bool, ...]
    sampled: bool
    slashed: dict[str, int] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()

    @property
    def agreed(self) -> bool:
        return self.outcome == GroupOutcome.AGREED

    def describe(self) -> str:
        """One line for people: the outcome, how many agreed, who was slashed."""
        why = "sampled by the network" if self.sampled else "validation asked for"
        text = f"{self.outcome.name} ({sum(self.agreeing)} of {len(self.keys)} agree; {why})"
        for node, amount in self.slashed.items():
            text += f"; node {node} slashed {amount} wei"
        return text


@dataclass
class TaskHandle:
    """A task this client created: its members on chain (one, or three when validated by a
    group) and what only its creator knows. ``task_id`` is the original's key, its name on
    chain; ``secret`` is the task ID the members share; ``group`` is set once the group was
    validated; ``node`` is the node whose result ``result()`` returned (else the original's).
    ``any_model``: any one of ``models`` will do (the contract gives it to a node serving at
    least one); ``model_run`` says which ran."""

    members: list[Member]
    model: str
    fee: int
    task_type: TaskType = TaskType.ECHO
    secret: bytes = b""
    validate: str = "sampled"
    models: list[bytes] = field(default_factory=list)
    min_vram: int = 0
    gpu: bytes = bytes(32)
    size: int = 1
    stage_timeout: int = DEFAULT_STAGE_TIMEOUT_S
    serving: int = 0  # how many nodes serve every one of the task's models (at submission)
    exclude: list[str] = field(default_factory=list)  # nodes the caller asked to keep it off
    sampled: bool | None = None  # None until the contract was asked (after the start)
    group: GroupResult | None = None
    spares: list[Member] = field(default_factory=list)  # members replaced for sharing a node
    replacements: int = 0
    delivered_by: Member | None = None
    created_at: float = field(default_factory=time.monotonic)
    state: TaskState = TaskState.CREATED
    any_model: bool = False

    @property
    def original(self) -> Member:
        return self.members[0]

    @property
    def opening(self) -> bytes:
        """``keccak(task ID)``: what opens the members' commitments when validating them.
        The task ID itself, from which the result keys derive, is revealed only to dispute."""
        return task_id_hash(self.secret)

    @property
    def commitment(self) -> bytes:
        """The original's key on chain (the name predates the key; kept for callers)."""
        return self.original.key

    @property
    def task_id(self) -> str:
        return self.original.task_id

    @property
    def nonce(self) -> bytes:
        return self.original.nonce

    @property
    def params(self) -> bytes:
        return self.original.params

    @params.setter
    def params(self, value: bytes) -> None:
        self.original.params = value

    @property
    def node(self) -> str:
        return (self.delivered_by or self.original).node

    @property
    def model_run(self) -> str:
        """The model of the member whose result ``result()`` returned (else the original's);
        "" while an any-of task's node is not known."""
        return (self.delivered_by or self.original).model

    @property
    def is_group(self) -> bool:
        return len(self.members) > 1

    def member(self, key: bytes) -> Member | None:
        return next((m for m in [*self.members, *self.spares] if m.key == key), None)


StatusCallback = Callable[[TaskHandle, TaskState], None]


def timed_out(handle: TaskHandle) -> TaskTimeout:
    """The error of a wait for ``handle`` that ran out: what to do to get the fee back."""
    return TaskTimeout(
        f"task {handle.task_id} did not end in time (last state {handle.state.name}); once its "
        f"stage deadline passes, `gridtask task abort {handle.task_id}` refunds the fee",
        task_id=handle.task_id)

__all__ = ["GroupResult", "Member", "StatusCallback", "TaskHandle", "timed_out"]
