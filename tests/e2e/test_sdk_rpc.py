"""What an application's ``Client`` costs its JSON-RPC provider (issue 7): a counting proxy
sits between one ``Client`` and a real anvil (the relay and the nodes talk to anvil
directly), and sequential echo tasks on a warm client must cost at most
``MAX_RPC_PER_TASK`` requests each, the client's shared polls included."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from gridtask.devnet import Devnet
from gridtask.sdk import STEP_NAMES, Client, TaskStep, TaskType

from .conftest import assert_all_ended_and_conserved, running_devnet
from .rpcproxy import RpcProxy

pytestmark = pytest.mark.e2e

MAX_RPC_PER_TASK = 6
TASKS = 16


async def _measure(net: Devnet, proxy: RpcProxy, tasks: int,
                   steps: dict[bytes, list[TaskStep]]) -> tuple[float, float, list[float], dict[str, int]]:
    """(HTTP requests per task, JSON-RPC calls per task, latencies, calls by method) over
    ``tasks`` sequential echo tasks after one warm-up task (what a client pays once:
    the network's parameters, the node registry, the chain ID and nonce)."""
    assert net.config is not None
    config = net.config.model_copy(update={"rpc_url": proxy.url})
    async with Client(config=config, event_hooks={"step": [lambda s: steps[s.member_key].append(s)]}) as client:
        assert await client.run(TaskType.ECHO, "echo", {"data": "warm"}) == {"echo": "warm"}
        posts, calls = proxy.posts, proxy.calls.copy()
        latencies = []
        for i in range(tasks):
            t = time.perf_counter()
            assert await client.run(TaskType.ECHO, "echo", {"data": i}) == {"echo": i}
            latencies.append(time.perf_counter() - t)
        used = proxy.calls - calls
        return (proxy.posts - posts) / tasks, sum(used.values()) / tasks, latencies, dict(used)


async def test_a_warm_client_costs_at_most_six_rpc_requests_per_echo_task(tmp_path: Path) -> None:
    async with running_devnet(tmp_path, nodes=3, node_models=["echo"]) as net:
        assert net.chain is not None
        proxy = await RpcProxy(net.chain.url).start()
        try:
            steps: dict[bytes, list[TaskStep]] = defaultdict(list)
            per_task, calls_per_task, latencies, by_method = await _measure(net, proxy, TASKS, steps)
        finally:
            await proxy.stop()
        latencies.sort()
        print(f"\nRPC per echo task: {per_task:.2f} HTTP requests, {calls_per_task:.2f} JSON-RPC calls; "
              f"median latency {latencies[len(latencies) // 2] * 1000:.0f} ms; by method: {by_method}")
        assert per_task <= MAX_RPC_PER_TASK, by_method
        assert calls_per_task <= MAX_RPC_PER_TASK, by_method  # batching is not how the ceiling is met
        await assert_all_ended_and_conserved(net)
        # the hooks saw every step of every task, once and in order, with times that go forward
        assert len(steps) == TASKS + 1
        for seen in steps.values():
            assert [s.name for s in seen] == [n for n in STEP_NAMES if n not in ("failed", "retry")]
            assert [s.at for s in seen] == sorted(s.at for s in seen)
            assert seen[0].detail["tx_started_at"] <= seen[0].at and seen[1].detail["node"]
