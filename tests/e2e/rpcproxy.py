"""A JSON-RPC proxy in front of anvil that can hold chosen methods unanswered, and counts
what it forwards (``posts``: HTTP requests; ``calls``: JSON-RPC calls by method).

One process (the relay, say) is pointed at it while everything else talks to anvil
directly, so a test can stop exactly that process's transactions (``hold={"eth_sendRawTransaction"}``)
or all of its chain traffic (``hold_all()``), with the chain itself intact. A held request
is never forwarded: it waits until the client gives up, the test releases it (answered
with an error), or the proxy stops.

A process given ``ws_url`` too has its WebSocket forwarded as well, and the calls it sends
on that socket (subscriptions and anything else) counted in ``calls`` (not in ``posts``;
only HTTP requests can be held; ``hold_all()`` refuses new sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter

import aiohttp
from aiohttp import web

from gridtask.chain.anvil import free_port


class HoldingRpcProxy:
    def __init__(self, target_url: str, hold: set[str] | None = None) -> None:
        self.target_url = target_url
        self.hold: set[str] = set(hold or ())
        self.all = False
        self.port = free_port()
        self.held: list[str] = []  # methods held so far, in order
        self.posts = 0  # HTTP requests forwarded (a JSON-RPC batch is one)
        self.calls: Counter[str] = Counter()  # JSON-RPC calls forwarded, by method (each of a batch)
        self.held_one = asyncio.Event()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def hold_all(self) -> None:
        """The chain as seen through the proxy is down: no request is answered."""
        self.all = True

    async def start(self) -> HoldingRpcProxy:
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

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = json.loads(body)
        methods = [call.get("method", "") for call in (payload if isinstance(payload, list) else [payload])]
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
            return web.Response(body=await answer.read(), status=answer.status, content_type="application/json")

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        """Forward a WebSocket both ways, counting the calls the client sends in ``calls``."""
        if self.all:
            return web.Response(status=503, text="held by the test")
        assert self._session is not None
        client = web.WebSocketResponse()
        await client.prepare(request)
        async with self._session.ws_connect(self.target_url.replace("http", "ws", 1)) as upstream:

            async def down() -> None:
                async for msg in upstream:
                    await client.send_str(msg.data)

            pump = asyncio.create_task(down())
            try:
                async for msg in client:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    payload = json.loads(msg.data)
                    self.calls.update(call.get("method", "") for call in
                                      (payload if isinstance(payload, list) else [payload]))
                    await upstream.send_str(msg.data)
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await pump
        return client
