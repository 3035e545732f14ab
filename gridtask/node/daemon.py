"""The node daemon: start-up, main loop, shutdown.

Start-up joins the network (or resumes a paused node) and picks up, from the chain,
every task that is still its own, so a restart loses nothing. The main loop follows
the contract's events that concern this node, and only those (``node_filters``: the
chain filters them, pushed over WebSocket, so an idle node receives nothing at all for
other nodes' tasks): a ``TaskStarted`` or ``TaskValidated`` naming this node wakes its
task; a ``TaskQueued`` whose key model it serves makes it claim queued work while idle
(the contract's bounded selection can miss an idle node; this is how it never strands a
task). A task's requirements (its ``TaskCreated``) are fetched by its key for its own
tasks only. What has no topic for the node (an abort by someone else, a group's verdict)
it learns from its own events or at its next tick, when it re-reads its own tasks.

A signal sets a flag (``shutdown``): whatever the node is waiting on (start-up, a retry
back-off, a relay long-poll, a chain that is down, a task in flight) is cancelled at
once, because everything it needs to finish later is on disk before each step (its
sealed result before ``submitScore``, its event cursor after each poll) or on chain.
What is left resumes on restart.

Outcomes. The node says in its log what happens to it and to its tasks, and reacts: a
slash (how much, why, the stake left), a task invalidated or aborted by others, the
outcome of a validation that covered its task, a pause. A node paused with enough stake
(its task was aborted past a deadline: it lost its turn) takes work again at once; one
whose stake fell below the minimum stays paused, takes nothing, and says how to top up,
until ``NodeToppedUp`` brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from gridtask import retry
from gridtask.chain.client import ChainClient, ChainEvent
from gridtask.chain.events import EventFollower, address_topic, model_topic
from gridtask.chain.models import TaskInfo, same_address
from gridtask.exceptions import ChainError, GridtaskError, TransactionReverted
from gridtask.keys import Identity
from gridtask.node.executors.base import ExecutorSet
from gridtask.node.settings import NodeSettings
from gridtask.node.worker import TaskWorker
from gridtask.relay.client import RelayClient
from gridtask.types import NodeStatus, TaskState

log = logging.getLogger("gridtask.node")

# TaskNetwork.vy's queue look: the first QUEUE_SCAN tasks, then SWEEP_SCAN from a sweep cursor
# (tests/e2e/test_daemon_claim.py checks these against the source).
QUEUE_SCAN = 4
SWEEP_SCAN = 4
MAX_QUEUED_SEEN = 1024  # TaskQueued events kept for claiming while the node is busy
CLOSE_TIMEOUT_S = 1.0  # each connection closed at shutdown; the whole stop stays well under 5 s
#: Task events with the node indexed second (topic2); TaskAborted's topic2 is who aborted (this node's own aborts).
MY_EVENTS = ("TaskStarted", "TaskValidated", "TaskScoreReady", "TaskSuccess", "TaskAborted", "TaskErrorReported",
             "TaskInvalidated")
NODE_EVENTS = ("NodeSlashed", "NodePaused", "NodeToppedUp")  # about one node, indexed first (topic1)
#: The events that end a task, and the state each leaves it in: the node need not read it again.
ENDS = {"TaskSuccess": TaskState.SUCCESS, "TaskInvalidated": TaskState.INVALIDATED,
        "TaskErrorReported": TaskState.ERRORED, "TaskAborted": TaskState.ABORTED}
#: The event poll while the chain pushes: a safety net only (the chain sends this node's events as
#: they happen; a socket that drops is found by its keepalive, reopened with a catch-up read, and
#: polled every second meanwhile). With the withdraw check, an idle node's whole cost.
SAFETY_POLL_S = 30.0
#: What the operator runs to add stake (printed, with the amount missing, when the node is paused for low stake).
TOP_UP_COMMAND = "gridtask node top-up --amount {amount}"
ETHER = 10**18


class NodeDaemon:
    """``await NodeDaemon(settings, executors).serve()`` runs a node until ``shutdown()``."""

    def __init__(self, settings: NodeSettings, executors: ExecutorSet) -> None:
        self.settings = settings
        self.executors = executors
        self.identity = Identity.from_hex(settings.network.private_key)
        self.chain = ChainClient.from_config(settings.network, self.identity)
        self.relay = RelayClient(settings.network.relay_url, self.identity)
        state_dir = settings.state_dir / self.identity.address.lower()
        self.should_exit = asyncio.Event()
        self.worker = TaskWorker(self.chain, self.relay, executors, state_dir / "results", stop=self.should_exit)
        for executor in executors.executors():  # those that fetch bundles get the relay and a place for them
            bind = getattr(executor, "bind", None)
            if bind is not None:
                bind(self.relay, state_dir)
        self.models = executors.all_models()
        self.follower = EventFollower(
            self.chain, ws_url=settings.network.ws_url, cursor_path=state_dir / "cursor",
            confirmations=settings.network.confirmations, filters=node_filters(self.chain, self.address, self.models),
            poll_interval=SAFETY_POLL_S if settings.network.ws_url else None,
        )
        self._mine: dict[bytes, asyncio.Task[None]] = {}  # every task of this node not ended yet
        # Those it computes (STARTED): the contract keeps the node BUSY only then, so a node whose
        # tasks are all scored (waiting for validation, delivering) takes queued work again.
        self._computing: set[bytes] = set()
        self._wake: dict[bytes, asyncio.Event] = {}
        self._last_withdraw = time.monotonic()
        self._owed = True  # something may be owed to this node (at start, and once a task of its ended)
        self._claiming: asyncio.Task[None] | None = None
        self._queued: dict[bytes, ChainEvent] = {}  # TaskQueued not yet claimed, oldest first
        self._stake_low = False  # below the contract's minimum: paused, takes nothing until topped up
        self._reports: set[asyncio.Task[None]] = set()  # outcome reports running beside the tasks
        self._ended: dict[bytes, TaskState] = {}  # tasks of this node an event said ended, and how
        self._model_topics = {model_topic(m) for m in self.models}

    @property
    def address(self) -> str:
        return self.identity.address

    # ------------------------------------------------------------ lifecycle

    async def serve(self) -> None:
        """Start-up, then the main loop, until ``shutdown()``; then close everything.

        A stop request cancels whichever of the two is running, wherever it waits."""
        asyncio.get_running_loop().set_default_executor(DetachedThreads())
        work = asyncio.create_task(self._start_and_loop(), name="node")
        stop = asyncio.create_task(self.should_exit.wait(), name="node-stop")
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                log.info("node %s: stopping", self.address)
                work.cancel()
            try:
                await work
            except (asyncio.CancelledError, retry.Interrupted):
                if not self.should_exit.is_set():
                    raise  # cancelled from outside, not stopped by us
            finally:
                await self.shutdown_cleanup()

    async def _start_and_loop(self) -> None:
        await self.startup()
        await self.main_loop()

    def shutdown(self) -> None:
        """Ask the node to stop (signal handlers call this); ``serve()`` returns soon after."""
        self.should_exit.set()

    async def startup(self) -> None:
        """Load the models, then join (or resume) and pick up this node's tasks. A chain that
        does not answer is waited for, not fatal: a node started before its chain (or during
        an outage, or by a service manager at boot) comes up when the chain does."""
        await self.load_models()
        for step in (self._prepare_executors, self.follower.start, self._join_and_recover):
            async for attempt in retry.CHAIN_UNREACHABLE.attempts(deadline=math.inf, stop=self.should_exit):
                with attempt:
                    await step()
        for executor in self.executors.executors():  # models found while running (new OpenGPU sources)
            follow = getattr(executor, "follow", None)
            if follow is not None:
                self._reports.add(asyncio.create_task(follow(self.serve_models), name="node-follow"))
        log.info("node %s: ready", self.address)

    async def _prepare_executors(self) -> None:
        """Executors whose models are found at run time (the OpenGPU sources a node serves) load
        those that exist now, so that the node joins announcing them."""
        for executor in self.executors.executors():
            prepare = getattr(executor, "prepare", None)
            if prepare is not None:
                await prepare()
                self.executors.refresh(executor)
        self._set_models(self.executors.all_models())

    async def serve_models(self, models: list[str]) -> None:
        """Serve more models while running (a source published after the node joined): announce
        them on chain, then take their tasks and follow their queue."""
        new = [m for m in models if m not in self.models]
        if not new:
            return
        await self.chain.add_models(new)
        for executor in self.executors.executors():
            self.executors.refresh(executor)
        self._set_models(self.executors.all_models())
        log.info("node %s: now serving %s", self.address, ", ".join(new))

    def _set_models(self, models: list[str]) -> None:
        self.models = models
        self._model_topics = {model_topic(m) for m in models}
        self.follower.set_filters(node_filters(self.chain, self.address, models))

    async def _join_and_recover(self) -> None:
        """Each step reads the chain first, so repeating it after a failure is harmless."""
        node = await self.chain.get_node(self.address)
        if node is None:
            log.info("node %s: joining with models %s", self.address, self.models)
            await self.chain.join(
                gpu=self.settings.gpu, vram=self.settings.vram, models=self.models,
                public_key=self.identity.encryption_public_key, version=self.settings.version,
                stake=self.settings.stake,
            )
        elif node.status == NodeStatus.LEAVING:
            log.warning("node %s: this node has quit: it takes no tasks; its stake is paid out by a withdraw "
                        "once released (release_at on chain), after which the key may join again", self.address)
        elif not await self._check_stake() and node.status == NodeStatus.PAUSED:
            await self.chain.resume()
        await self.recover()
        await self.sweep_queue()  # work queued while this node was away waits no longer

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
                self.worker.seen_at(task.commitment, event.block_number)
                self._track(task.commitment)

    async def main_loop(self) -> None:
        """Events as they come, and a tick on the node's own clock while it has something to look
        after (its tasks, queued work, earnings to take out): an idle node only waits."""
        next_tick = time.monotonic() + self.settings.tick_s
        while not self.should_exit.is_set():
            ticking = bool(self._mine or self._queued or self._owed)
            event = await self.follower.next(timeout=max(0.0, next_tick - time.monotonic()) if ticking else None)
            try:
                if event is not None:
                    await self.handle(event)
                if time.monotonic() >= next_tick:  # on its own clock, however busy the chain
                    next_tick = time.monotonic() + self.settings.tick_s
                    await self.tick()
            except ChainError as exc:
                log.warning("node %s: chain error: %s", self.address, exc)

    async def shutdown_cleanup(self) -> None:
        """Cancel the tasks in flight and close connections, each close bounded in time.

        Nothing needs saving here: results and the cursor are written before they matter."""
        pending = [t for t in [self._claiming, *self._mine.values(), *self._reports] if t is not None]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)
        # executors that hold connections of their own (the source executor's registry reader)
        closers = [e.aclose for e in self.executors.executors() if hasattr(e, "aclose")]
        for close in (self.follower.stop, self.relay.aclose, self.chain.aclose, *closers):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close(), CLOSE_TIMEOUT_S)
        log.info("node %s: stopped", self.address)

    # ------------------------------------------------------------ events

    async def handle(self, event: ChainEvent) -> None:
        """One event the filters let through: this node's task and node events, and queued tasks
        of its models. (Checked again here, so that the daemon stays right whatever it is fed.)"""
        commitment = event.commitment or b""
        if event.removed:  # a reorg took it back (gridtask.chain.events): re-read the task, act on nothing
            self._queued.pop(commitment, None)
            self._ended.pop(commitment, None)
            if commitment in self._wake:
                self._wake[commitment].set()
            return
        if event.name == "TaskQueued":
            if bytes(event.args.get("key_model", b"")) in self._model_topics:
                self._queue_seen(event)
        elif event.name == "TaskAborted":  # (the filters bring this node's own aborts)
            self._queued.pop(commitment, None)
            self._ends(event)
        elif event.name in MY_EVENTS and same_address(event.args.get("node"), self.address):
            if event.name == "TaskStarted":
                self._queued.pop(commitment, None)
                self.worker.seen_at(commitment, event.block_number)
                self._computing.add(commitment)
                self._track(commitment)
            elif event.name == "TaskValidated":
                self._track(commitment)
                self._report(self._group_verdict(event, accepted=True))
            elif event.name == "TaskInvalidated":
                log.warning("task %s: invalidated: %s; its fee went back to its creator",
                            commitment.hex()[:10], event.args.get("reason", ""))
                self._report(self._group_verdict(event, accepted=False))
                self._ends(event)
            else:  # TaskScoreReady: this node's own doing, nothing to look at
                self._ends(event)
        elif event.name in NODE_EVENTS and same_address(event.args.get("node"), self.address):
            await self._node_event(event)

    def _ends(self, event: ChainEvent) -> None:
        """An event that ends a task of this node: its driver stops without reading it again."""
        commitment = event.commitment or b""
        if event.name in ENDS and commitment in self._wake:
            self._ended[commitment] = ENDS[event.name]
            self._wake[commitment].set()

    def _queue_seen(self, event: ChainEvent) -> None:
        self._queued[event.commitment or b""] = event
        self.worker.seen_at(event.commitment or b"", event.block_number)
        while len(self._queued) > MAX_QUEUED_SEEN:  # the oldest are the likeliest taken
            del self._queued[next(iter(self._queued))]
        self._claim_queued()

    async def tick(self) -> None:
        """Quiet moments: wake tasks to check deadlines, claim queued work a failed claim
        left behind, take out earnings."""
        for wake in self._wake.values():
            wake.set()
        self._claim_queued()
        if self._owed and time.monotonic() - self._last_withdraw > self.settings.withdraw_interval_s:
            self._last_withdraw = time.monotonic()
            self._owed = False
            await self.withdraw()

    async def withdraw(self) -> int:
        amount = await self.chain.balance_of()
        if amount > 0:
            with contextlib.suppress(TransactionReverted):
                await self.chain.withdraw()
                log.info("node %s: withdrew %d wei", self.address, amount)
        return amount

    # ------------------------------------------------------------ outcomes and stake

    async def _node_event(self, event: ChainEvent) -> None:
        """A slash, a pause or a top-up of this node: say so, and take work again when it may."""
        if event.name == "NodeSlashed":
            node = await self.chain.get_node(self.address)
            commitment = event.commitment or b""
            log.warning("node %s: SLASHED %s ETH (%d wei) for task %s: %s; stake left %s ETH",
                        self.address, _eth(int(event.args["amount"])), int(event.args["amount"]),
                        commitment.hex()[:10], event.args.get("reason", ""), _eth(node.stake if node else 0))
            await self._check_stake()
        elif event.name == "NodePaused":
            if await self._check_stake():
                return  # stays paused until topped up (said by _check_stake)
            why = await self._why_paused(event)
            log.warning("node %s: paused by the contract%s; resuming", self.address, why)
            await self._resume()
        elif event.name == "NodeToppedUp":
            log.info("node %s: topped up: stake %s ETH", self.address, _eth(int(event.args["stake"])))
            if not await self._check_stake():
                await self._resume()

    async def _check_stake(self) -> bool:
        """Whether this node's stake is below the contract's minimum (then it takes nothing:
        the contract keeps it paused, and asking for work would only be refused). Says so,
        with what to do, when it first finds it low."""
        node = await self.chain.get_node(self.address)
        minimum = await self.chain.min_stake()
        low = node is not None and node.stake < minimum
        if low and not self._stake_low:
            log.error("node %s: stake %s ETH is below the minimum %s ETH: the node is paused and takes no "
                      "tasks until it is topped up; top up with `%s`", self.address,
                      _eth(node.stake if node else 0), _eth(minimum),
                      TOP_UP_COMMAND.format(amount=_eth(minimum - (node.stake if node else 0))))
        elif not low and self._stake_low:
            log.info("node %s: stake back above the minimum", self.address)
        self._stake_low = low
        return low

    async def _resume(self) -> None:
        node = await self.chain.get_node(self.address)
        if node is not None and node.status == NodeStatus.PAUSED:
            with contextlib.suppress(TransactionReverted):  # resumed meanwhile (a restart's start-up)
                await self.chain.resume()
                log.info("node %s: taking tasks again", self.address)
        self._claim_queued()

    async def _why_paused(self, event: ChainEvent) -> str:
        """The reason a pause came with, from the other events of its transaction."""
        receipt = await self.chain.rpc(
            lambda: self.chain.w3.eth.get_transaction_receipt(event.transaction_hash),  # type: ignore[arg-type]
            "eth_getTransactionReceipt")
        for other in self.chain.decode_receipt(receipt):
            if other.name == "TaskAborted":
                return (f": task {(other.commitment or b'').hex()[:10]} ended past its deadline "
                        f"({other.args.get('reason', '')}), so this node lost its turn")
        return " (a pause it had pending, e.g. for a task that ended past its deadline while it was busy)"

    def _report(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Say something about a task beside it, never holding up the task itself."""
        task = asyncio.create_task(coroutine)
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _group_verdict(self, event: ChainEvent, *, accepted: bool) -> None:
        """Whether this node's task was validated with a group of three, and what the group said
        of its result: from the transaction of its own ``TaskValidated`` / ``TaskInvalidated``
        (a group's verdict names no node in its topics, so the node does not follow it)."""
        try:
            receipt = await self.chain.rpc(
                lambda: self.chain.w3.eth.get_transaction_receipt(event.transaction_hash),  # type: ignore[arg-type]
                "eth_getTransactionReceipt")
        except GridtaskError as exc:
            log.debug("task %s: no receipt for its validation: %s", (event.commitment or b"").hex()[:10], exc)
            return
        for other in self.chain.decode_receipt(receipt):
            outcome = other.group_outcome
            if outcome is not None and (event.commitment or b"") in other.task_keys:
                verdict = "accepted" if accepted else "REJECTED: it disagreed with the majority"
                log.info("task %s: validated against other runs: %s; this node's result %s",
                         (event.commitment or b"").hex()[:10], outcome.name, verdict)

    # ------------------------------------------------------------ claiming

    def _claim_queued(self) -> None:
        """Claim the queued tasks seen so far, in the background (the node's own events must
        not wait behind it). One claimer at a time; a ``TaskQueued`` that arrives while it
        runs is in ``_queued`` and gets its turn, so none is dropped. Nothing while the
        stake is below the minimum: the node is paused then."""
        if self._stake_low:
            return
        if self._queued and not self._computing and (self._claiming is None or self._claiming.done()):
            self._claiming = asyncio.create_task(self._claim_loop(), name="node-claim")

    async def _claim_loop(self) -> None:
        while self._queued and not self._computing:
            seen = list(self._queued)
            try:
                if await self._any_claimable(seen) and await self.sweep_queue():
                    return  # busy now: what is left is looked at again once this task is scored
            except GridtaskError as exc:
                log.warning("node %s: claiming queued work failed: %s", self.address, exc)
                return  # kept in _queued: tried again after the next event or task
            for commitment in seen:  # one sweep looked at every task queued before it began
                self._queued.pop(commitment, None)

    async def _any_claimable(self, commitments: list[bytes]) -> bool:
        """Whether one of these tasks is still queued and asks only for models served here (its
        key model is; a task of several models may ask for one this node lacks)."""
        for commitment in commitments:
            task = await self.chain.get_task(commitment)
            if task is None or task.state != TaskState.QUEUED:
                continue
            if set((await self.worker.spec(commitment)).models) <= set(self.models):
                return True
        return False

    async def sweep_queue(self) -> bool:
        """While idle, look at the queue until a task starts here (True) or every queued task
        has been looked at once (``sweep_polls``), however many unrunnable ones come first:
        each look moves the contract's sweep cursor on by SWEEP_SCAN tasks."""
        for _ in range(sweep_polls(await self.chain.queued_count())):
            if self._computing or self.should_exit.is_set() or self._stake_low:
                return bool(self._computing)
            node = await self.chain.get_node(self.address)
            if node is None or node.status != NodeStatus.IDLE:
                return False
            with contextlib.suppress(TransactionReverted):
                if await self.chain.take_queued_task():
                    return True
        return False

    # ------------------------------------------------------------ tasks

    def _track(self, commitment: bytes) -> None:
        if commitment in self._mine:
            self._wake[commitment].set()
            return
        self._wake[commitment] = asyncio.Event()
        self._mine[commitment] = asyncio.create_task(self._drive(commitment))

    async def _drive(self, commitment: bytes) -> None:
        """Advance one task each time something happens to it, until it ends. Several run at
        once: one being computed, others scored (waiting for validation) or delivering.

        The task is read from the chain when woken, and after a step whose outcome the node's
        own transaction does not tell; an event that ends it ends this without a read."""
        wake = self._wake[commitment]
        task: TaskInfo | None = None
        fresh = False  # the task as just read: no need to read it again
        try:
            while not self.should_exit.is_set():
                wake.clear()
                try:
                    if commitment in self._ended:  # its last event said how it ended
                        return await self._end(commitment, self._ended.pop(commitment), told=True)
                    if not fresh:
                        task = await self.chain.get_task(commitment)
                    fresh = False
                    if task is None or task.state.is_final or not same_address(task.node, self.address):
                        if task is not None:
                            await self._end(commitment, task.state)
                        return
                    before = task.state
                    self._computing_if(commitment, before)
                    left = await self.worker.advance(task)
                    if commitment in self._ended:
                        continue
                    if left is None:  # not told by its own transaction: read it
                        task = await self.chain.get_task(commitment)
                        left = task.state if task is not None else None
                        fresh = task is not None and left not in (before, TaskState.SCORE_READY)
                    elif left.is_final:
                        return await self._end(commitment, left, told=True)
                    if left is not None:
                        self._computing_if(commitment, left)
                        if before == TaskState.STARTED and left == TaskState.SCORE_READY:
                            self._claim_queued()  # scored: the node is free for queued work again
                    if fresh:
                        continue  # it moved on (or ended): act on the state just read, at once
                except GridtaskError as exc:
                    log.warning("task %s: %s; will retry", commitment.hex()[:10], exc)
                    fresh = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.settings.tick_s * 2)
        finally:
            self._mine.pop(commitment, None)
            self._wake.pop(commitment, None)
            self._ended.pop(commitment, None)
            self._computing.discard(commitment)
            self._owed = True  # its fee, or a share of a slashed stake, may be waiting
            if not self.should_exit.is_set():
                self._claim_queued()  # queued work seen while busy, if the contract left any

    async def _end(self, commitment: bytes, state: TaskState, *, told: bool = False) -> None:
        """Say how a task of this node ended (or that it is no longer its own). ``told``: by an
        event of this node's (an abort among them is its own: no need to ask who)."""
        log.info("task %s: ended %s", commitment.hex()[:10], state.name)
        if state == TaskState.ABORTED and not told:
            await self._say_why_aborted(commitment)
        if state.is_final:
            self.worker.forget(commitment)  # nothing more to deliver

    async def _say_why_aborted(self, commitment: bytes) -> None:
        """Who aborted this node's task, and why: ``TaskAborted`` names no node, so the node reads
        it only for its own task, once it found it aborted (one log search, newest blocks first)."""
        try:
            found = await self.chain.find_logs([self.chain.events.topic("TaskAborted"), commitment], first=True)
        except GridtaskError:
            return  # only words: the task has ended either way
        for event in found[-1:]:
            if not same_address(event.args.get("by"), self.address):
                log.warning("task %s: aborted by %s: %s", commitment.hex()[:10], event.args.get("by"),
                            event.args.get("reason", ""))

    def _computing_if(self, commitment: bytes, state: TaskState) -> None:
        """Keep ``_computing`` in step with the task's state as last read."""
        if state == TaskState.STARTED:
            self._computing.add(commitment)
        else:
            self._computing.discard(commitment)


