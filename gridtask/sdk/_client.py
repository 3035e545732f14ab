"""The application's side of a task's life, in full (docs/design.md, "A task's life", steps 1-3 and 6-8).

``Client.submit`` creates the task on chain; ``Client.result`` follows it: on
``TaskStarted`` it encrypts the parameters to the selected node and uploads them, on
``TaskScoreReady`` it validates, on ``TaskSuccess`` it downloads, decrypts and checks the
result against the score. Events only wake it: each step reads the task's state from the
chain, so a missed event or a chain that was away for a while delays it, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from gridtask.chain.client import ChainClient, ChainEvent, to_bytes32
from gridtask.chain.events import EventFollower
from gridtask.chain.models import TaskInfo
from gridtask.config import NetworkConfig, load_config, secret_value
from gridtask.crypto import params_hash, seal, task_commitment, task_key, unseal
from gridtask.exceptions import (
    ChainError,
    ConfigError,
    CryptoError,
    GridtaskError,
    RelayError,
    ResultMismatch,
    TaskAborted,
    TaskErrored,
    TaskTimeout,
    TransactionReverted,
    ValidationError,
)
from gridtask.keys import Identity
from gridtask.limits import check_model_type, check_params_size, check_positive, check_task, explain_task_error
from gridtask.params import TaskParams
from gridtask.relay.client import RelayClient
from gridtask.retry import CHAIN_UNREACHABLE, NOT_READY
from gridtask.scoring import score
from gridtask.types import TaskState, TaskType

log = logging.getLogger("gridtask.sdk")

DEFAULT_FEE = 10**15  # 0.001 ether
DEFAULT_STAGE_TIMEOUT_S = 60
WAKE_CHECK_S = 1.0
ABORT_GRACE_S = 1.0  # past a stage deadline by the local clock, a block's timestamp is past it too
# States in which the task waits on someone else (a node to take it, to score, to deliver):
# past the stage's deadline with the state unchanged, nothing more will happen.
STALLABLE = (TaskState.QUEUED, TaskState.STARTED, TaskState.VALIDATED)


class ClientState(Enum):
    """Where a client is in its own life (like httpx's)."""

    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


class NoNodeWarning(UserWarning):
    """No node serves a model yet: the task waits in the queue until one joins."""


@dataclass
class TaskHandle:
    """A task this client created. ``task_id`` is the 0x-hex commitment, its name on chain."""

    commitment: bytes
    nonce: bytes
    params: bytes
    model: str
    fee: int
    created_at: float = field(default_factory=time.monotonic)
    node: str = ""
    state: TaskState = TaskState.QUEUED

    @property
    def task_id(self) -> str:
        return "0x" + self.commitment.hex()


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
    ) -> None:
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
        self._events: dict[bytes, list[ChainEvent]] = {}
        self._wake: dict[bytes, asyncio.Event] = {}
        # A node's encryption key is derived from its account: one look-up per node is enough.
        self._node_keys: dict[str, bytes] = {}

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
        self._follower = EventFollower(self._chain, ws_url=self.config.ws_url,
                                       confirmations=self.config.confirmations)
        await self._follower.start()
        self._pump = asyncio.create_task(self._pump_events())
        self.state = ClientState.OPENED

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
        **requirements: Any,
    ) -> Any:
        """Submit a task and return its checked result."""
        check_positive("timeout", timeout, "seconds")  # before paying: a wait of 0 only loses the fee
        handle = await self.submit(task_type, model, inputs, fee=fee, **requirements)
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
        stage_timeout: int = DEFAULT_STAGE_TIMEOUT_S,
    ) -> TaskHandle:
        """Create the task on chain (docs/design.md, "A task's life", step 1) and return at once.

        Everything a node would refuse is refused here first, before anything is paid
        (``ValidationError`` naming the limit, see ``gridtask.limits``).
        """
        task_type = _task_type(task_type)
        if not isinstance(inputs, dict):
            raise ValidationError(f"inputs: must be a dict (got {type(inputs).__name__})")
        if not isinstance(fee, int) or isinstance(fee, bool):
            raise ValidationError(f"fee: must be an integer number of wei (got {fee!r})")
        check_positive("fee", fee, "wei")
        check_positive("stage_timeout", stage_timeout, "seconds")
        for name, number, least in (("size", size, 1), ("min_vram", min_vram, 0), ("stage_timeout", stage_timeout, 1)):
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
        params = TaskParams(
            task_type=task_type, model=model, inputs=inputs,
            reply_key=self.identity.encryption_public_key.hex(),
        ).encode()
        check_params_size(params)
        await self.open()
        for m, raw in zip(wanted, model_ids, strict=True):
            if await self.chain.model_node_count(raw) == 0:
                warnings.warn(f"no node serves {m} yet: the task waits until one joins",
                              NoNodeWarning, stacklevel=2)
        task_id, nonce = os.urandom(32), os.urandom(32)
        commitment = task_commitment(task_id, nonce)
        key = task_key(self.identity.address, commitment)  # the task's name on chain
        self._watch(key)
        await self.chain.create_task(
            task_type=int(task_type), commitment=commitment, nonce=nonce, models=model_ids, min_vram=min_vram,
            required_gpu=gpu_id, params_hash=params_hash(params, nonce), task_size=size, timeout=stage_timeout,
            fee=fee,
        )
        log.info("task 0x%s: created (fee %d wei)", key.hex()[:8], fee)
        return TaskHandle(commitment=key, nonce=nonce, params=params, model=model, fee=fee)

    async def result(
        self, handle: TaskHandle, *, timeout: float = 120.0, on_status: StatusCallback | None = None
    ) -> Any:
        """Follow the task to its end (docs/design.md, "A task's life", steps 2-8) and return the checked result.

        A task that waits on someone else (a node to take it, to score, to deliver) past
        its stage's deadline will not move again: this aborts it at once, which refunds
        the fee, and raises ``TaskAborted``. ``TaskTimeout`` means only that ``timeout``
        ran out first.
        """
        check_positive("timeout", timeout, "seconds")
        deadline = time.monotonic() + timeout
        uploaded = False
        try:
            while True:
                info = await self._task(handle, deadline)
                if info.state != handle.state:
                    handle.state = info.state
                    if on_status:
                        on_status(handle, info.state)
                if info.state == TaskState.SUCCESS:
                    return await self._download(handle, info, deadline)
                elif info.state == TaskState.ABORTED:
                    raise TaskAborted(await self._abort_reason(handle), task_id=handle.task_id, fee=info.fee)
                elif info.state == TaskState.ERRORED:
                    code = await self._error_code(handle)
                    raise TaskErrored(code, task_id=handle.task_id, message=explain_task_error(code, handle.params))
                elif info.state in STALLABLE and time.time() > info.deadline + ABORT_GRACE_S:
                    await self._abort_stalled(handle, info, deadline)
                elif info.state == TaskState.STARTED and not uploaded:
                    await self._upload_params(handle, info, deadline)
                    uploaded = True
                elif info.state == TaskState.SCORE_READY:  # again if a reorg took a validation back
                    await self._validate(handle, deadline)
                else:
                    await self._sleep_until_event(handle, deadline)
        finally:
            self._unwatch(handle.commitment)

    async def execute(self, task: Any, timeout: float = 300) -> list[Any]:
        """Dria style: run a ``Task`` (or a list) and return ``TaskResult`` objects."""
        from gridtask.sdk._dria import execute

        await self.open()
        return await execute(self, task, timeout=timeout)

    # ------------------------------------------------------------ steps

    async def _upload_params(self, handle: TaskHandle, info: TaskInfo, deadline: float) -> None:
        key = self._node_keys.get(info.node)
        if key is None:
            node = await self.chain.get_node(info.node)
            if node is None:
                raise GridtaskError(f"task {handle.task_id}: its node {info.node} is not registered")
            key = self._node_keys[info.node] = node.public_key
        handle.node = info.node
        sealed = seal(handle.params, key)

        async def upload() -> None:
            try:
                await self.relay.upload_params(handle.commitment, sealed)
            except RelayError as exc:
                if exc.detail != "parameters already uploaded":  # an earlier try got through
                    raise

        await self._retry(upload, handle, deadline)

    async def _download(self, handle: TaskHandle, info: TaskInfo, deadline: float) -> Any:
        sealed = await self._retry(lambda: self.relay.download_result(handle.commitment), handle, deadline)
        try:
            plain = unseal(sealed, self.identity.encryption_private_key)
        except CryptoError:
            raise ResultMismatch(f"task {handle.task_id}: the delivered result cannot be decrypted",
                                 task_id=handle.task_id) from None
        if score(plain) != info.score:
            raise ResultMismatch(
                f"task {handle.task_id}: the delivered result does not match the score its node "
                f"{info.node} committed", task_id=handle.task_id)
        try:
            return json.loads(plain)
        except ValueError:
            raise ResultMismatch(f"task {handle.task_id}: the node delivered a result that is not JSON",
                                 task_id=handle.task_id) from None

    async def _validate(self, handle: TaskHandle, deadline: float) -> None:
        """Accept the score (docs/design.md, "A task's life", step 6); the caller reads the
        task's state again either way."""
        try:
            await CHAIN_UNREACHABLE.call(lambda: self.chain.validate_single_task(handle.commitment),
                                         deadline=deadline)
        except TransactionReverted as exc:  # its node aborted it, or an earlier try got through
            log.warning("task %s: validate refused (%s); reading its state again", handle.task_id[:10], exc.reason)
            await self._sleep_until_event(handle, deadline)

    async def _retry(self, call: Callable[[], Any], handle: TaskHandle, deadline: float) -> Any:
        """A relay call, again while the relay has nothing yet or is away, until the caller's deadline."""

        async def timed_out(last: BaseException) -> Any:
            raise self._timeout(handle) from None

        return await NOT_READY.call(call, deadline=deadline, on_give_up=timed_out)

    async def _task(self, handle: TaskHandle, deadline: float) -> TaskInfo:
        """The task's record, waiting out a chain that is away until the caller's deadline."""
        info = await CHAIN_UNREACHABLE.call(lambda: self.chain.get_task(handle.commitment), deadline=deadline)
        if info is None:
            raise GridtaskError(f"task {handle.task_id} is not on chain")
        return info

    async def _sleep_until_event(self, handle: TaskHandle, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._timeout(handle)
        wake = self._wake.get(handle.commitment)
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

    async def _abort_stalled(self, handle: TaskHandle, info: TaskInfo, deadline: float) -> None:
        """Abort a task that outlived its stage's deadline; the loop then sees it ABORTED."""
        reason = f"creator: no progress by the {info.state.name} deadline"
        log.warning("task %s: %s; aborting it (the fee is refunded)", handle.task_id[:10], reason)
        try:
            await self.chain.abort_task(handle.commitment, reason)
        except ChainError as exc:
            # Reverted because it moved meanwhile (a late score, a node's own abort) or the
            # chain's clock is behind ours, or the chain is away: read its state again.
            log.info("task %s: abort did not go through (%s)", handle.task_id[:10], exc)
            await self._sleep_until_event(handle, deadline)

    async def _abort_reason(self, handle: TaskHandle) -> str:
        event = await self._find_event(handle, "TaskAborted")
        return str(event.args["reason"]) if event else "unknown reason"

    async def _error_code(self, handle: TaskHandle) -> int:
        event = await self._find_event(handle, "TaskErrorReported")
        return int(event.args["error_code"]) if event else 0

    async def _find_event(self, handle: TaskHandle, name: str) -> ChainEvent | None:
        for event in await self.events(handle.commitment):
            if event.name == name:
                return event
        return None

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

    def _watch(self, commitment: bytes) -> None:
        self._wake[commitment] = asyncio.Event()

    def _unwatch(self, commitment: bytes) -> None:
        self._wake.pop(commitment, None)

    async def _pump_events(self) -> None:
        assert self._follower is not None
        async for event in self._follower:
            commitment = event.commitment
            if commitment is not None and commitment in self._wake:
                self._wake[commitment].set()


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


__all__ = ["Client", "ClientState", "NoNodeWarning", "TaskHandle", "parse_task_id"]
