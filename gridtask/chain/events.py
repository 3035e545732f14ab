"""Following the contract's events: pushed over WebSocket when the chain offers it,
and always polled with ``eth_getLogs`` from a saved block cursor as the safety net.

The push path (``eth_subscribe`` to the contract's logs) makes a node or an
application react within milliseconds; the poll path makes sure nothing is missed
when the socket drops, the chain is unreachable for a while, or the process restarts
(the cursor is saved to disk, so a restarted follower continues where it stopped).
While the socket is up, the poll runs every ``poll_interval`` (a party that trusts the push
can make that long); while it is down, at least every PUSH_SLOW_POLL_S.

Reorgs. A chain may replace its newest blocks. The follower remembers the hash of each
block it has read up to (and of every block that held an event it delivered); on each
poll it checks that the block at its cursor is still on the chain, and if not, walks
back to the newest block that still is and reads forward again from there. Every
event it delivered from a block that is no longer on the chain is delivered once more
with ``removed=True`` (an event pushed with ``removed`` by the node is handled the same
way); the events of the new blocks are delivered as usual, including one that was
removed and then included again (it is then in another block). Consumers that re-read
the chain's state on each event (the node daemon, the SDK) need nothing else.

Every event of the contract's ABI is decoded the same way (``ChainEvent``: name, args,
block, transaction, log index), so new events need no code here. Most name one task by its
key in ``commitment``; ``TaskGroupValidated`` names three in ``keys`` (``event.task_keys``
covers both) and says how its group ended (``event.group_outcome``); ``NodeSlashed`` names
the node and the task that cost it; ``NodeQuit`` says when the stake is released
(``release_at``). ``TaskCreated`` carries no selection seed any more: a task is selected
by ``startTask`` in a later block.

With ``confirmations=N`` only events at least N blocks deep are delivered (the poll
reads up to ``head - N``; a push then only wakes the poll), so a reorg shallower than
N is never seen at all. The devnet uses 0.

Filters. A party that needs only some events (a node: those naming it; an application:
those of its own tasks) passes ``filters``: each one an ``eth_getLogs`` ``topics`` list
(a position is a topic, a list of topics = any of them, or ``None`` = any), always for the
contract's address only. The chain does the filtering: a poll sends one ``eth_getLogs``
per filter per new block range, and the push path opens one ``eth_subscribe("logs")`` per
filter, so a block with nothing for us costs us no message at all. An event that two
filters match is delivered once. ``set_filters`` replaces them at run time; the new ones
apply from the cursor on (events already behind it are not searched again).
``address_topic`` and ``model_topic`` build the topics a filter names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import websockets
from hexbytes import HexBytes

from gridtask import retry
from gridtask.chain import artifact
from gridtask.chain.client import ChainClient, ChainEvent, to_bytes32
from gridtask.exceptions import ChainError, ConfigError

log = logging.getLogger("gridtask.chain.events")

MAX_BLOCK_RANGE = 5_000
#: How deep a reorg the follower can undo event by event (blocks); deeper ones are re-read.
REORG_WINDOW = 256
PUSH_SLOW_POLL_S = 1.0
POLL_S = 0.05

#: One position of a normalized filter: the topics allowed there (any of them), or None for any.
_Position = tuple[bytes, ...] | None
_Filter = tuple[_Position, ...]


def address_topic(address: str) -> bytes:
    """An indexed ``address`` as a topic: the 20 bytes left-padded to 32."""
    raw = bytes.fromhex(address.removeprefix("0x"))
    if len(raw) != 20:
        raise ConfigError(f"an address topic needs a 20-byte address, got {address!r}")
    return bytes(12) + raw


def model_topic(model: str) -> bytes:
    """An indexed model ID (``TaskQueued.key_model``) as a topic: the name as the contract stores it."""
    return to_bytes32(model)


def _topic_bytes(value: Any) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ConfigError(f"a filter topic must be 32 bytes (use address_topic / model_topic / "
                          f"client.events.topic), got {len(raw)} bytes: {value!r}")
    return raw


def normalize_filters(filters: Sequence[Sequence[Any]] | None) -> list[_Filter] | None:
    """Filters as the follower keeps them: every topic as 32 bytes, every position a tuple or None.
    A bad topic is a ``ConfigError`` naming it; an empty list of filters would follow nothing."""
    if filters is None:
        return None
    if isinstance(filters, (str, bytes)) or not filters:
        raise ConfigError("filters must be a non-empty list of topic lists (or None for every event)")
    out = []
    for one in filters:
        if isinstance(one, (str, bytes)):
            raise ConfigError(f"each filter is a list of topic positions, got {one!r}")
        position: list[_Position] = []
        for value in one:
            if value is None:
                position.append(None)
            elif isinstance(value, (list, tuple)):
                position.append(tuple(_topic_bytes(v) for v in value) if value else None)
            else:
                position.append((_topic_bytes(value),))
        while position and position[-1] is None:
            position.pop()
        out.append(tuple(position))
    return out


def _request_topics(one: _Filter) -> list[Any]:
    """A filter as JSON-RPC takes it (``eth_getLogs`` and ``eth_subscribe`` alike)."""
    return [None if p is None else ("0x" + p[0].hex() if len(p) == 1 else ["0x" + t.hex() for t in p]) for p in one]


def _matches(one: _Filter, topics: Sequence[bytes]) -> bool:
    """The chain's rule for one filter: every position given is one of its topics."""
    return len(topics) >= len(one) and all(p is None or topics[i] in p for i, p in enumerate(one))


