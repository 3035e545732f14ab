"""Plain records of what the contract stores, as the Python side reads them."""

from __future__ import annotations

from dataclasses import dataclass

from gridtask.types import NodeStatus, TaskState

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


def same_address(a: object, b: object) -> bool:
    """Addresses compare case-insensitively (checksum case is presentation only)."""
    return isinstance(a, str) and isinstance(b, str) and a.lower() == b.lower()


@dataclass(frozen=True)
class TaskInfo:
    """One task as ``TaskNetwork.getTask`` returns it (requirements live in ``TaskCreated``)."""

    commitment: bytes
    creator: str
    node: str
    fee: int
    state: TaskState
    deadline: int
    timeout: int
    score: bytes
    result_hash: bytes

    @property
    def has_node(self) -> bool:
        return self.node != ZERO_ADDRESS


@dataclass(frozen=True)
class NodeInfo:
    """One node as ``TaskNetwork.getNode`` returns it."""

    address: str
    status: NodeStatus
    stake: int
    gpu: str
    vram: int
    public_key: bytes
    version: int
