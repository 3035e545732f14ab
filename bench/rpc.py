"""JSON-RPC requests per echo task on the application's side, counted on the wire.

One ``Client`` talks to anvil through the counting proxy of the end-to-end tests
(``tests/e2e/rpcproxy.py``: HTTP and WebSocket, each call of a batch counted), for its
HTTP requests and its event subscription alike. It runs warm-up tasks, then sequential
echo tasks; the count is the calls made from the first measured task's submit to the
last one's result, by method, per task. Opening and closing the client are left out
(once per client, not per task); any periodic polling while tasks run is in.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.net import app_client, funded_config

ROOT = Path(__file__).resolve().parent.parent


def _proxy_class() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.e2e.rpcproxy import HoldingRpcProxy

    return HoldingRpcProxy


async def count_app_requests(net: Any, tasks: int, one_task: Any, warmup: int = 2) -> dict[str, Any]:
    """``{"per_task": {method: calls per task}, "total": ..., "posts_per_task": ...}``."""
    proxy = await _proxy_class()(net.chain.url).start()
    client = None
    try:
        config = funded_config(net, rpc_url=proxy.url, ws_url=proxy.ws_url)
        client = await app_client(net, config=config)
        for _ in range(warmup):
            await one_task(client)
        await asyncio.sleep(0.2)  # the last warm-up task's stragglers
        calls0, posts0 = Counter(proxy.calls), proxy.posts
        for _ in range(tasks):
            await one_task(client)
        calls = Counter(proxy.calls)
        calls.subtract(calls0)
        posts = proxy.posts - posts0
    finally:
        if client is not None:
            await client.aclose()
        await proxy.stop()
    per_task = {m: n / tasks for m, n in calls.most_common() if n}
    return dict(tasks=tasks, per_task=per_task, total=sum(per_task.values()), posts_per_task=posts / tasks)