def node_filters(chain: ChainClient, address: str, models: Sequence[str]) -> list[list[Any]]:
    """What a node follows (topic filters, see ``gridtask.chain.events``): task events naming it
    as their node, its own node events, and ``TaskQueued`` of the models it serves (the task's
    key model: a node that can run a task serves it). Nothing about other nodes' tasks."""
    topic, me = chain.events.topic, address_topic(address)
    filters: list[list[Any]] = [
        [[topic(name) for name in MY_EVENTS], None, me],
        [[topic(name) for name in NODE_EVENTS], me],
    ]
    if models:  # (an empty list of topics would mean any model)
        filters.append([topic("TaskQueued"), None, None, [model_topic(m) for m in models]])
    return filters


def _eth(wei: int) -> str:
    return f"{wei / ETHER:.6g}"


def sweep_polls(queued: int) -> int:
    """How many looks reach every one of ``queued`` tasks: the first look sees the first
    QUEUE_SCAN, each look also sweeps SWEEP_SCAN more."""
    return 1 + max(0, -(-(queued - QUEUE_SCAN) // SWEEP_SCAN))


class DetachedThreads(ThreadPoolExecutor):
    """The node's default executor: each blocking call (model loading, inference) in a
    daemon thread, so that a stop request never waits for it, and neither does the
    interpreter's exit. The work is lost, which is fine: the task resumes on restart."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=work, name="node-blocking", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to wait for: the threads end with their call or with the process."""

