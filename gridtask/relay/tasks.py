"""What the relay knows about tasks, learned from the chain's events rather than asked per request.

Every relay call is decided by three facts about its task: the creator, the node and the
state (and, for a result, the hash the node committed). The relay follows the contract's
task events with one subscription for the whole process (``RELAY_EVENTS``, one topic
filter) and keeps those facts in a ``TaskTable``; a request is authorized from the table,
and the chain is read (``getTask``) only

- for a task the table does not know: the relay started after the task did, the event is
  still on its way, or the entry was evicted; and
- when the table's view would refuse the request: the event that would allow it may not
  have arrived yet, so the chain is read once to be sure before refusing.

A task's state only ever goes up (CREATED < ... < SUCCESS < ABORTED < ERRORED <
INVALIDATED, and every transition the contract makes is to a higher number), so events
and reads are merged by keeping the higher state: an event that arrives late, or a read
that raced an event, never takes a task back. An event a reorg took back forgets the
task (the next request reads the chain). A table whose events stopped is never trusted
for more than a refusal, which is always re-read: a missed event costs one read, not a
wrong answer. What a stale table can still let through is harmless: parameters stored for
a task that ended, or a result whose report then fails on chain and is settled in the
background (``relay.delivery``).

Memory is bounded: an ended task is forgotten ``ended_ttl_s`` after it ended, any task
untouched for ``idle_ttl_s`` (its end was missed) is forgotten, and past ``max_tasks``
the least recently used entry goes. A forgotten task costs one read if asked about again.
Without an event source (``following`` False) nothing is kept: every lookup reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from gridtask import retry
from gridtask.chain.client import ChainEvent
from gridtask.chain.models import TaskInfo
from gridtask.types import TaskState

if TYPE_CHECKING:
    from gridtask.chain.client import ChainClient
    from gridtask.chain.events import EventFollower

__all__ = ["RELAY_EVENTS", "EventSource", "TaskTable", "TaskView", "follow", "relay_follower"]

log = logging.getLogger("gridtask.relay")

#: The events that move a task through the states the relay decides on, and the state each
#: one means. TaskCreated/TaskQueued are left out: before TaskStarted there is no node, and
#: every request about such a task is refused, which reads the chain anyway.
RELAY_EVENTS: dict[str, TaskState] = {
    "TaskStarted": TaskState.STARTED,
    "TaskScoreReady": TaskState.SCORE_READY,
    "TaskValidated": TaskState.VALIDATED,
    "TaskSuccess": TaskState.SUCCESS,
    "TaskAborted": TaskState.ABORTED,
    "TaskErrorReported": TaskState.ERRORED,
    "TaskInvalidated": TaskState.INVALIDATED,
}
# Events that carry every fact the relay needs of a task in their state, so they may add a
# task the table has not seen; the others only move a known task on.
_COMPLETE = frozenset({"TaskStarted", "TaskScoreReady"})
# States in which the committed result hash matters (the node's upload is checked against it).
_HASHED = frozenset({TaskState.SCORE_READY, TaskState.VALIDATED, TaskState.SUCCESS, TaskState.INVALIDATED})

# How often the follower polls: with a WebSocket only as a safety net for a dropped socket.
# Slower than the SDK or a node can afford: an event the relay has not yet polled costs it
# one read (the call it would allow is judged on a fresh read), never a wrong answer.
PUSH_SAFETY_POLL_S = 5.0
POLL_S = 0.25

DEFAULT_ENDED_TTL_S = 300.0
DEFAULT_IDLE_TTL_S = 3600.0
DEFAULT_MAX_TASKS = 100_000


@dataclass(frozen=True)
class TaskView:
    """What the relay knows of one task: enough to decide every call about it."""

    creator: str
    node: str
    state: TaskState
    result_hash: bytes = b""  # empty until the node scored

    @classmethod
    def of(cls, task: TaskInfo) -> TaskView:
        return cls(task.creator, task.node, task.state, task.result_hash)


class TaskReader(Protocol):
    async def get_task(self, commitment: bytes) -> TaskInfo | None: ...


class EventSource(Protocol):
    """A stream of the contract's events (``gridtask.chain.events.EventFollower``)."""

    async def start(self) -> Any: ...

    async def stop(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[ChainEvent]: ...


@dataclass
class _Entry:
    view: TaskView
    touched: float
    ended_at: float | None = None


class TaskTable:
    """Task views by key, fed by events (``apply``) and, for what it lacks, by chain reads."""

    def __init__(
        self,
        chain: TaskReader,
        *,
        ended_ttl_s: float = DEFAULT_ENDED_TTL_S,
        idle_ttl_s: float = DEFAULT_IDLE_TTL_S,
        max_tasks: int = DEFAULT_MAX_TASKS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chain = chain
        self.ended_ttl_s = ended_ttl_s
        self.idle_ttl_s = idle_ttl_s
        self.max_tasks = max_tasks
        self.clock = clock
        self.following = False
        """True while events feed the table; until then (and without a source) every lookup
        reads the chain."""
        self.reads = 0  # chain reads made, for tests and the benchmark
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()  # least recently used first
        self._ended: deque[tuple[float, bytes]] = deque()  # (ended_at, key), oldest first
        self._reading: dict[bytes, asyncio.Future[TaskView | None]] = {}

    # ------------------------------------------------------------ the request path

    async def lookup(self, key: bytes) -> tuple[TaskView | None, bool]:
        """The task and whether that view was just read from the chain (``fresh``): from the
        table when it knows the task, else read once (concurrent lookups share the read).
        ``None`` means the chain has no such task; ``ChainError`` if it cannot be reached."""
        if self.following:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                entry.touched = self.clock()
                return entry.view, False
        return await self.read(key), True

    async def read(self, key: bytes) -> TaskView | None:
        """The task as the chain has it now, merged into the table (one read per key at a time)."""
        pending = self._reading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[TaskView | None] = asyncio.get_running_loop().create_future()
        self._reading[key] = future
        try:
            self.reads += 1
            task = await self.chain.get_task(key)
            view = None if task is None else self._merge(key, TaskView.of(task))
            future.set_result(view)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        except BaseException:  # cancelled (the relay is stopping): so are those who wait on it
            future.cancel()
            raise
        finally:
            del self._reading[key]
        return view

    def reported(self, key: bytes) -> None:
        """The relay's own ``reportResultUploaded`` went through: the task is SUCCESS now,
        before its event arrives."""
        entry = self._entries.get(key)
        if entry is not None and self.following:
            self._set(key, replace(entry.view, state=max(entry.view.state, TaskState.SUCCESS)))

    # ------------------------------------------------------------ the event path

    def apply(self, event: ChainEvent) -> None:
        """One event from the follower: move the task on (or forget it, if a reorg took the
        event back)."""
        state = RELAY_EVENTS.get(event.name)
        key = event.commitment
        if state is None or key is None:
            return
        if event.removed:
            self.forget(key)
            return
        entry = self._entries.get(key)
        if entry is None:
            if event.name not in _COMPLETE:
                return  # the first request reads it whole
            view = TaskView(str(event.args["creator"]), str(event.args["node"]), state)
        else:
            view = replace(entry.view, state=max(entry.view.state, state))
            if event.name == "TaskStarted":
                view = replace(view, node=str(event.args["node"]))
        if event.name == "TaskScoreReady":
            view = replace(view, result_hash=bytes(event.args["result_hash"]))
        if view.state in _HASHED and not view.result_hash:
            self.forget(key)  # its score was missed: the next request reads it whole
            return
        self._set(key, view)

    def forget(self, key: bytes) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything (the event stream (re)starts: what was read before may have
        missed events the stream will not replay)."""
        self._entries.clear()
        self._ended.clear()

    # ------------------------------------------------------------ bookkeeping

    def _merge(self, key: bytes, read: TaskView) -> TaskView:
        """A chain read joins the table unless an event already took the task further."""
        entry = self._entries.get(key)
        if entry is not None and entry.view.state > read.state:
            return entry.view
        if self.following:
            self._set(key, read)
        return read

    def _set(self, key: bytes, view: TaskView) -> None:
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(view, now)
        else:
            self._entries.move_to_end(key)
        entry.view, entry.touched = view, now
        if view.state.is_final and entry.ended_at is None:
            entry.ended_at = now
            self._ended.append((now, key))
        self._evict(now)

    def _evict(self, now: float) -> None:
        """Ended tasks after ``ended_ttl_s``, untouched ones after ``idle_ttl_s``, and the least
        recently used past ``max_tasks``; amortized O(1) per call."""
        while self._ended and self._ended[0][0] + self.ended_ttl_s < now:
            ended_at, key = self._ended.popleft()
            entry = self._entries.get(key)
            if entry is not None and entry.ended_at == ended_at:
                self.forget(key)
        while self._entries:
            oldest, entry = next(iter(self._entries.items()))
            if len(self._entries) <= self.max_tasks and entry.touched + self.idle_ttl_s >= now:
                break
            self.forget(oldest)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


async def follow(table: TaskTable, source: EventSource) -> None:
    """Feed ``table`` from ``source`` until cancelled. Starting is retried while the chain is
    away (the relay serves meanwhile, reading per request); once the stream runs, the table
    is cleared (what was read before may have missed events the stream starts after) and
    trusted."""
    await retry.EVENT_POLL.call(source.start, deadline=float("inf"))
    try:
        table.clear()
        table.following = True
        log.info("relay: following task events")
        async for event in source:
            table.apply(event)
    finally:
        table.following = False
        with contextlib.suppress(Exception):
            await source.stop()


def relay_follower(client: ChainClient, *, ws_url: str = "", confirmations: int = 0) -> EventFollower:
    """The relay's one subscription: the contract's ``RELAY_EVENTS`` and nothing else (one
    topic filter, so the chain filters and the relay decodes only what it uses)."""
    from gridtask.chain.events import EventFollower

    topics = [client.events.topic(name) for name in RELAY_EVENTS]
    return EventFollower(client, ws_url=ws_url, confirmations=confirmations, filters=[[topics]],
                         poll_interval=PUSH_SAFETY_POLL_S if ws_url else POLL_S)
