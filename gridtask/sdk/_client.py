"""The application's side of a task's life (docs/design.md, "A task's life", steps 1-3 and
6-8): ``Client``, its lifecycle and its public methods. What it is made of, each part one
module:

- ``_checks.py``: what ``submit`` refuses before anything is paid;
- ``_launch.py``: a task's members created and started on chain, and the sample that makes a
  lone task a validation group of three;
- ``_task.py``: ``TaskRun``, a task's state machine: from what its members' records say now,
  the one next thing to do;
- ``_transfer.py``: the parameters up and the result down through the relay, with retries;
  the result checked against its score (and disputed on chain when it does not fit);
- ``_validation.py``: a lone task or a group validated on chain, and how a group ended;
- ``_pump.py`` and ``_records.py``: one event subscription for all the client's tasks,
  filtered on chain to its account, and the records its events keep (the chain is read for a
  task's state only for a gap: a stage deadline passed with no news, a reorg);
- ``_handle.py``: ``TaskHandle`` and its ``Member`` records; ``_registry.py``: the nodes and
  the one "is this model served" look-up; ``_hooks.py``: ``event_hooks`` that see every step.

``Client.submit`` creates the task on chain and, in a later block, starts it; ``Client.result``
follows every member to its end: on ``TaskStarted`` it seals the parameters to the member's
node and uploads them; once scored, a lone task is validated by itself and a group together;
on ``TaskSuccess`` it downloads, decrypts and checks the result against the score.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from gridtask.chain.client import ChainClient, ChainEvent
from gridtask.chain.models import NetworkParams, TaskInfo
from gridtask.config import NetworkConfig, load_config, secret_value
from gridtask.exceptions import ConfigError, GridtaskError, ValidationError
from gridtask.keys import Identity
from gridtask.limits import check_params_size, check_positive
from gridtask.relay.client import RelayClient
from gridtask.retry import CHAIN_UNREACHABLE
from gridtask.sdk._checks import NoNodeWarning, StageTimeoutWarning, check_for_network, check_order, parse_task_id
from gridtask.sdk._handle import GroupResult, Member, StatusCallback, TaskHandle
from gridtask.sdk._hooks import Hooks, StepHook
from gridtask.sdk._launch import GROUP_SIZE, Launcher
from gridtask.sdk._pump import EventPump
from gridtask.sdk._registry import NodeRegistry
from gridtask.sdk._task import TaskRun
from gridtask.sdk._transfer import Transfer
from gridtask.sdk._validation import Validation
from gridtask.types import TaskType

log = logging.getLogger("gridtask.sdk")

DEFAULT_FEE = 10**15  # 0.001 ether


class ClientState(Enum):
    """Where a client is in its own life (like httpx's)."""

    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


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
        self._registry: NodeRegistry | None = None
        self._network: NetworkParams | None = None  # the contract's deploy parameters, read once
        self._pump = EventPump(self)
        self._launch = Launcher(self)
        self._transfer = Transfer(self)
        self._validation = Validation(self)

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
        await self._pump.start()
        self.state = ClientState.OPENED

    async def aclose(self) -> None:
        if self.state != ClientState.OPENED:
            self.state = ClientState.CLOSED
            return
        assert self._relay and self._chain
        await self._pump.stop()
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
        model: str | Sequence[str],
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
        model: str | Sequence[str],
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
        any_model: bool = False,
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

        ``model`` names the task's model, or a list of models (as ``models=`` does): a node must
        serve every one of them, or with ``any_model=True`` any one of them; the parameters then
        name the first listed that the node the contract picked serves (``handle.model_run``).

        Everything a node would refuse is refused here first, before anything is paid
        (``ValidationError`` naming the limit, see ``gridtask.limits``).
        """
        order = check_order(task_type, model, inputs, fee=fee, models=models, min_vram=min_vram, gpu=gpu,
                            size=size, stage_timeout=stage_timeout, validate=validate, any_model=any_model)
        handle = TaskHandle(
            members=[], model=order.models[0] if isinstance(model, (list, tuple)) else str(model), fee=fee,
            task_type=order.task_type, secret=os.urandom(32), validate=order.validate, models=order.model_ids,
            min_vram=min_vram, gpu=order.gpu_id, size=size, any_model=order.any_model,
        )
        check_params_size(self._launch.new_member(handle, inputs).params)  # every member's are the same size
        await self.open()
        handle.stage_timeout = check_for_network(await self._network_params(), fee=fee, size=size,
                                                 stage_timeout=stage_timeout, validate=order.validate)
        handle.exclude = [str(a) for a in exclude]
        for unserved in order.unserved([m for m in order.models if not await self.serving([m])]):
            warnings.warn(f"no node serves {unserved} yet: the task waits until one joins", NoNodeWarning, stacklevel=2)
        handle.serving = await self.serving(order.models, min_vram=min_vram, gpu=gpu, any_model=order.any_model)
        members = [self._launch.new_member(handle, inputs)
                   for _ in range(GROUP_SIZE if order.validate == "always" else 1)]
        await self._launch.create(handle, members)
        log.info("task %s: created (fee %d wei%s)", handle.task_id[:10], fee,
                 ", a group of three" if handle.is_group else "")
        for member in handle.members:
            await self._launch.start(handle, member)
        await self._launch.sample(handle, inputs)
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
            await self.hooks.tell(handle, handle.original, "failed", error=type(exc).__name__, message=str(exc))
            raise
        await self.hooks.tell(handle, handle.delivered_by or handle.original, "done")
        return output

    async def _follow(self, handle: TaskHandle, timeout: float, on_status: StatusCallback | None) -> Any:
        for member in handle.members:
            self._pump.watch(handle, member.key)
        try:
            return await TaskRun(self, handle, time.monotonic() + timeout, on_status).run()
        finally:
            self._pump.unwatch(handle)

    async def serving(self, models: Sequence[str], *, min_vram: int = 0, gpu: str = "",
                      any_model: bool = False) -> int:
        """How many nodes could run a task needing every one of ``models`` (any one of them
        when ``any_model``), with that VRAM and GPU: registered, not quitting, idle or not. The
        one "is this model served" look-up (``NodeRegistry``: read from the nodes' logs, a few
        seconds stale at most, no request per call). An exclude list capped by it always leaves the task a node."""
        await self.open()
        assert self._registry is not None
        return await self._registry.serving(list(models), min_vram=min_vram, gpu=gpu, any_model=any_model)

    async def _network_params(self) -> NetworkParams:
        """The network's deploy parameters (minimum fee, validation window...), read once per client."""
        if self._network is None:
            self._network = await CHAIN_UNREACHABLE.call(self.chain.network_params)
        return self._network

    # ------------------------------------------------------------ groups on chain

    async def group(self, task_id: str | bytes) -> GroupResult | None:
        """How the validation group of a task (any member's key) ended, or None if the task
        was never validated in a group."""
        key = parse_task_id(task_id)
        await self.open()
        return await self._validation.group_of(key)

    async def slashes(self, task_id: str | bytes) -> list[ChainEvent]:
        """``NodeSlashed`` events for one task (a group outvoted it, or its creator disputed it)."""
        key = parse_task_id(task_id)
        await self.open()
        topic = self.chain.events.topic("NodeSlashed")
        return [e for e in await self.chain.find_logs([topic, None, key]) if not e.removed]

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


# The names other modules took from here before the split, still here.
__all__ = ["DEFAULT_FEE", "Client", "ClientState", "GroupResult", "Member", "NoNodeWarning", "StageTimeoutWarning",
           "TaskHandle", "parse_task_id"]
