"""A JSON-RPC proxy in front of anvil for one process under test (the relay, a node, an
application), while everything else talks to anvil directly, so that a test sees and shapes
exactly that process's chain traffic with the chain itself intact:

- counts what it forwards: ``posts`` (HTTP requests; a batch is one) and ``calls`` (JSON-RPC
  calls by method, each of a batch, over HTTP and over the WebSocket);
- holds chosen methods unanswered (``hold={"eth_sendRawTransaction"}``) or everything
  (``hold_all()``): a held request is never forwarded; it waits until the client gives up or
  the proxy stops, then is answered 503. ``held`` lists the held methods, ``held_one`` is set
  at the first;
- drops chosen events (``drop_topics``: topic0 as 0x-hex) from ``eth_getLogs`` answers and
  from pushed ``eth_subscription`` logs, so that the process misses them (``dropped`` counts
  the logs cut out);
- forwards a WebSocket both ways (``ws_url``; ``hold_all()`` refuses new sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import aiohttp
from aiohttp import web

from gridtask.chain.anvil import free_port


class RpcProxy:
    """``await RpcProxy(anvil_url, hold=..., drop_topics=...).start()``; ``await proxy.stop()``."""

    def __init__(self, target_url: str, *, hold: Iterable[str] = (), drop_topics: Iterable[str] = ()) -> None:
        self.target_url = target_url
        self.hold: set[str] = set(hold)
        self.drop_topics: set[str] = set(drop_topics)
        self.all = False
        self.port = free_port()
        self.posts = 0  # HTTP requests forwarded (a JSON-RPC batch is one)
        self.calls: Counter[str] = Counter()  # JSON-RPC calls forwarded, by method (each of a batch)
        self.held: list[str] = []  # methods held so far, in order
        self.held_one = asyncio.Event()
        self.dropped = 0  # logs cut out of answers and pushes
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def reads(self, *methods: str) -> int:
        """How many calls of ``methods`` were forwarded (all calls when none is named)."""
        return sum(n for m, n in self.calls.items() if not methods or m in methods)

    def hold_all(self) -> None:
        """The chain as seen through the proxy is down: no request is answered."""
        self.all = True

    async def start(self) -> RpcProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self._handle)
        app.router.add_get("/", self._handle_ws)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        calls = _calls(json.loads(body))
        methods = [call.get("method", "") for call in calls]
        if self.all or self.hold.intersection(methods):
            self.held.extend(methods)
            self.held_one.set()
            await self._release.wait()
            return web.Response(status=503, text="held by the test")
        assert self._session is not None
        self.posts += 1
        self.calls.update(methods)
        async with self._session.post(self.target_url, data=body,
                                      headers={"content-type": "application/json"}) as answer:
            raw, status = await answer.read(), answer.status
        if self.drop_topics and "eth_getLogs" in methods:
            answers = json.loads(raw)
            for one in _calls(answers):
                one["result"] = self._kept(one.get("result"))
            raw = json.dumps(answers).encode()
        return web.Response(body=raw, status=status, content_type="application/json")

    # ------------------------------------------------------------ WebSocket

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        """Forward a WebSocket both ways, counting the calls the client sends in ``calls`` and
        cutting dropped logs out of what comes back."""
        if self.all:
            return web.Response(status=503, text="held by the test")
        assert self._session is not None
        client = web.WebSocketResponse()
        await client.prepare(request)
        get_logs: set[Any] = set()  # ids of this socket's eth_getLogs calls: their answers are filtered
        async with self._session.ws_connect(self.target_url.replace("http", "ws", 1)) as upstream:

            async def down() -> None:
                async for msg in upstream:
                    data = self._filtered_push(msg.data, get_logs)
                    if data is not None:
                        await client.send_str(data)

            pump = asyncio.create_task(down())
            try:
                async for msg in client:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    calls = _calls(json.loads(msg.data))
                    self.calls.update(call.get("method", "") for call in calls)
                    get_logs.update(c.get("id") for c in calls if c.get("method") == "eth_getLogs")
                    await upstream.send_str(msg.data)
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await pump
        return client

    def _filtered_push(self, data: str, get_logs: set[Any]) -> str | None:
        """What the socket sends down, without dropped logs: None for a pushed log cut out."""
        if not self.drop_topics:
            return data
        message = json.loads(data)
        for one in _calls(message):
            if one.get("method") == "eth_subscription":
                result = one.get("params", {}).get("result")
                if isinstance(result, dict) and not self._kept([result]):
                    return None
            elif one.get("id") in get_logs:
                one["result"] = self._kept(one.get("result"))
        return json.dumps(message)

    def _kept(self, logs: Any) -> Any:
        """``logs`` without those whose topic0 is dropped (anything else as it is)."""
        if not isinstance(logs, list):
            return logs
        kept = [log for log in logs if not (isinstance(log, dict) and log.get("topics")
                                            and log["topics"][0] in self.drop_topics)]
        self.dropped += len(logs) - len(kept)
        return kept


def _calls(payload: Any) -> list[dict[str, Any]]:
    """The calls (or answers) of a JSON-RPC message, batch or single."""
    return [c for c in (payload if isinstance(payload, list) else [payload]) if isinstance(c, dict)]
