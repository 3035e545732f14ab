"""JSON-RPC requests per echo task, by party, counted on the wire.

Every party talks to anvil through its own counting proxy of the end-to-end tests
(``tests/e2e/rpcproxy.py``: HTTP and WebSocket, each call of a batch counted), for its
HTTP requests and its event subscriptions alike: one ``Client`` (the application), and
optionally the relay and all the nodes, restarted with the proxies' URLs (they resume
from the chain and their state directories, as after any restart). After warm-up tasks,
sequential echo tasks run; a party's count is the calls it made from the first measured
task's submit to the last one's result, per task, by method. Opening and closing the
client are left out (once per client, not per task); periodic polling while tasks run
is in. The proxies run in this process: run this after anything timed on the same devnet.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.net import app_client, funded_config

ROOT = Path(__file__).resolve().parent.parent
STOP_S = 10.0


def proxy_class() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.e2e.rpcproxy import RpcProxy

    return RpcProxy


async def restart_through(net: Any, names: list[str], proxy: Any) -> None:
    """Stop the named processes of the devnet and start them again talking to `proxy`."""
    original = net.config
    for name in names:
        proc = net.processes[name]
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, STOP_S)
        except Exception:
            proc.kill()
            await asyncio.to_thread(proc.wait)
    net.config = original.model_copy(update={"rpc_url": proxy.url, "ws_url": proxy.ws_url})
    try:
        for name in names:
            if name == "relay":
                net.start_relay()
            else:
                net.start_node(int(name.removeprefix("node")))
    finally:
        net.config = original
    if "relay" in names:
        await net.wait_relay()


async def count_requests(net: Any, tasks: int, one_task: Callable[[Any], Awaitable[Any]], *,
                         parties: tuple[str, ...] = ("app",), warmup: int = 2) -> dict[str, dict[str, Any]]:
    """``{party: {"per_task": {method: calls per task}, "total": ..., "posts_per_task": ...}}``
    for `parties` among "app", "relay", "nodes" (the nodes' calls summed)."""
    cls = proxy_class()
    proxies = {p: await cls(net.chain.url).start() for p in parties}
    client = None
    try:
        if "relay" in proxies:
            await restart_through(net, ["relay"], proxies["relay"])
        if "nodes" in proxies:
            await restart_through(net, [n for n in net.processes if n.startswith("node")], proxies["nodes"])
            await asyncio.sleep(2.0)  # they subscribe; the warm-up tasks wait for them anyway
        app = proxies.get("app")
        config = funded_config(net, **({"rpc_url": app.url, "ws_url": app.ws_url} if app else {}))
        client = await app_client(net, config=config)
        for _ in range(warmup):
            await one_task(client)
        await asyncio.sleep(0.5)  # the last warm-up task's stragglers (the relay's report, the nodes' reads)
        before = {p: (Counter(x.calls), x.posts) for p, x in proxies.items()}
        for _ in range(tasks):
            await one_task(client)
        await asyncio.sleep(0.5)  # the last task's stragglers, as before the first
        out = {}
        for p, x in proxies.items():
            calls = Counter(x.calls)
            calls.subtract(before[p][0])
            per_task = {m: n / tasks for m, n in calls.most_common() if n}
            out[p] = dict(tasks=tasks, per_task=per_task, total=sum(per_task.values()),
                          posts_per_task=(x.posts - before[p][1]) / tasks)
        return out
    finally:
        if client is not None:
            await client.aclose()
        for x in proxies.values():
            with contextlib.suppress(Exception):
                await x.stop()


def describe(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in counts["per_task"].items())