class EventFollower:
    """An async stream of the contract's events, each delivered once (and once more with
    ``removed=True`` if a reorg takes it back)."""

    def __init__(
        self,
        client: ChainClient,
        *,
        ws_url: str = "",
        from_block: int | None = None,
        cursor_path: Path | None = None,
        poll_interval: float | None = None,
        confirmations: int = 0,
        filters: Sequence[Sequence[Any]] | None = None,
    ) -> None:
        if confirmations < 0:
            raise ConfigError(f"confirmations must be 0 or more (blocks an event must be deep), got {confirmations}")
        self.client = client
        self.ws_url = ws_url
        self.cursor_path = cursor_path
        self.confirmations = confirmations
        self._filters = normalize_filters(filters)
        self._indexed = {item["name"]: [(i["name"], i["type"]) for i in item["inputs"] if i.get("indexed")]
                         for item in artifact.abi() if item.get("type") == "event"}
        self._ws: Any = None  # the open push socket, closed to subscribe again after set_filters
        # With push notifications the poll is only a safety net (while the socket is up).
        self.poll_interval = poll_interval if poll_interval is not None else (PUSH_SLOW_POLL_S if ws_url else POLL_S)
        self._cursor: int | None = None
        self._hashes: dict[int, bytes] = {}  # block number -> hash, for blocks read up to or with events
        if from_block is not None:
            self._cursor = from_block - 1
        else:
            self._load_cursor()
        self._queue: asyncio.Queue[ChainEvent] = asyncio.Queue()
        self._delivered: dict[tuple[bytes, int], ChainEvent] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> EventFollower:
        if self._cursor is None:
            self._cursor = max(0, await self.client.block_number() - self.confirmations)
            start = await self.client.block_hash(self._cursor)
            if start is not None:  # so that a reorg of the very next blocks finds its fork here
                self._hashes[self._cursor] = start
        self._stopping.clear()
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="events-poll"))
        if self.ws_url:
            self._tasks.append(asyncio.create_task(self._push_loop(), name="events-push"))
        return self

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def __aenter__(self) -> EventFollower:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __aiter__(self) -> AsyncIterator[ChainEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ChainEvent]:
        while True:
            yield await self._queue.get()

    async def next(self, timeout: float | None = None) -> ChainEvent | None:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    def poke(self) -> None:
        """Poll now (after sending a transaction whose events we are waiting for)."""
        self._wake.set()

    @property
    def filters(self) -> list[_Filter] | None:
        return self._filters

    def set_filters(self, filters: Sequence[Sequence[Any]] | None) -> None:
        """Follow other events from now on (the cursor on): the next poll reads with these, and
        the push socket is reopened with one subscription per filter."""
        self._filters = normalize_filters(filters)
        if self._ws is not None:  # the push session ends; the loop subscribes again at once
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks.append(asyncio.create_task(self._ws.close(), name="events-resubscribe"))
        self._wake.set()

    def wanted(self, event: ChainEvent) -> bool:
        """Whether the current filters ask for this event (every event without filters)."""
        if self._filters is None:
            return True
        topics = self._topics_of(event)
        return topics is not None and any(_matches(f, topics) for f in self._filters)

    def _topics_of(self, event: ChainEvent) -> list[bytes] | None:
        """The log's topics, rebuilt from the decoded event (its ABI's indexed inputs)."""
        indexed = self._indexed.get(event.name)
        if indexed is None:
            return None
        topics = [self.client.events.topic(event.name)]
        for name, kind in indexed:
            value = event.args[name]
            if kind == "address":
                topics.append(address_topic(value))
            elif isinstance(value, int):
                topics.append(value.to_bytes(32, "big", signed=kind.startswith("int")))
            else:
                topics.append(bytes(value).rjust(32, b"\0"))
        return topics

    async def _read_logs(self, lo: int, hi: int) -> list[ChainEvent]:
        """The range's events: every one of the contract's, or those any filter matches (one
        ``eth_getLogs`` per filter; an event two filters match, once), in chain order."""
        if self._filters is None:
            return await self.client.find_logs([], from_block=lo, to_block=hi)  # split if the provider asks
        found: dict[tuple[bytes, int], ChainEvent] = {}
        for one in self._filters:
            for event in await self.client.find_logs(_request_topics(one), from_block=lo, to_block=hi):
                found.setdefault(event.key, event)
        return sorted(found.values(), key=lambda e: (e.block_number, e.log_index))

    # ------------------------------------------------------------ polling

    async def poll_once(self) -> int:
        """Undo what a reorg took back, then read logs from the cursor to ``head - confirmations``;
        returns how many events were delivered (removals included). One request when nothing
        happened, two for a new block."""
        assert self._cursor is not None
        head, head_hash, parent_hash = await self.client.head()
        new = 0
        mine = self._hashes.get(self._cursor)
        unchanged = mine is None or (head, head_hash) == (self._cursor, mine) or (
            (head, parent_hash) == (self._cursor + 1, mine))
        if not unchanged:
            new += await self._undo_reorg()
        safe = head - self.confirmations
        while self._cursor < safe:
            lo, hi = self._cursor + 1, min(safe, self._cursor + MAX_BLOCK_RANGE)
            top = head_hash if hi == head else await self.client.block_hash(hi)  # before the logs
            events = await self._read_logs(lo, hi)
            if top is None or any(e.block_number == hi and e.block_hash != top for e in events):
                break  # the chain moved under us while reading: the next poll sorts it out
            new += self._reconcile(lo, hi, events)
            self._hashes[hi] = top
            for e in events:
                self._hashes[e.block_number] = e.block_hash
            self._cursor = hi
            self._prune()
            self._save_cursor()
        return new

    async def _undo_reorg(self) -> int:
        """If the block at the cursor is no longer on the chain, go back to the newest block
        that is and deliver as removed every event delivered after it."""
        assert self._cursor is not None
        mine = self._hashes.get(self._cursor)
        if mine is None or await self.client.block_hash(self._cursor) == mine:
            return 0
        fork = None
        for number in sorted(self._hashes, reverse=True):
            if number < self._cursor and await self.client.block_hash(number) == self._hashes[number]:
                fork = number
                break
        if fork is None:
            fork = max(0, self._cursor - REORG_WINDOW)
            log.warning("reorg deeper than what is remembered below block %d: reading again from block %d",
                        self._cursor, fork + 1)
        log.info("reorg: blocks %d..%d replaced; reading again from block %d", fork + 1, self._cursor, fork + 1)
        hashes: dict[int, bytes | None] = {}  # the chain's blocks now, by number, as asked
        gone = []
        for event in [e for e in self._delivered.values() if e.block_number > fork]:
            if event.block_number not in hashes:
                hashes[event.block_number] = await self.client.block_hash(event.block_number)
            if hashes[event.block_number] != event.block_hash:  # (one pushed from the new blocks stays)
                gone.append(event)
        for number in [n for n in self._hashes if n > fork]:
            del self._hashes[number]
        self._cursor = fork
        self._save_cursor()
        return sum(self._remove(e) for e in gone)

    def _reconcile(self, lo: int, hi: int, events: list[ChainEvent]) -> int:
        """Deliver the range's events; an event delivered earlier (pushed) from a block in this
        range that the chain no longer holds is delivered as removed (one that the filters no
        longer ask for, after ``set_filters``, was simply not searched for)."""
        keep = {e.key for e in events}
        gone = [e for e in self._delivered.values()
                if lo <= e.block_number <= hi and e.key not in keep and self.wanted(e)]
        return sum(self._remove(e) for e in gone) + sum(self._deliver(e) for e in events)

    async def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await retry.EVENT_POLL.call(self.poll_once, deadline=float("inf"), stop=self._stopping)
            except retry.Interrupted:
                return
            except ChainError as exc:  # an answer we cannot use: log it, poll again later
                log.warning("following events: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval())

    def _interval(self) -> float:
        """``poll_interval``; but while the push socket is down, at most PUSH_SLOW_POLL_S (a long
        safety-net interval is only safe while the chain pushes)."""
        if self.ws_url and not self.connected.is_set():
            return min(self.poll_interval, PUSH_SLOW_POLL_S)
        return self.poll_interval

    # ------------------------------------------------------------ push

    async def _push_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await retry.EVENT_PUSH.call(self._push_session, deadline=float("inf"), stop=self._stopping)
            except retry.Interrupted:
                return

    async def _push_session(self) -> None:
        """One subscription per filter (one for the whole contract without filters), until the
        socket closes (a failure raises, and is retried; ``set_filters`` closes it)."""
        filters = self._filters
        requests = [{"address": self.client.address}] if filters is None else [
            {"address": self.client.address, "topics": _request_topics(f)} for f in filters]
        try:
            async with websockets.connect(self.ws_url, max_size=None) as ws:
                for number, params in enumerate(requests, start=1):
                    await ws.send(json.dumps({"jsonrpc": "2.0", "id": number, "method": "eth_subscribe",
                                              "params": ["logs", params]}))
                waiting = set(range(1, len(requests) + 1))
                while waiting:  # the subscription IDs (a log of an earlier one may come between)
                    message = json.loads(await ws.recv())
                    if "error" in message:
                        raise ChainError(f"eth_subscribe refused by {self.ws_url}: {message['error']}")
                    waiting.discard(message.get("id"))  # type: ignore[arg-type]
                    self._on_push(message)
                if filters is not self._filters:
                    return  # replaced while subscribing: subscribe again with the new ones
                self._ws = ws
                self.connected.set()
                self._wake.set()  # catch up on what happened before the subscription
                async for raw in ws:
                    self._on_push(json.loads(raw))
        finally:
            self._ws = None
            self.connected.clear()
            self._wake.set()  # read now what the socket may have missed, and poll at the faster pace

    def _on_push(self, message: dict[str, Any]) -> None:
        raw = message.get("params", {}).get("result")
        if not raw:
            return
        topics = [bytes.fromhex(t.removeprefix("0x")) for t in raw["topics"]]
        if self._filters is not None and not any(_matches(f, topics) for f in self._filters):
            return  # a subscription being replaced (set_filters)
        if self.confirmations:
            self._wake.set()  # only the poll knows when an event is deep enough
            return
        event = self.client.events.decode({
            "topics": [HexBytes(t) for t in topics],
            "data": HexBytes(raw["data"]),
            "blockNumber": int(raw["blockNumber"], 16),
            "transactionHash": HexBytes(raw["transactionHash"]),
            "logIndex": int(raw["logIndex"], 16),
            "address": raw["address"],
            "blockHash": HexBytes(raw["blockHash"]),
            "transactionIndex": int(raw["transactionIndex"], 16),
            "removed": bool(raw.get("removed", False)),
        })
        if event is None:
            return
        if event.removed:
            known = self._delivered.get(event.key)
            if known is not None:
                self._remove(known)
        else:
            self._deliver(event)

    # ------------------------------------------------------------ shared

    def _deliver(self, event: ChainEvent) -> int:
        if event.key in self._delivered:
            return 0
        self._delivered[event.key] = event
        self._queue.put_nowait(event)
        return 1

    def _remove(self, event: ChainEvent) -> int:
        """Take back a delivered event: the consumer sees it again, marked removed."""
        if self._delivered.pop(event.key, None) is None:
            return 0
        self._queue.put_nowait(ChainEvent(
            name=event.name, args=event.args, block_number=event.block_number,
            transaction_hash=event.transaction_hash, log_index=event.log_index,
            block_hash=event.block_hash, removed=True,
        ))
        return 1

    def _prune(self) -> None:
        """Forget what is too deep to be reorged (bounded memory)."""
        assert self._cursor is not None
        floor = self._cursor - REORG_WINDOW
        if len(self._hashes) > 2 * REORG_WINDOW:
            self._hashes = {n: h for n, h in self._hashes.items() if n >= floor}
        if len(self._delivered) > 4 * REORG_WINDOW:
            self._delivered = {k: e for k, e in self._delivered.items() if e.block_number >= floor}

    def _load_cursor(self) -> None:
        """``number`` or ``number hash`` (the hash lets a restarted follower notice a reorg)."""
        if not (self.cursor_path and self.cursor_path.exists()):
            return
        parts = self.cursor_path.read_text().split()
        try:
            self._cursor = int(parts[0])
            if len(parts) > 1:
                self._hashes[self._cursor] = bytes.fromhex(parts[1])
        except (ValueError, IndexError):
            self._cursor = None

    def _save_cursor(self) -> None:
        if self.cursor_path and self._cursor is not None:
            self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cursor_path.with_suffix(".tmp")
            known = self._hashes.get(self._cursor)
            tmp.write_text(f"{self._cursor} {known.hex()}" if known else str(self._cursor))
            tmp.replace(self.cursor_path)
