"""The node daemon: start-up, main loop, shutdown.

Start-up joins the network (or resumes a paused node) and picks up, from the chain,
every task that is still its own, so a restart loses nothing. The main loop follows
the contract's events: a ``TaskStarted`` or ``TaskValidated`` for this node wakes its
task; a ``TaskQueued`` that it could run while idle makes it claim queued work (the
contract's bounded selection can miss an idle node; this is how it never strands a
task). A signal sets a flag; the loop stops, and what is left resumes on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gridtask.chain.client import ChainClient, ChainEvent, to_bytes32
from gridtask.chain.events import EventFollower
from gridtask.chain.models import same_address
from gridtask.exceptions import ChainError, GridtaskError, TransactionReverted
from gridtask.keys import Identity
from gridtask.node.executors.base import ExecutorSet
from gridtask.node.settings import NodeSettings
from gridtask.node.worker import TaskWorker
from gridtask.relay.client import RelayClient
from gridtask.types import NodeStatus, TaskState

log = logging.getLogger("gridtask.node")

QUEUE_POLLS = 4
MY_EVENTS = {"TaskStarted", "TaskValidated", "TaskScoreReady", "TaskSuccess", "TaskAborted", "TaskErrorReported"}


class NodeDaemon:
    """``await NodeDaemon(settings, executors).serve()`` runs a node until ``shutdown()``."""

    def __init__(self, settings: NodeSettings, executors: ExecutorSet) -> None:
        self.settings = settings
        self.executors = executors
        self.identity = Identity.from_hex(settings.network.private_key)
        self.chain = ChainClient(settings.network.rpc_url, settings.network.contract, self.identity)
        self.relay = RelayClient(settings.network.relay_url, self.identity)
        state_dir = settings.state_dir / self.identity.address.lower()
        self.worker = TaskWorker(self.chain, self.relay, executors, state_dir / "results")
        self.follower = EventFollower(
            self.chain, ws_url=settings.network.ws_url, cursor_path=state_dir / "cursor"
        )
        self.models = executors.all_models()
        self.should_exit = asyncio.Event()
        self._mine: dict[bytes, asyncio.Task[None]] = {}
        self._wake: dict[bytes, asyncio.Event] = {}
        self._last_withdraw = time.monotonic()
        self._claiming: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return self.identity.address

    # ------------------------------------------------------------ lifecycle

    async def serve(self) -> None:
        await self.startup()
        try:
            await self.main_loop()
        finally:
            await self.shutdown_cleanup()

    def shutdown(self) -> None:
        self.should_exit.set()

    async def startup(self) -> None:
        await self.load_models()
        await self.follower.start()
        node = await self.chain.get_node(self.address)
        if node is None:
            log.info("node %s: joining with models %s", self.address, self.models)
            await self.chain.transact(
                "join", to_bytes32(self.settings.gpu), self.settings.vram,
                [to_bytes32(m) for m in self.models], self.identity.encryption_public_key,
                self.settings.version, value=self.settings.stake,
            )
        elif node.status == NodeStatus.PAUSED:
            await self.chain.transact("resume")
        await self.recover()
        if not self._mine:  # work queued while this node was away waits no longer
            with contextlib.suppress(TransactionReverted):
                await self.chain.transact("takeQueuedTask")
        log.info("node %s: ready", self.address)

    async def load_models(self) -> None:
        """Load every model before joining, so that the first task does not wait for it."""
        for executor in self.executors.executors():
            load = getattr(executor, "load", None)
            if load is not None:
                await asyncio.to_thread(load)
        log.info("node %s: models loaded: %s", self.address, ", ".join(self.models))

    async def recover(self) -> None:
        """Pick up every task that is still this node's, whatever happened before."""
        started = self.chain.events.topic("TaskStarted")
        me = bytes(12) + bytes.fromhex(self.address[2:])
        for event in await self.chain.find_logs([started, None, me]):
            task = await self.chain.get_task(event.commitment or b"")
            if task is not None and not task.state.is_final:
                self._track(task.commitment)

    async def main_loop(self) -> None:
        next_tick = time.monotonic() + self.settings.tick_s
        while not self.should_exit.is_set():
            event = await self.follower.next(timeout=max(0.0, next_tick - time.monotonic()))
            try:
                if event is not None:
                    await self.handle(event)
                if time.monotonic() >= next_tick:  # on its own clock, however busy the chain
                    next_tick = time.monotonic() + self.settings.tick_s
                    await self.tick()
            except ChainError as exc:
                log.warning("node %s: chain error: %s", self.address, exc)

    async def shutdown_cleanup(self) -> None:
        if self._claiming is not None:
            self._claiming.cancel()
        for task in self._mine.values():
            task.cancel()
        for task in list(self._mine.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.follower.stop()
        await self.relay.aclose()
        await self.chain.aclose()
        log.info("node %s: stopped", self.address)

    # ------------------------------------------------------------ events

    async def handle(self, event: ChainEvent) -> None:
        if event.name == "TaskCreated":
            self.worker.remember(event)
        elif event.name in MY_EVENTS and same_address(event.args.get("node"), self.address):
            commitment = event.commitment or b""
            if event.name in ("TaskStarted", "TaskValidated"):
                self._track(commitment)
            elif commitment in self._wake:
                self._wake[commitment].set()
        elif event.name == "TaskQueued" and self._claiming is None:
            # In the background: the node's own events must not wait behind it.
            self._claiming = asyncio.create_task(self._claim(event))

    async def tick(self) -> None:
        """Quiet moments: wake tasks to check deadlines, take out earnings."""
        for wake in self._wake.values():
            wake.set()
        if time.monotonic() - self._last_withdraw > self.settings.withdraw_interval_s:
            self._last_withdraw = time.monotonic()
            await self.withdraw()

    async def withdraw(self) -> int:
        amount = await self.chain.balance_of()
        if amount > 0:
            with contextlib.suppress(TransactionReverted):
                await self.chain.transact("withdraw")
                log.info("node %s: withdrew %d wei", self.address, amount)
        return amount

    async def _claim(self, event: ChainEvent) -> None:
        try:
            await self._maybe_take_queued(event)
        except GridtaskError as exc:
            log.warning("node %s: claiming queued work failed: %s", self.address, exc)
        finally:
            self._claiming = None

    async def _maybe_take_queued(self, event: ChainEvent) -> None:
        """A task was queued that this node may run: while idle, claim queued work. The
        contract looks at a bounded window of the queue and rotates what this node cannot
        run, so a few polls reach a runnable task behind others."""
        commitment = event.commitment or b""
        spec = self.worker.known_spec(commitment)
        if spec is not None and not set(spec.models) <= set(self.models):
            return
        for _ in range(QUEUE_POLLS):
            if self._mine:
                return
            node = await self.chain.get_node(self.address)
            task = await self.chain.get_task(commitment)
            if node is None or node.status != NodeStatus.IDLE or task is None or task.state != TaskState.QUEUED:
                return
            with contextlib.suppress(TransactionReverted):
                await self.chain.transact("takeQueuedTask")

    # ------------------------------------------------------------ tasks

    def _track(self, commitment: bytes) -> None:
        if commitment in self._mine:
            self._wake[commitment].set()
            return
        self._wake[commitment] = asyncio.Event()
        self._mine[commitment] = asyncio.create_task(self._drive(commitment))

    async def _drive(self, commitment: bytes) -> None:
        """Advance one task each time something happens to it, until it ends."""
        wake = self._wake[commitment]
        try:
            while True:
                wake.clear()
                try:
                    task = await self.chain.get_task(commitment)
                    if task is None or task.state.is_final or not same_address(task.node, self.address):
                        if task is not None:
                            log.info("task %s: ended %s", commitment.hex()[:10], task.state.name)
                        return
                    before = task.state
                    await self.worker.advance(task)
                    after = await self.chain.get_task(commitment)
                    if after is not None and after.state != before and after.state != TaskState.SCORE_READY:
                        continue  # it moved on: act on the new state at once
                except GridtaskError as exc:
                    log.warning("task %s: %s; will retry", commitment.hex()[:10], exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.settings.tick_s * 2)
        finally:
            self._mine.pop(commitment, None)
            self._wake.pop(commitment, None)

