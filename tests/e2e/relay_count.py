"""A JSON-RPC proxy that counts what one process (the relay) asks the chain, and can drop
chosen events from its answers: the relay's chain reads are counted per request, and a
"missed event" is one the chain emitted but the relay never received."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web

from gridtask.chain.anvil import free_port


class CountingRpcProxy:
    """Forwards every call to ``target_url``; ``counts`` holds how often each method was
    asked. Logs whose topic0 is in ``drop_topics`` are cut out of ``eth_getLogs`` answers
    (the relay never sees them; everyone else, talking to anvil directly, does)."""

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        self.port = free_port()
        self.counts: Counter[str] = Counter()
        self.drop_topics: set[str] = set()
        self.dropped = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reads(self, *methods: str) -> int:
        """How many calls of ``methods`` (all calls when none is named)."""
        return sum(n for m, n in self.counts.items() if not methods or m in methods)

    async def start(self) -> CountingRpcProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = json.loads(body)
        calls = payload if isinstance(payload, list) else [payload]
        self.counts.update(call.get("method", "") for call in calls)
        assert self._session is not None
        async with self._session.post(self.target_url, data=body,
                                      headers={"content-type": "application/json"}) as answer:
            raw = await answer.read()
            status = answer.status
        if self.drop_topics and any(c.get("method") == "eth_getLogs" for c in calls):
            raw = self._without_dropped(raw)
        return web.Response(body=raw, status=status, content_type="application/json")

    def _without_dropped(self, raw: bytes) -> bytes:
        answer = json.loads(raw)
        for one in answer if isinstance(answer, list) else [answer]:
            logs = one.get("result")
            if isinstance(logs, list):
                kept = [log for log in logs if not (log.get("topics") and log["topics"][0] in self.drop_topics)]
                self.dropped += len(logs) - len(kept)
                one["result"] = kept
        return json.dumps(answer).encode()


def cpu_seconds(pid: int) -> float:
    """CPU time a process has run so far, all its threads (Linux ``schedstat``, in ns: finer
    than ``/proc/PID/stat``'s 10 ms ticks)."""
    total = 0
    for thread in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int((thread / "schedstat").read_text().split()[0])
    return total / 1e9
