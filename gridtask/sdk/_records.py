"""What the events of one account's tasks say, kept by its ``Client``: each followed task's
record (a ``TaskInfo`` as ``getTask`` would give it), its events (abort reasons, error
codes, a group's outcome), the hash of the block that created it (its sample is drawn
from it) and, per transaction, the events it logged (so that its sender needs no receipt).

The chain is read only where these records are in doubt (``TaskRecords.doubtful``): a task
never seen, one that a reorg or an event out of order made doubtful, or one past its
stage's deadline with no news, which is what a missed event looks like.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import OrderedDict
from typing import Any

from gridtask.chain.client import ChainEvent
from gridtask.chain.models import ZERO_ADDRESS, TaskInfo
from gridtask.sdk._task import ABORT_GRACE_S, STALLABLE
from gridtask.types import TaskState

TX_EVENTS_KEPT = 512  # recent transactions' events, for a sender that asks after the push came
#: What each event of a task says its state is now.
STATE_OF = {
    "TaskCreated": TaskState.CREATED, "TaskQueued": TaskState.QUEUED, "TaskStarted": TaskState.STARTED,
    "TaskScoreReady": TaskState.SCORE_READY, "TaskValidated": TaskState.VALIDATED,
    "TaskSuccess": TaskState.SUCCESS, "TaskAborted": TaskState.ABORTED, "TaskErrorReported": TaskState.ERRORED,
    "TaskInvalidated": TaskState.INVALIDATED,
}


class TaskRecords:
    """The followed tasks' records, fed by events; ``wake[key]`` is set by each event of ``key``."""

    def __init__(self) -> None:
        self.wake: dict[bytes, asyncio.Event] = {}  # followed task key -> its handle's waiter
        self.known: dict[bytes, TaskInfo] = {}  # task key -> its record as the events tell it
        self._stale: set[bytes] = set()  # keys whose record is in doubt
        self._read_at: dict[bytes, float] = {}  # key -> when its record was last read from the chain
        self._events_of: dict[bytes, list[ChainEvent]] = {}
        self._created_in: dict[bytes, bytes] = {}  # key -> the hash of the block that created it
        self._tx_events: OrderedDict[bytes, list[ChainEvent]] = OrderedDict()
        self._tx_waiters: dict[bytes, asyncio.Event] = {}

    # ------------------------------------------------------------ following

    def watch(self, first: bytes, key: bytes) -> None:
        """Follow ``key``; its events wake the waiter of ``first`` (a group's original)."""
        self.wake[key] = self.wake.setdefault(first, asyncio.Event())

    def forget(self, keys: list[bytes]) -> None:
        """Stop following; what their events said goes too (bounded memory: a task followed
        again is read from the chain)."""
        for key in keys:
            self.wake.pop(key, None)
            for table in (self.known, self._events_of, self._created_in, self._read_at):
                table.pop(key, None)
            self._stale.discard(key)

    # ------------------------------------------------------------ events in

    def on_event(self, event: ChainEvent) -> None:
        """One event (from the stream or a receipt): kept for its transaction's sender,
        applied to each followed task it names, their waiter woken. Idempotent."""
        if not event.removed:
            seen = self._tx_events.setdefault(event.transaction_hash, [])
            if all(e.key != event.key for e in seen):
                seen.append(event)
            while len(self._tx_events) > TX_EVENTS_KEPT:
                self._tx_events.popitem(last=False)
            waiter = self._tx_waiters.get(event.transaction_hash)
            if waiter is not None:
                waiter.set()
        for key in event.task_keys:
            if key not in self.wake:
                continue  # not a task followed now: its record is read if it ever is
            history = self._events_of.setdefault(key, [])
            if event.removed:  # a reorg took it back: what it said is in doubt now
                self._events_of[key] = [e for e in history if e.key != event.key]
                self._stale.add(key)
                if event.name == "TaskCreated":
                    self._created_in.pop(key, None)
            elif all(e.key != event.key for e in history):
                history.append(event)
                self._apply(key, event)
            self.wake[key].set()

    def _apply(self, key: bytes, event: ChainEvent) -> None:
        """What the event says the record is now. States only move forward (an event pushed
        late never takes one back); a record not known yet is in doubt (read from the chain)."""
        if event.name == "TaskCreated":
            if event.block_hash:
                self._created_in[key] = event.block_hash
            if key not in self.known:
                timeout = int(event.args["timeout"])
                self.known[key] = TaskInfo(
                    commitment=key, creator=str(event.args["creator"]), node=ZERO_ADDRESS,
                    fee=int(event.args["fee"]), state=TaskState.CREATED, deadline=int(time.time()) + timeout,
                    timeout=timeout, score=bytes(32), result_hash=bytes(32))
            return
        state = STATE_OF.get(event.name)
        if state is None:
            return
        info = self.known.get(key)
        if info is None:
            self._stale.add(key)
            return
        if not moves_on(info.state, state):
            return
        changes: dict[str, Any] = {"state": state}
        if "node" in event.args:
            changes["node"] = str(event.args["node"])
        if event.name == "TaskScoreReady":
            changes["score"], changes["result_hash"] = bytes(event.args["score"]), bytes(event.args["result_hash"])
        if not state.is_final:  # the stage's deadline by our clock (a log does not carry its block's time)
            changes["deadline"] = int(time.time()) + info.timeout
        self.known[key] = dataclasses.replace(info, **changes)

    # ------------------------------------------------------------ what is known

    def doubtful(self, key: bytes, recheck_s: float) -> bool:
        """Whether ``key``'s record must be read from the chain: never seen, in doubt, or past
        its stage's deadline with no news (read again at most every ``recheck_s``)."""
        info = self.known.get(key)
        if info is None or key in self._stale:
            return True
        overdue = info.state in STALLABLE and time.time() > info.deadline + ABORT_GRACE_S
        return overdue and time.monotonic() - self._read_at.get(key, -float("inf")) >= recheck_s

    def read(self, key: bytes, info: TaskInfo) -> None:
        """The record as the chain just gave it."""
        self.known[key] = info
        self._stale.discard(key)
        self._read_at[key] = time.monotonic()

    def doubt(self, *keys: bytes) -> None:
        """Something we sent was refused: read these again before acting on them."""
        self._stale.update(keys)

    def event(self, key: bytes, name: str) -> ChainEvent | None:
        """The task's newest ``name`` event as the stream delivered it."""
        return next((e for e in reversed(self._events_of.get(key, [])) if e.name == name), None)

    def creation_hash(self, key: bytes) -> bytes | None:
        return self._created_in.get(key)

    def forget_creation(self, key: bytes) -> None:
        """The contract disagrees with our draw (a reorg moved the creation): ask it instead."""
        self._created_in.pop(key, None)

    async def confirm(self, tx_hash: bytes, timeout: float) -> list[ChainEvent] | None:
        """The events a transaction of ours logged, once delivered (None if they did not come
        within ``timeout``: the chain client then reads the receipt)."""
        if tx_hash not in self._tx_events:
            waiter = self._tx_waiters.setdefault(tx_hash, asyncio.Event())
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), timeout)
            finally:
                self._tx_waiters.pop(tx_hash, None)
        return self._tx_events.get(tx_hash)


def moves_on(old: TaskState, new: TaskState) -> bool:
    """Whether a task in ``old`` can be in ``new`` later: forward only; an end is an end, but
    for a delivered result later shown wrong (a dispute)."""
    if old == TaskState.SUCCESS and new == TaskState.INVALIDATED:
        return True
    if old == new or old.is_final:
        return False
    return new.is_final or new > old
