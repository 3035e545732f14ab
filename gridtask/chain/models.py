"""Plain records of what the contract stores, as the Python side reads them."""

from __future__ import annotations

from dataclasses import dataclass, field

from gridtask.exceptions import ConfigError
from gridtask.scoring import SIMILARITY_BITS
from gridtask.types import NodeStatus, TaskState, TaskType

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ETHER = 10**18
GWEI = 10**9
DAY_S = 24 * 3600
MAX_SIMILARITY_TYPES = 16
"""The contract's similarity table holds at most this many task types (``DynArray[uint256, 16]``)."""


def default_similarity_bits() -> tuple[int, ...]:
    """Per task type (indexed by ``TaskType``), the Hamming distance under which two similarity
    scores agree: the scoring module's measured table (0 = exact comparison)."""
    return tuple(SIMILARITY_BITS.get(t, 0) for t in TaskType)


@dataclass(frozen=True)
class NetworkParams:
    """The contract's deploy-time settings, each readable on chain (``ChainClient.network_params``).

    Their bounds are the constructor's (e.g. ``max_timeout`` at most 2**32 - 1 s,
    ``unstake_delay`` at least ``challenge_window``); ``deploy`` reports a refusal with its
    reason. The field names are the constructor's argument names (without the ``_``)."""

    min_stake: int = ETHER
    stake_cap_multiple: int = 10
    min_timeout: int = 5
    max_timeout: int = DAY_S
    validation_rate_bps: int = 1000
    """How many tasks in 10,000 are sampled for validation by a group of three."""
    validation_window: int = 600
    """Seconds a creator has to validate a scored task before its node may claim the fee."""
    challenge_window: int = 3600
    """Seconds after delivery during which the creator may dispute the result."""
    unstake_delay: int = 7 * DAY_S
    """Seconds a node that quit stays slashable before its stake is released."""
    slash_bps: int = 5000
    """Share of its stake (in 10,000ths) a node outvoted or caught by a dispute loses."""
    min_fee_per_unit: int = GWEI
    """The least fee per unit of ``task_size`` a task may pay (wei)."""
    similarity_bits: tuple[int, ...] = field(default_factory=default_similarity_bits)
    """By task type: the largest Hamming distance between the high 128 bits of two scores of a
    similarity type (EMBED) that still agree (0: the high halves must be equal). Exact types
    compare the whole score whatever their entry says."""

    def __post_init__(self) -> None:
        if len(self.similarity_bits) > MAX_SIMILARITY_TYPES:  # the constructor would revert without a reason
            raise ConfigError(f"similarity_bits: at most {MAX_SIMILARITY_TYPES} task types "
                              f"(got {len(self.similarity_bits)})")

    def similarity_bits_for(self, task_type: int) -> int:
        """The agreement threshold of ``task_type`` (0, exact, for a type beyond the table)."""
        return self.similarity_bits[task_type] if 0 <= task_type < len(self.similarity_bits) else 0


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
class TaskDetails:
    """What ``getTask`` leaves out of a task (``TaskNetwork.getTaskInfo``)."""

    task_type: int
    task_size: int
    created_block: int
    """The block it was created in while it waits for ``startTask`` (0 once started): it must
    start within 256 blocks of it, since selection reads that block's hash."""
    grouped: bool
    """It was a member of a validated group of three."""


@dataclass(frozen=True)
class NodeInfo:
    """One node as ``TaskNetwork.getNode`` returns it (and, for a LEAVING node, ``release_at``)."""

    address: str
    status: NodeStatus
    stake: int
    gpu: str
    vram: int
    public_key: bytes
    version: int
    release_at: int = 0
    """When a LEAVING node's stake is released (unix seconds; 0 for any other node)."""
