"""The event pump of one ``Client``: ONE subscription for all its tasks, filtered on chain
to the events whose creator is its account, fed into its ``TaskRecords``; and what the
client asks of them: wait for a task's next event, read the members whose records are in
doubt (the one place the chain is read for a task's state), find one event of a task.

Its own transactions are confirmed by their events (no receipt polls) when the client takes
events unconfirmed: ``ChainClient.confirm_by`` is the records' ``confirm``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from gridtask.chain.client import ChainEvent
from gridtask.chain.events import EventFollower, address_topic
from gridtask.chain.models import TaskInfo
from gridtask.exceptions import GridtaskError
from gridtask.retry import CHAIN_UNREACHABLE
from gridtask.sdk._handle import Member, TaskHandle, timed_out
from gridtask.sdk._records import TaskRecords

if TYPE_CHECKING:
    from gridtask.sdk._client import Client

#: The longest a waiter sleeps without news before it looks again; and a doubtful record is
#: read from the chain at most this often.
WAKE_CHECK_S = 1.0
#: With push notifications the client's poll is only a safety net (a dropped socket); a missed
#: event also shows as a stage deadline passing with no news, which reads the chain.
SAFETY_POLL_S = 5.0
#: The events of this account's tasks: topic 2 is the creator for these, topic 3 for the others.
CREATOR_SECOND = ("TaskCreated", "TaskQueued", "TaskGroupValidated")
CREATOR_THIRD = ("TaskStarted", "TaskScoreReady", "TaskErrorReported", "TaskValidated", "TaskSuccess",
                 "TaskInvalidated", "TaskAborted")


class EventPump:
    """Follows the events of one client's tasks into ``records`` while started."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.records = TaskRecords()  # what the events of this account's tasks said
        self._follower: EventFollower | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe (and, with push, wait a moment for the socket: the first task's events
        then come pushed, not at the next safety poll)."""
        chain, config = self.client.chain, self.client.config
        topic, me = chain.events.topic, address_topic(self.client.identity.address)
        self._follower = EventFollower(
            chain, ws_url=config.ws_url, confirmations=config.confirmations,
            poll_interval=SAFETY_POLL_S if config.ws_url else None,
            filters=[[[topic(n) for n in CREATOR_SECOND], None, me],
                     [[topic(n) for n in CREATOR_THIRD], None, None, me]])
        await self._follower.start()
        if not config.confirmations:  # events come as soon as mined: they say how our calls went
            chain.confirm_by = self.records.confirm
        self._task = asyncio.create_task(self._pump(self._follower))
        if config.ws_url:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._follower.connected.wait(), WAKE_CHECK_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._follower is not None:
            await self._follower.stop()

    async def _pump(self, follower: EventFollower) -> None:
        async for event in follower:
            self.on_event(event)

    # ------------------------------------------------------------ events in

    def on_event(self, event: ChainEvent) -> None:
        """One event of this account's tasks, from the follower or a receipt (``TaskRecords.on_event``)."""
        self.records.on_event(event)

    def absorb(self, receipt: Any) -> None:
        """The events of one of our own transactions, from its receipt: known at once."""
        if receipt is not None:
            for event in self.client.chain.decode_receipt(receipt):
                self.on_event(event)

    def watch(self, handle: TaskHandle, key: bytes) -> None:
        """Events of any member wake the handle's one waiter."""
        self.records.watch(handle.members[0].key if handle.members else key, key)

    def unwatch(self, handle: TaskHandle) -> None:
        """Stop following the handle's members (``TaskRecords.forget``)."""
        self.records.forget([m.key for m in [*handle.members, *handle.spares]])

    # ------------------------------------------------------------ what the client asks

    async def wait(self, handle: TaskHandle, deadline: float) -> None:
        """Until an event of the handle's members, ``WAKE_CHECK_S`` at most; ``TaskTimeout``
        once ``deadline`` passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise timed_out(handle)
        wake = self.records.wake.get(handle.commitment)
        if wake is None:
            await asyncio.sleep(min(left, WAKE_CHECK_S))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), min(left, WAKE_CHECK_S))
        wake.clear()

    async def read(self, members: list[Member], deadline: float) -> dict[bytes, TaskInfo]:
        """Each member's record as its events tell it. The chain is read (every doubtful
        member in one round) only for a gap: a member never seen, one a reorg or an unknown
        event made doubtful, or one past its stage's deadline with no news, which a missed
        event would look like (read again at most every ``WAKE_CHECK_S``)."""
        doubtful = [m for m in members if self.records.doubtful(m.key, WAKE_CHECK_S)]
        if doubtful:
            keys = [m.key for m in doubtful]
            chain = self.client.chain
            found = await CHAIN_UNREACHABLE.call(lambda: chain.get_tasks(keys), deadline=deadline)
            for member, info in zip(doubtful, found, strict=True):
                if info is None:
                    raise GridtaskError(f"task {member.task_id} is not on chain")
                self.records.read(member.key, info)
        return {m.key: self.records.known[m.key] for m in members}

    async def find_event(self, member: Member, name: str) -> ChainEvent | None:
        """The member's newest ``name`` event: as the stream delivered it, else searched for on chain."""
        cached = self.records.event(member.key, name)
        if cached is not None:
            return cached
        for event in await self.client.chain.find_logs([None, member.key]):
            if event.name == name and not event.removed:
                return event
        return None

    async def abort_reason(self, member: Member) -> str:
        event = await self.find_event(member, "TaskAborted")
        return str(event.args["reason"]) if event else "unknown reason"

    async def error_code(self, member: Member) -> int:
        event = await self.find_event(member, "TaskErrorReported")
        return int(event.args["error_code"]) if event else 0
