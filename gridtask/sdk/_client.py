"""The application's side of a task's life, in full (docs/design.md, "A task's life", steps 1-3 and 6-8).

``Client.submit`` creates the task on chain and, in a later block, starts it (the later
block's hash picks its node, so nobody can grind the choice); it then asks the contract
whether the task was sampled for validation, and if so (or when the caller asked for
``validate="always"``) makes it a group of three: two more tasks with the same task ID
and fresh nonces, on nodes that ran none of the other members. ``Client.result`` follows
every member: on ``TaskStarted`` it encrypts the parameters to the member's node and
uploads them; once scored, a lone task is validated by itself and a group together
(``validateTaskGroup``); on ``TaskSuccess`` it downloads, decrypts and checks the result
against the score, and proves a mismatch on chain (``disputeResult``).

One ``Client`` follows all its tasks through one event subscription, filtered on chain to
the events whose creator is its account, and acts on what they say (``TaskRecords``): its
own transactions are confirmed by their events (no receipt polls), a task's sample is drawn
from its ``TaskCreated`` log's block hash, node keys and "is this model served" come from
the nodes' logs (``NodeRegistry``). It reads a task's state from the chain only for a gap
(a stage deadline passed with no news, a reorg, an event out of order), every doubtful
member in one batch, so a missed event or a chain away for a while delays a task, never
loses it. A task's next step is decided by ``TaskRun`` (``_task.py``); hooks
(``event_hooks={"step": [...]}``) see every step.

Two names for two things: a task's *key* (``TaskHandle.task_id``, 0x-hex) is its public
name on chain; its *task ID* (``TaskHandle.secret``) is the application's secret behind
the commitment, shared by the members of a validation group and shown to nobody until
the creator opens it to the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from gridtask.chain.client import MAX_DISPUTE_CIPHERTEXT, ChainClient, ChainEvent, to_bytes32
from gridtask.chain.events import EventFollower, address_topic
from gridtask.chain.models import NetworkParams, TaskInfo
from gridtask.config import NetworkConfig, load_config, secret_value
from gridtask.crypto import (
    decrypt_result,
    params_hash,
    result_key,
    sampled,
    seal,
    task_commitment,
    task_id_hash,
    task_key,
)
from gridtask.exceptions import (
    ChainError,
    ConfigError,
    CryptoError,
    GridtaskError,
    RelayError,
    ResultMismatch,
    TaskTimeout,
    TransactionReverted,
    ValidationError,
)
from gridtask.keys import Identity
from gridtask.limits import (
    DEFAULT_STAGE_TIMEOUT_S,
    check_fee,
    check_model_type,
    check_params_size,
    check_positive,
    check_task,
    check_validate_mode,
    default_stage_timeout,
    stage_timeout_fits,
)
from gridtask.params import TaskParams
from gridtask.relay.client import RelayClient
from gridtask.retry import CHAIN_UNREACHABLE, NOT_READY
from gridtask.scoring import result_matches_score, score, scores_agree
from gridtask.sdk._hooks import Hooks, StepHook
from gridtask.sdk._records import TaskRecords
from gridtask.sdk._registry import NodeRegistry
from gridtask.sdk._task import TaskRun
from gridtask.types import GroupOutcome, TaskState, TaskType

log = logging.getLogger("gridtask.sdk")

DEFAULT_FEE = 10**15  # 0.001 ether
WAKE_CHECK_S = 1.0
GROUP_SIZE = 3
EXCLUDE_MAX = 2  # the contract's DynArray[address, 2]
#: With push notifications the client's poll is only a safety net (a dropped socket); a missed
#: event also shows as a stage deadline passing with no news, which reads the chain.
SAFETY_POLL_S = 5.0
#: The events of this account's tasks: topic 2 is the creator for these, topic 3 for the others.
CREATOR_SECOND = ("TaskCreated", "TaskQueued", "TaskGroupValidated")
CREATOR_THIRD = ("TaskStarted", "TaskScoreReady", "TaskErrorReported", "TaskValidated", "TaskSuccess",
                 "TaskInvalidated", "TaskAborted")
#: The steps a member has passed once it is in a state, for the hooks (the steps the client
#: takes itself, "created", "params_uploaded", "validated", "downloaded", are told where taken).
STEPS_BY = {TaskState.STARTED: ("started",), TaskState.SCORE_READY: ("started", "scored"),
            TaskState.VALIDATED: ("started", "scored"), TaskState.SUCCESS: ("started", "scored", "delivered")}


class ClientState(Enum):
    """Where a client is in its own life (like httpx's)."""

    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


class NoNodeWarning(UserWarning):
    """No node serves a model yet: the task waits in the queue until one joins."""


class StageTimeoutWarning(UserWarning):
    """The stage timeout is long for the network's validation window: should the task be
    sampled, a member of its group that stalls can hold the group until a node that scored
    claims its fee unvalidated, and that node escapes the vote."""


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
    validated; ``node`` is the node whose result ``result()`` returned (else the original's)."""

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
    def is_group(self) -> bool:
        return len(self.members) > 1

    def member(self, key: bytes) -> Member | None:
        return next((m for m in [*self.members, *self.spares] if m.key == key), None)


StatusCallback = Callable[[TaskHandle, TaskState], None]


class Client:
    """The async SDK. ``async with Client() as client: await client.run(...)``.

    Settings come from the config file that ``gridtask devnet`` writes (or
    ``GRIDTASK_*`` variables); keyword arguments override them.
    """

    def __init__(
        self,
        *,
        config: NetworkConfig | None = None,
        config_path: Path | str | None = None,
        rpc_url: str | None = None,
        contract: str | None = None,
        relay_url: str | None = None,
        private_key: str | None = None,
        ws_url: str | None = None,
        event_hooks: Mapping[str, Sequence[StepHook]] | None = None,
    ) -> None:
        self.hooks = Hooks(event_hooks)
        self.config = config or load_config(
            config_path, rpc_url=rpc_url, contract=contract, relay_url=relay_url,
            private_key=private_key, ws_url=ws_url,
        )
        if not secret_value(self.config.private_key):  # a str after model_copy(update=...)
            raise ConfigError("no private key configured: set GRIDTASK_PRIVATE_KEY or the config file")
        try:
            self.identity = Identity.from_hex(self.config.private_key)
        except ValidationError as exc:  # the message never repeats the key
            raise ConfigError(f"the configured private key is unusable: {exc}") from None
        self.state = ClientState.UNOPENED
        self._chain: ChainClient | None = None
        self._relay: RelayClient | None = None
        self._follower: EventFollower | None = None
        self._pump: asyncio.Task[None] | None = None
        self._records = TaskRecords()  # what the events of this account's tasks said
        # A node's encryption key is derived from its account: one look-up per node is enough.
        self._node_keys: dict[str, bytes] = {}
        self._network: NetworkParams | None = None  # the contract's deploy parameters, read once
        # Nodes of this client's most recent tasks: every start excludes them, so that the
        # exclude list of a group's member looks like that of any other task.
        self._recent_nodes: deque[str] = deque(maxlen=EXCLUDE_MAX)
        self._registry: NodeRegistry | None = None

    def __repr__(self) -> str:
        return f"Client(address={self.identity.address!r}, rpc_url={self.config.rpc_url!r}, state={self.state.name})"

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        if self.state == ClientState.OPENED:
            return
        if self.state == ClientState.CLOSED:
            raise GridtaskError("this client is closed; make a new one")
        self._chain = ChainClient.from_config(self.config, self.identity)
        self._relay = RelayClient(self.config.relay_url, self.identity)
        self._registry = NodeRegistry(self._chain)
        topic, me = self._chain.events.topic, address_topic(self.identity.address)
        # One subscription for every task of this client: the chain sends only our own events.
        self._follower = EventFollower(
            self._chain, ws_url=self.config.ws_url, confirmations=self.config.confirmations,
            poll_interval=SAFETY_POLL_S if self.config.ws_url else None,
            filters=[[[topic(n) for n in CREATOR_SECOND], None, me],
                     [[topic(n) for n in CREATOR_THIRD], None, None, me]])
        await self._follower.start()
        if not self.config.confirmations:  # events come as soon as mined: they say how our calls went
            self._chain.confirm_by = self._records.confirm
        self._pump = asyncio.create_task(self._pump_events())
        self.state = ClientState.OPENED
        if self.config.ws_url:  # the first task's events come pushed, not at the next safety poll
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._follower.connected.wait(), WAKE_CHECK_S)

    async def aclose(self) -> None:
        if self.state != ClientState.OPENED:
            self.state = ClientState.CLOSED
            return
        assert self._pump and self._follower and self._relay and self._chain
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        await self._follower.stop()
        await self._relay.aclose()
        await self._chain.aclose()
        self.state = ClientState.CLOSED

    @property
    def chain(self) -> ChainClient:
        if self._chain is None:
            raise GridtaskError("the client is not open: use `async with Client() as client`")
        return self._chain

    @property
    def relay(self) -> RelayClient:
        if self._relay is None:
            raise GridtaskError("the client is not open: use `async with Client() as client`")
        return self._relay

    # ------------------------------------------------------------ the whole life

    async def run(
        self,
        task_type: TaskType | int,
        model: str,
        inputs: dict[str, Any],
        *,
        fee: int = DEFAULT_FEE,
        timeout: float = 120.0,
        on_status: StatusCallback | None = None,
        validate: str = "sampled",
        **requirements: Any,
    ) -> Any:
        """Submit a task and return its checked result (``validate``: see ``submit``)."""
        check_positive("timeout", timeout, "seconds")  # before paying: a wait of 0 only loses the fee
        handle = await self.submit(task_type, model, inputs, fee=fee, validate=validate, **requirements)
        return await self.result(handle, timeout=timeout, on_status=on_status)

    async def submit(
        self,
        task_type: TaskType | int,
        model: str,
        inputs: dict[str, Any],
        *,
        fee: int = DEFAULT_FEE,
        models: list[str] | None = None,
        min_vram: int = 0,
        gpu: str = "",
        size: int = 1,
        stage_timeout: int | None = None,
        validate: str = "sampled",
        exclude: Sequence[str] = (),
    ) -> TaskHandle:
        """Create and start the task on chain (docs/design.md, "A task's life", step 1) and
        return without waiting for a node.

        ``validate="sampled"`` (the default): the network samples tasks for validation at
        its rate (``validation_rate_bps``); a sampled task becomes a group of three here,
        paying two more fees that come back once the group agrees. ``validate="always"``:
        the task runs as a group of three from the start, and each of the three nodes keeps
        its fee (``fee`` is paid three times). Nodes cannot tell either kind from a lone task.

        ``stage_timeout`` (seconds each stage may take) defaults to 60 s, or half the
        network's validation window where that is shorter (``limits.default_stage_timeout``).

        ``exclude``: nodes that must not run it (a retry elsewhere), before the nodes of
        this client's two most recent tasks; at most two in all, and never so many that no
        node could run it.

        Everything a node would refuse is refused here first, before anything is paid
        (``ValidationError`` naming the limit, see ``gridtask.limits``).
        """
        task_type = _task_type(task_type)
        validate = check_validate_mode(validate)
        if not isinstance(inputs, dict):
            raise ValidationError(f"inputs: must be a dict (got {type(inputs).__name__})")
        if not isinstance(fee, int) or isinstance(fee, bool):
            raise ValidationError(f"fee: must be an integer number of wei (got {fee!r})")
        check_positive("fee", fee, "wei")
        if stage_timeout is not None:
            check_positive("stage_timeout", stage_timeout, "seconds")
        for name, number, least in (("size", size, 1), ("min_vram", min_vram, 0),
                                    ("stage_timeout", 1 if stage_timeout is None else stage_timeout, 1)):
            if not isinstance(number, int) or isinstance(number, bool) or number < least:
                raise ValidationError(f"{name}: must be an integer of at least {least} (got {number!r})")
        wanted = models or [model]
        if model not in wanted:
            raise ValidationError(f"model: {model!r} is not among the task's models {wanted}")
        try:
            model_ids = [to_bytes32(m) for m in wanted]
            gpu_id = to_bytes32(gpu) if gpu else bytes(32)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        check_task(task_type, model, inputs)
        for other in wanted:
            check_model_type(task_type, other)
        handle = TaskHandle(
            members=[], model=model, fee=fee, task_type=task_type, secret=os.urandom(32), validate=validate,
            models=model_ids, min_vram=min_vram, gpu=gpu_id, size=size,
        )
        check_params_size(self._new_member(handle, inputs).params)  # every member's are the same size
        await self.open()
        network = await self._network_params()
        check_fee(fee, size, network.min_fee_per_unit)
        if stage_timeout is None:
            stage_timeout = default_stage_timeout(network.validation_window, network.min_timeout)
        elif (network.validation_rate_bps or validate == "always") and not stage_timeout_fits(
                stage_timeout, network.validation_window):  # no group can form otherwise
            warnings.warn(f"stage_timeout {stage_timeout} s is over half the network's validation window "
                          f"({network.validation_window} s): should the task be sampled, a member of its group "
                          "that stalls can hold the group until a node that scored is paid unvalidated",
                          StageTimeoutWarning, stacklevel=2)
        handle.stage_timeout = stage_timeout
        handle.exclude = [str(a) for a in exclude]
        for m in wanted:
            if not await self.serving([m]):
                warnings.warn(f"no node serves {m} yet: the task waits until one joins",
                              NoNodeWarning, stacklevel=2)
        handle.serving = await self.serving(wanted, min_vram=min_vram, gpu=gpu)
        members = [self._new_member(handle, inputs) for _ in range(GROUP_SIZE if validate == "always" else 1)]
        await self._create(handle, members)
        log.info("task %s: created (fee %d wei%s)", handle.task_id[:10], fee,
                 ", a group of three" if handle.is_group else "")
        for member in handle.members:
            await self._start(handle, member)
        await self._sample(handle, inputs)
        return handle

    async def result(
        self, handle: TaskHandle, *, timeout: float = 120.0, on_status: StatusCallback | None = None
    ) -> Any:
        """Follow the task (and its group) to its end (docs/design.md, "A task's life",
        steps 2-8) and return the checked result: the original's, or, when its group
        outvoted it, an agreeing member's (``handle.group`` says how the group ended).
        In a group, every agreeing member's delivery is downloaded and checked against its
        score before returning, and a mismatch disputed: a node that copied another's score
        agrees with it, and only its delivery can show that.

        A task that waits on someone else (a node to take it, to score, to deliver) past
        its stage's deadline will not move again: this aborts it at once, which refunds
        the fee, and raises ``TaskAborted`` (a group member is aborted the same way, and the
        group goes on without it). ``GroupFailed``: no two members agreed; ``TaskInvalidated``:
        the result was shown wrong on chain; ``ResultMismatch``: the delivered result does
        not match its score (disputed on chain when small enough). ``TaskTimeout`` means only
        that ``timeout`` ran out first.
        """
        check_positive("timeout", timeout, "seconds")
        try:
            output = await self._follow(handle, timeout, on_status)
        except Exception as exc:
            await self._step(handle, handle.original, "failed", error=type(exc).__name__, message=str(exc))
            raise
        await self._step(handle, handle.delivered_by or handle.original, "done")
        return output

    async def _follow(self, handle: TaskHandle, timeout: float, on_status: StatusCallback | None) -> Any:
        for member in handle.members:
            self._watch(handle, member.key)
        try:
            return await TaskRun(self, handle, time.monotonic() + timeout, on_status).run()
        finally:
            self._unwatch(handle)

    # ------------------------------------------------------------ creating and starting

    def _new_member(self, handle: TaskHandle, inputs: dict[str, Any]) -> Member:
        """A fresh nonce and the parameters it salts: its own result key among them, so the
        members of a group have different parameters hashes and results encrypted apart."""
        nonce = os.urandom(32)
        params = TaskParams(
            task_type=handle.task_type, model=handle.model, inputs=inputs,
            result_key=result_key(handle.secret, nonce).hex(),
        ).encode()
        key = task_key(self.identity.address, task_commitment(handle.secret, nonce))
        return Member(key=key, nonce=nonce, params=params)

    async def _create(self, handle: TaskHandle, members: list[Member]) -> None:
        """Create members on chain (concurrently: the chain client orders their nonces)."""
        for member in members:
            handle.members.append(member)
            self._watch(handle, member.key)

        async def create(member: Member) -> None:
            sent_at = time.perf_counter()
            self._absorb(await self.chain.create_task(
                task_type=int(handle.task_type), commitment=task_commitment(handle.secret, member.nonce),
                nonce=member.nonce, models=handle.models, min_vram=handle.min_vram, required_gpu=handle.gpu,
                params_hash=params_hash(member.params, member.nonce), task_size=handle.size,
                timeout=handle.stage_timeout, fee=handle.fee,
            ))
            await self._step(handle, member, "created", tx_started_at=sent_at)

        await asyncio.gather(*(create(m) for m in members))

    async def serving(self, models: Sequence[str], *, min_vram: int = 0, gpu: str = "") -> int:
        """How many nodes could run a task needing every one of ``models`` (with that VRAM and
        GPU): registered, not quitting, idle or not. The one "is this model served" look-up
        (``NodeRegistry``: read from the nodes' logs, a few seconds stale at most, no request
        per call). An exclude list capped by it always leaves the task a node."""
        await self.open()
        assert self._registry is not None
        return await self._registry.serving(list(models), min_vram=min_vram, gpu=gpu)

    def _exclude(self, handle: TaskHandle, member: Member) -> list[str]:
        """The nodes ``member`` may not run on: a group member's, the other members' nodes;
        any other task's, the nodes of this client's two most recent tasks (so that an exclude
        list never marks a group). Either way no more of them than leaves a node that can run
        it (a rule of public numbers, so the cap marks nothing either)."""
        if handle.is_group:
            nodes = [m.node for m in handle.members if m is not member and m.node]
        else:
            nodes = list(dict.fromkeys([*handle.exclude, *reversed(self._recent_nodes)]))
        return nodes[:max(0, min(EXCLUDE_MAX, handle.serving - 1))]

    async def _start(self, handle: TaskHandle, member: Member) -> None:
        """``startTask`` in a block after the creation (the creation's receipt is in: any
        transaction sent now lands later); then learn its node, if it got one."""
        exclude = self._exclude(handle, member)
        try:
            self._absorb(await self.chain.start_task(member.key, handle.models, handle.min_vram, handle.gpu,
                                                     exclude=exclude))
        except TransactionReverted as exc:
            info = await self.chain.get_task(member.key)
            if info is None or info.state == TaskState.CREATED:
                if "start window passed" in exc.reason:  # 256 blocks later: only a refund is left
                    self._absorb(await self.chain.cancel_task(member.key))
                    return
                raise
            log.info("task %s: started by someone else meanwhile", member.task_id[:10])
            await self._step(handle, member, "retry", what="startTask", why=exc.reason)
            self._records.read(member.key, info)
        info = self._records.known.get(member.key)
        if info is None or info.state == TaskState.CREATED:  # its event did not reach us: ask
            info = await self.chain.get_task(member.key)
        self._learn_node(member, info)
        if info is not None and info.state in (TaskState.STARTED, TaskState.QUEUED):
            await self._step(handle, member, "started", node=member.node, queued=info.state == TaskState.QUEUED)

    def _learn_node(self, member: Member, info: TaskInfo | None) -> None:
        if info is not None and info.has_node and not member.node:
            member.node = info.node
            self._recent_nodes.append(info.node)

    async def _sample(self, handle: TaskHandle, inputs: dict[str, Any] | None) -> None:
        """Ask the contract whether the original was sampled (the task ID opens its
        commitment); a sampled lone task becomes a group of three at once."""
        if handle.sampled is not None:
            return
        original = handle.original
        created_in = self._records.creation_hash(original.key)
        if created_in:  # the rule, on the creation block's hash that the TaskCreated log carries
            rate = (await self._network_params()).validation_rate_bps
            handle.sampled = sampled(handle.opening, created_in, rate)
        else:  # no log of its creation here (a handle from elsewhere): the contract says
            handle.sampled = bool(await CHAIN_UNREACHABLE.call(
                lambda: self.chain.is_sampled(original.key, handle.opening, original.nonce)))
        if not handle.sampled or handle.is_group:
            return
        log.info("task %s: sampled for validation; two more tasks with its task ID make a group of three",
                 handle.task_id[:10])
        params = TaskParams.decode(original.params)
        await self._create(handle, [self._new_member(handle, inputs or params.inputs) for _ in range(2)])
        for member in handle.members[1:]:
            await self._start(handle, member)

    # ------------------------------------------------------------ following

    async def _read(self, handle: TaskHandle, deadline: float) -> dict[bytes, TaskInfo]:
        """Every member's record (spares included), as its events tell it. The chain is read
        (every doubtful member in one round) only for a gap: a member never seen, one a reorg
        or an unknown event made doubtful, or one past its stage's deadline with no news,
        which a missed event would look like (read again at most every ``WAKE_CHECK_S``)."""
        members = [*handle.members, *handle.spares]
        doubtful = [m for m in members if self._records.doubtful(m.key, WAKE_CHECK_S)]
        if doubtful:
            keys = [m.key for m in doubtful]
            found = await CHAIN_UNREACHABLE.call(lambda: self.chain.get_tasks(keys), deadline=deadline)
            for member, info in zip(doubtful, found, strict=True):
                if info is None:
                    raise GridtaskError(f"task {member.task_id} is not on chain")
                self._records.read(member.key, info)
        infos = {}
        for member in members:
            info = self._records.known[member.key]
            member.state = info.state
            self._learn_node(member, info)
            infos[member.key] = info
            for name in STEPS_BY.get(info.state, ()):
                await self._step(handle, member, name, node=info.node)
        return infos

    # ------------------------------------------------------------ steps

    async def _upload_params(self, handle: TaskHandle, member: Member, info: TaskInfo, deadline: float) -> None:
        key = self._node_keys.get(info.node)
        if key is None:
            assert self._registry is not None
            key = await self._registry.public_key(info.node)
            if key is None:
                node = await self.chain.get_node(info.node)
                if node is None:
                    raise GridtaskError(f"task {member.task_id}: its node {info.node} is not registered")
                key = node.public_key
            self._node_keys[info.node] = key
        member.node = info.node
        started_at = time.perf_counter()
        sealed = seal(member.params, key)

        async def upload() -> None:
            try:
                await self.relay.upload_params(member.key, sealed)
            except RelayError as exc:
                if exc.detail != "parameters already uploaded":  # an earlier try got through
                    raise

        await self._retry(upload, handle, deadline)
        await self._step(handle, member, "params_uploaded", started_at=started_at, node=info.node)

    async def _download(self, handle: TaskHandle, member: Member, info: TaskInfo, deadline: float) -> Any:
        """Fetch the ciphertext, decrypt it with the member's result key and check it against
        the score its node committed; a mismatch is disputed on chain (``_mismatch``)."""
        started_at = time.perf_counter()
        cipher = await self._retry(lambda: self.relay.download_result(member.key), handle, deadline)
        try:
            plain = decrypt_result(result_key(handle.secret, member.nonce), cipher)
        except CryptoError:
            raise await self._mismatch(handle, member, info, cipher, "cannot be decrypted with its result key") \
                from None
        bits = (await self._network_params()).similarity_bits_for(int(handle.task_type))
        if not result_matches_score(plain, info.score, handle.task_type):  # what a dispute proves
            raise await self._mismatch(handle, member, info, cipher,
                                       f"does not match the score its node {info.node} committed")
        try:
            # A similarity type's high half is recomputed here, under the network's rule of agreement
            # (another machine's rounding may move a bit or two); the contract cannot recompute it.
            fits = scores_agree(score(plain, handle.task_type), info.score, handle.task_type, bits)
            output = json.loads(plain)
        except ValueError:  # ValidationError too: not the JSON its executor returns
            fits, output = False, None
        if not fits:
            raise ResultMismatch(
                f"task {member.task_id}: node {info.node} delivered the bytes it committed to, but they are not "
                "a valid result of its task type or do not fit the similarity hash it committed; a dispute on "
                "chain cannot prove that (it checks the result's digest only), so the node keeps the fee",
                task_id=member.task_id, node=info.node)
        await self._step(handle, member, "downloaded", started_at=started_at)
        return output

    async def _mismatch(self, handle: TaskHandle, member: Member, info: TaskInfo, cipher: bytes,
                        what: str) -> ResultMismatch:
        """Prove a mismatch on chain when the ciphertext fits a dispute: the task becomes
        INVALIDATED, its node is slashed and the fee comes back."""
        head = f"task {member.task_id}: the delivered result {what}"
        if len(cipher) > MAX_DISPUTE_CIPHERTEXT:
            return ResultMismatch(
                f"{head}; its ciphertext is {len(cipher)} bytes, over the {MAX_DISPUTE_CIPHERTEXT} a "
                "dispute on chain takes, so it cannot be proved wrong there and the node keeps the fee",
                task_id=member.task_id, node=info.node)
        log.warning("%s; disputing it on chain", head)
        try:
            self._absorb(await CHAIN_UNREACHABLE.call(
                lambda: self.chain.dispute_result(member.key, handle.secret, member.nonce, cipher), deadline=None))
        except TransactionReverted as exc:
            return ResultMismatch(f"{head}; the dispute on chain was refused: {exc.reason}",
                                  task_id=member.task_id, node=info.node)
        return ResultMismatch(
            f"{head}; disputed on chain: node {info.node} was slashed and the fee ({info.fee} wei) went back "
            "to your balance (`gridtask withdraw` takes it out)",
            task_id=member.task_id, node=info.node, disputed=True)

    async def _validate_single(self, handle: TaskHandle, member: Member, deadline: float) -> None:
        """Accept the score of a task the network did not sample (docs/design.md, "A task's
        life", step 6), opening its commitment; the caller reads the state again either way."""
        sent_at = time.perf_counter()
        try:
            self._absorb(await CHAIN_UNREACHABLE.call(
                lambda: self.chain.validate_single_task(member.key, handle.opening, member.nonce), deadline=deadline))
        except TransactionReverted as exc:  # its node aborted it, or an earlier try got through
            log.warning("task %s: validate refused (%s); reading its state again", member.task_id[:10], exc.reason)
            await self._step(handle, member, "retry", what="validateSingleTask", why=exc.reason)
            self._records.doubt(member.key)
            if "sampled" in exc.reason:  # the contract says so: ask it again, which makes the group
                handle.sampled = None
                self._records.forget_creation(member.key)
                return
            await self._sleep_until_event(handle, deadline)
            return
        await self._step(handle, member, "validated", tx_started_at=sent_at)

    async def _validate_group(self, handle: TaskHandle, deadline: float) -> None:
        """``validateTaskGroup`` once every member scored or ended; its receipt says how the
        group ended (``handle.group``)."""
        nonces = [m.nonce for m in handle.members]
        sent_at = time.perf_counter()
        try:
            receipt = await CHAIN_UNREACHABLE.call(
                lambda: self.chain.validate_task_group(handle.opening, nonces), deadline=deadline)
        except TransactionReverted as exc:  # a member moved meanwhile, or an earlier try got through
            log.warning("task %s: group validation refused (%s); reading its state again",
                        handle.task_id[:10], exc.reason)
            await self._step(handle, handle.original, "retry", what="validateTaskGroup", why=exc.reason)
            self._records.doubt(*(m.key for m in handle.members))
            handle.group = await self._find_group(handle)
            if handle.group is None:
                await self._sleep_until_event(handle, deadline)
            return
        events = self.chain.decode_receipt(receipt) if receipt is not None else []
        self._absorb(receipt)
        found = next((e for e in events if e.name == "TaskGroupValidated"), None)
        handle.group = await self._group_result(found, events) if found else await self._find_group(handle)
        if handle.group is not None:
            log.info("task %s: group validated: %s", handle.task_id[:10], handle.group.describe())
            for member in handle.members:
                await self._step(handle, member, "validated", tx_started_at=sent_at, outcome=handle.group.outcome.name)

    async def _retry(self, call: Callable[[], Any], handle: TaskHandle, deadline: float) -> Any:
        """A relay call, again while the relay has nothing yet or is away, until the caller's deadline."""

        async def timed_out(last: BaseException) -> Any:
            raise self._timeout(handle) from None

        return await NOT_READY.call(call, deadline=deadline, on_give_up=timed_out)

    async def _task(self, member: Member, deadline: float) -> TaskInfo:
        """The task's record, waiting out a chain that is away until the caller's deadline."""
        info = await CHAIN_UNREACHABLE.call(lambda: self.chain.get_task(member.key), deadline=deadline)
        if info is None:
            raise GridtaskError(f"task {member.task_id} is not on chain")
        return info

    async def _sleep_until_event(self, handle: TaskHandle, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._timeout(handle)
        wake = self._records.wake.get(handle.commitment)
        if wake is None:
            await asyncio.sleep(min(left, WAKE_CHECK_S))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), min(left, WAKE_CHECK_S))
        wake.clear()

    def _timeout(self, handle: TaskHandle) -> TaskTimeout:
        return TaskTimeout(
            f"task {handle.task_id} did not end in time (last state {handle.state.name}); once its "
            f"stage deadline passes, `gridtask task abort {handle.task_id}` refunds the fee",
            task_id=handle.task_id)

    async def _abort_stalled(self, handle: TaskHandle, member: Member, info: TaskInfo, deadline: float) -> None:
        """Abort a task that outlived its stage's deadline; the loop then sees it ABORTED."""
        reason = f"creator: no progress by the {info.state.name} deadline"
        log.warning("task %s: %s (deadline %d, now %.0f); aborting it (the fee is refunded)", member.task_id[:10],
                    reason, info.deadline, time.time())
        try:
            self._absorb(await self.chain.abort_task(member.key, reason))
        except ChainError as exc:
            # Reverted because it moved meanwhile (a late score, a node's own abort) or the
            # chain's clock is behind ours, or the chain is away: read its state again.
            log.info("task %s: abort did not go through (%s)", member.task_id[:10], exc)
            await self._step(handle, member, "retry", what="abortTask", why=str(exc))
            self._records.doubt(member.key)
            await self._sleep_until_event(handle, deadline)

    async def _abort_reason(self, member: Member) -> str:
        event = await self._find_event(member, "TaskAborted")
        return str(event.args["reason"]) if event else "unknown reason"

    async def _error_code(self, member: Member) -> int:
        event = await self._find_event(member, "TaskErrorReported")
        return int(event.args["error_code"]) if event else 0

    def _cached_event(self, member: Member, name: str) -> ChainEvent | None:
        """The member's newest ``name`` event as the stream delivered it."""
        return self._records.event(member.key, name)

    async def _find_event(self, member: Member, name: str) -> ChainEvent | None:
        """The member's ``name`` event: as the stream delivered it, else searched for on chain."""
        cached = self._cached_event(member, name)
        if cached is not None:
            return cached
        for event in await self.events(member.key):
            if event.name == name and not event.removed:
                return event
        return None

    async def _network_params(self) -> NetworkParams:
        """The network's deploy parameters (minimum fee, validation window...), read once per client."""
        if self._network is None:
            self._network = await CHAIN_UNREACHABLE.call(self.chain.network_params)
        return self._network

    # ------------------------------------------------------------ groups on chain

    async def _find_group(self, handle: TaskHandle) -> GroupResult | None:
        """The group's ``TaskGroupValidated``: as the stream delivered it, else searched for on
        chain (indexed by ``keccak(task ID)``)."""
        found = self._cached_event(handle.original, "TaskGroupValidated")
        if found is not None and bytes(found.args["keys"][0]) == handle.commitment:
            return await self._group_result(found)
        topic = self.chain.events.topic("TaskGroupValidated")
        events = await self.chain.find_logs([topic, handle.opening])
        for event in reversed(events):
            if not event.removed and bytes(event.args["keys"][0]) == handle.commitment:
                return await self._group_result(event)
        return None

    async def group(self, task_id: str | bytes) -> GroupResult | None:
        """How the validation group of a task (any member's key) ended, or None if the task
        was never validated in a group."""
        key = parse_task_id(task_id)
        await self.open()
        info = await self.chain.get_task(key)
        if info is None:
            return None
        creator = bytes(12) + bytes.fromhex(info.creator.removeprefix("0x"))
        events = await self.chain.find_logs([self.chain.events.topic("TaskGroupValidated"), None, creator])
        for event in reversed(events):
            if not event.removed and key in [bytes(k) for k in event.args["keys"]]:
                return await self._group_result(event)
        return None

    async def slashes(self, task_id: str | bytes) -> list[ChainEvent]:
        """``NodeSlashed`` events for one task (a group outvoted it, or its creator disputed it)."""
        key = parse_task_id(task_id)
        await self.open()
        topic = self.chain.events.topic("NodeSlashed")
        return [e for e in await self.chain.find_logs([topic, None, key]) if not e.removed]

    async def _group_result(self, event: ChainEvent, receipt_events: list[ChainEvent] | None = None) -> GroupResult:
        """A ``TaskGroupValidated`` with the slashes of the same transaction and the members' nodes."""
        if receipt_events is None:
            topic = self.chain.events.topic("NodeSlashed")
            receipt_events = [e for e in await self.chain.find_logs([topic], from_block=event.block_number,
                                                                     to_block=event.block_number)
                              if e.transaction_hash == event.transaction_hash]
        keys = tuple(bytes(k) for k in event.args["keys"])
        bits = int(event.args["agreeing"])
        slashed: dict[str, int] = {}
        for e in receipt_events:
            if e.name == "NodeSlashed":
                slashed[str(e.args["node"])] = slashed.get(str(e.args["node"]), 0) + int(e.args["amount"])
        nodes = []
        for k in keys:
            known = self._records.known.get(k)
            info = known if known is not None and known.has_node else await self.chain.get_task(k)
            nodes.append(info.node if info is not None else "")
        return GroupResult(
            outcome=GroupOutcome(int(event.args["outcome"])), keys=keys,
            agreeing=tuple(bool(bits >> i & 1) for i in range(len(keys))), sampled=bool(event.args["sampled"]),
            slashed=slashed, nodes=tuple(nodes),
        )

    # ------------------------------------------------------------ inspection

    async def task(self, task_id: str | bytes) -> TaskInfo | None:
        """The task's record on chain, or None if there is no such task."""
        await self.open()
        return await self.chain.get_task(parse_task_id(task_id))

    async def events(self, task_id: str | bytes) -> list[ChainEvent]:
        """Every event of one task, oldest first."""
        await self.open()
        return await self.chain.find_logs([None, parse_task_id(task_id)])

    async def abort(self, task_id: str | bytes, reason: str = "creator: aborted") -> None:
        await self.open()
        await self.chain.abort_task(parse_task_id(task_id), reason[:64])

    async def withdraw(self) -> int:
        """Take out refunds owed to this account; returns the amount (wei), 0 (and sends
        nothing) when nothing is owed."""
        await self.open()
        amount = await self.chain.balance_of()
        if amount:
            await self.chain.withdraw()
        return amount

    # ------------------------------------------------------------ events

    def _watch(self, handle: TaskHandle, key: bytes) -> None:
        """Events of any member wake the handle's one waiter."""
        self._records.watch(handle.members[0].key if handle.members else key, key)

    def _unwatch(self, handle: TaskHandle) -> None:
        """Stop following the handle's members (``TaskRecords.forget``)."""
        self._records.forget([m.key for m in [*handle.members, *handle.spares]])

    async def _pump_events(self) -> None:
        assert self._follower is not None
        async for event in self._follower:
            self._on_event(event)

    def _on_event(self, event: ChainEvent) -> None:
        """One event of this account's tasks, from the follower or a receipt (``TaskRecords.on_event``)."""
        self._records.on_event(event)

    def _absorb(self, receipt: Any) -> None:
        """The events of one of our own transactions, from its receipt: known at once."""
        if receipt is not None:
            for event in self.chain.decode_receipt(receipt):
                self._on_event(event)

    async def _step(self, handle: TaskHandle, member: Member, name: str, **detail: Any) -> None:
        """Tell the hooks a step, once per member ("retry" and "failed" every time)."""
        if name not in ("retry", "failed"):
            if name in member.steps:
                return
            member.steps.add(name)
        await self.hooks.step(handle.task_id, member.key, name, **detail)


def parse_task_id(task_id: str | bytes) -> bytes:
    """A task ID as users write it (0x + 64 hex) or as bytes; ``ValidationError`` otherwise."""
    if isinstance(task_id, bytes):
        raw = task_id
    else:
        text = str(task_id).strip().removeprefix("0x")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValidationError(f"malformed task ID {task_id!r}: expected 0x and 64 hex characters") from None
    if len(raw) != 32:
        raise ValidationError(f"malformed task ID {task_id!r}: expected 0x and 64 hex characters")
    return raw


def _task_type(value: TaskType | int) -> TaskType:
    try:
        return TaskType(value)
    except ValueError:
        raise ValidationError(f"unknown task type {value!r}: one of {[t.name.lower() for t in TaskType]}") from None


__all__ = ["Client", "ClientState", "GroupResult", "Member", "NoNodeWarning", "StageTimeoutWarning", "TaskHandle",
           "parse_task_id"]
