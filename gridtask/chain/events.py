"""Following the contract's events: pushed over WebSocket when the chain offers it,
and always polled with ``eth_getLogs`` from a saved block cursor as the safety net.

The push path (``eth_subscribe`` to the contract's logs) makes a node or an
application react within milliseconds; the poll path makes sure nothing is missed
when the socket drops, the chain is unreachable for a while, or the process restarts
(the cursor is saved to disk, so a restarted follower continues where it stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets
from hexbytes import HexBytes

from gridtask.chain.client import ChainClient, ChainEvent
from gridtask.exceptions import ChainError

log = logging.getLogger("gridtask.chain.events")

MAX_BLOCK_RANGE = 5_000
SEEN_KEEP_BLOCKS = 256


class EventFollower:
    """An async stream of the contract's events, each delivered once."""

    def __init__(
        self,
        client: ChainClient,
        *,
        ws_url: str = "",
        from_block: int | None = None,
        cursor_path: Path | None = None,
        poll_interval: float | None = None,
    ) -> None:
        self.client = client
        self.ws_url = ws_url
        self.cursor_path = cursor_path
        # With push notifications the poll is only a safety net.
        self.poll_interval = poll_interval if poll_interval is not None else (1.0 if ws_url else 0.05)
        self._cursor: int | None = self._load_cursor() if from_block is None else from_block - 1
        self._queue: asyncio.Queue[ChainEvent] = asyncio.Queue()
        self._seen: dict[tuple[int, int], None] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> EventFollower:
        if self._cursor is None:
            self._cursor = await self.client.block_number()
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="events-poll"))
        if self.ws_url:
            self._tasks.append(asyncio.create_task(self._push_loop(), name="events-push"))
        return self

    async def stop(self) -> None:
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

    # ------------------------------------------------------------ polling

    async def poll_once(self) -> int:
        """Fetch logs from the cursor to the head; returns how many events were new."""
        head = await self.client.block_number()
        assert self._cursor is not None
        new = 0
        while self._cursor < head:
            to = min(head, self._cursor + MAX_BLOCK_RANGE)
            for event in await self.client.get_logs(self._cursor + 1, to):
                new += self._deliver(event)
            self._cursor = to
            self._save_cursor()
        return new

    async def _poll_loop(self) -> None:
        delay = self.poll_interval
        while True:
            try:
                await self.poll_once()
                delay = self.poll_interval
            except ChainError as exc:
                log.warning("chain unreachable while following events (%s); retrying", exc)
                delay = min(max(delay * 2, 0.2), 2.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # ------------------------------------------------------------ push

    async def _push_loop(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with websockets.connect(self.ws_url, max_size=None) as ws:
                    await ws.send(json.dumps({
                        "jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                        "params": ["logs", {"address": self.client.address}],
                    }))
                    await ws.recv()  # the subscription ID
                    self.connected.set()
                    self._wake.set()  # catch up on what happened before the subscription
                    backoff = 0.2
                    async for message in ws:
                        self._on_push(json.loads(message))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                log.debug("event push connection lost (%r); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _on_push(self, message: dict[str, Any]) -> None:
        raw = message.get("params", {}).get("result")
        if not raw or raw.get("removed"):
            return
        log_entry = {
            "topics": [HexBytes(t) for t in raw["topics"]],
            "data": HexBytes(raw["data"]),
            "blockNumber": int(raw["blockNumber"], 16),
            "transactionHash": HexBytes(raw["transactionHash"]),
            "logIndex": int(raw["logIndex"], 16),
            "address": raw["address"],
            "blockHash": HexBytes(raw["blockHash"]),
            "transactionIndex": int(raw["transactionIndex"], 16),
        }
        event = self.client.events.decode(log_entry)
        if event is not None:
            self._deliver(event)

    # ------------------------------------------------------------ shared

    def _deliver(self, event: ChainEvent) -> int:
        key = (event.block_number, event.log_index)
        if key in self._seen:
            return 0
        self._seen[key] = None
        if len(self._seen) > 4 * SEEN_KEEP_BLOCKS and self._cursor is not None:
            floor = self._cursor - SEEN_KEEP_BLOCKS
            self._seen = {k: None for k in self._seen if k[0] >= floor}
        self._queue.put_nowait(event)
        return 1

    def _load_cursor(self) -> int | None:
        if self.cursor_path and self.cursor_path.exists():
            try:
                return int(self.cursor_path.read_text().strip())
            except ValueError:
                return None
        return None

    def _save_cursor(self) -> None:
        if self.cursor_path and self._cursor is not None:
            self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cursor_path.with_suffix(".tmp")
            tmp.write_text(str(self._cursor))
            tmp.replace(self.cursor_path)
