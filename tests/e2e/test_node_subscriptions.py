"""Issue 7: a node subscribes only to what concerns it. A real anvil, the relay and one echo
node process; the node under test is a ``NodeDaemon`` in this process (so that what reaches
it can be counted): its pushed logs, the events it handles and the JSON-RPC requests it makes.

While the other node runs tasks, and while a task of a model nobody serves waits in the queue,
nothing at all reaches it over its socket (the chain filters), and it makes no request beyond
its slow safety-net poll. A task it runs itself reaches it whole, and it fetches that task's
``TaskCreated`` by its key, over the 256 blocks before the task started, in one request."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gridtask.chain.client import ChainClient, ChainEvent
from gridtask.crypto import task_commitment, task_key
from gridtask.devnet import Devnet
from gridtask.node import worker as worker_module
from gridtask.node.daemon import NodeDaemon
from gridtask.node.executors.base import ExecutorSet
from gridtask.node.executors.echo import EchoExecutor
from gridtask.node.settings import NodeSettings, build_executors
from gridtask.sdk import Client, TaskState, TaskType

from .conftest import assert_all_ended_and_conserved, funded_account, running_devnet, wait_state

pytestmark = pytest.mark.e2e

TASKS = 6


@dataclass
class Seen:
    """What reached the daemon: logs pushed on its socket, events it handled, requests it made."""

    pushed: list[dict[str, Any]] = field(default_factory=list)
    handled: list[ChainEvent] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    log_searches: list[tuple[int, int, list[Any] | None]] = field(default_factory=list)

    def clear(self) -> None:
        self.pushed.clear()
        self.handled.clear()
        self.requests.clear()
        self.log_searches.clear()


def watch(daemon: NodeDaemon) -> Seen:
    """Wrap the daemon's socket handler, event handler and chain client (instance attributes)."""
    seen = Seen()
    on_push, handle, rpc, get_logs = (daemon.follower._on_push, daemon.handle, daemon.chain.rpc,
                                      daemon.chain.get_logs)

    def counted_push(message: dict[str, Any]) -> None:
        if message.get("params", {}).get("result"):
            seen.pushed.append(message["params"]["result"])
        on_push(message)

    async def counted_handle(event: ChainEvent) -> None:
        seen.handled.append(event)
        await handle(event)

    async def counted_rpc(factory: Any, what: str) -> Any:
        seen.requests[what] += 1
        return await rpc(factory, what)

    async def counted_get_logs(from_block: int, to_block: int, topics: list[Any] | None = None) -> list[ChainEvent]:
        seen.log_searches.append((from_block, to_block, topics))
        return await get_logs(from_block, to_block, topics)

    daemon.follower._on_push = counted_push  # type: ignore[method-assign]
    daemon.handle = counted_handle  # type: ignore[method-assign]
    daemon.chain.rpc = counted_rpc  # type: ignore[method-assign]
    daemon.chain.get_logs = counted_get_logs  # type: ignore[method-assign]
    return seen


@contextlib.asynccontextmanager
async def daemon_in_process(net: Devnet, tmp_path: Path, executors: ExecutorSet) -> AsyncIterator[
        tuple[NodeDaemon, Seen]]:
    """A node daemon in this process, joined and subscribed, watched from the start."""
    _, network = funded_account(net)
    settings = NodeSettings(network=network, models=executors.all_models(), state_dir=tmp_path / "node",
                            withdraw_interval_s=3600)  # no withdraw while counting
    daemon = NodeDaemon(settings, executors)
    seen = watch(daemon)
    serving = asyncio.create_task(daemon.serve())
    try:
        await asyncio.wait_for(daemon.follower.connected.wait(), 60)
        async with ChainClient(network.rpc_url, network.contract, daemon.identity) as chain:
            while await chain.get_node(daemon.address) is None:
                assert not serving.done(), serving
                await asyncio.sleep(0.2)
        yield daemon, seen
    finally:
        daemon.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 30)


@pytest.fixture
async def net_and_node(tmp_path: Path) -> AsyncIterator[tuple[Devnet, NodeDaemon, Seen]]:
    """One echo node process, and a second echo node (the one under test) in this process."""
    async with running_devnet(tmp_path, nodes=1, node_models=["echo"]) as net, \
            daemon_in_process(net, tmp_path, build_executors(["echo"])) as (daemon, seen):
        yield net, daemon, seen


async def queue_unservable(net: Devnet) -> tuple[ChainClient, bytes]:
    """A task of a model no node serves: TaskCreated, then TaskQueued (key model "nobody");
    its creator's client and its key."""
    assert net.config is not None
    identity, config = funded_account(net)
    chain = ChainClient(config.rpc_url, config.contract, identity)
    commitment = task_commitment(os.urandom(32), nonce := os.urandom(32))
    await chain.create_task(task_type=TaskType.ECHO, commitment=commitment, nonce=nonce, models=["nobody"],
                            min_vram=0, required_gpu="", params_hash=os.urandom(32), task_size=1, timeout=60,
                            fee=10**15)
    key = task_key(identity.address, commitment)
    await chain.start_task(key, ["nobody"], 0, "")
    return chain, key


async def test_an_idle_node_hears_nothing_of_other_tasks_and_all_of_its_own(
    net_and_node: tuple[Devnet, NodeDaemon, Seen],
) -> None:
    net, daemon, seen = net_and_node
    assert net.config is not None
    other = net.node_identities[0].address
    async with Client(config=net.config) as client:
        seen.clear()
        for i in range(TASKS):  # the other node runs them all
            handle = await client.submit(TaskType.ECHO, "echo", {"data": i}, exclude=[daemon.address])
            assert await client.result(handle, timeout=60) == {"echo": i}
            info = await client.task(handle.commitment)
            assert info is not None and info.node.lower() == other.lower()
        queued_by, unservable = await queue_unservable(net)
        await asyncio.sleep(1.0)  # time for anything pushed to arrive
        assert seen.pushed == [] and seen.handled == []  # not one log of them reached the node
        # At most one safety-net poll (head, then one eth_getLogs per filter), whatever the tasks.
        assert sum(seen.requests.values()) <= 1 + len(daemon.follower.filters or []), seen.requests

        seen.clear()
        mine = await client.submit(TaskType.ECHO, "echo", {"data": "mine"}, exclude=[other])
        assert await client.result(mine, timeout=60) == {"echo": "mine"}
        info = await client.task(mine.commitment)
        assert info is not None and info.node.lower() == daemon.address.lower()
        await asyncio.sleep(1.0)
    names = [e.name for e in seen.handled]
    assert {"TaskStarted", "TaskScoreReady", "TaskValidated", "TaskSuccess"} <= set(names), names
    assert all(e.commitment == mine.commitment for e in seen.handled), names
    created = daemon.chain.events.topic("TaskCreated")
    [(lo, hi, topics)] = [s for s in seen.log_searches if s[2] and s[2][0] == created]
    started = next(e.block_number for e in seen.handled if e.name == "TaskStarted")
    assert topics == [created, mine.commitment] and (lo, hi) == (max(0, started - worker_module.START_WINDOW), started)
    await queued_by.cancel_task(unservable)
    await queued_by.aclose()
    book = await assert_all_ended_and_conserved(net)
    assert book["SUCCESS"] == TASKS + 1 and book["ABORTED"] == 1, book
    print("requests of the node for its own task:", dict(seen.requests))


class HeldEcho(EchoExecutor):
    """Echo whose first run waits for the test: the node stays busy computing until then."""

    def __init__(self) -> None:
        super().__init__()
        self.running, self.release = asyncio.Event(), asyncio.Event()

    async def run(self, model: str, inputs: dict) -> dict:
        if not self.running.is_set():
            self.running.set()
            await self.release.wait()
        return await super().run(model, inputs)


async def test_a_task_queued_for_its_model_while_it_was_busy_is_claimed(tmp_path: Path) -> None:
    """The only echo node is busy computing A; B queues. Its TaskQueued (key model echo, topic3)
    reaches the node, which claims B once A is scored: nothing else would start B."""
    executor = HeldEcho()
    async with running_devnet(tmp_path, nodes=0) as net, \
            daemon_in_process(net, tmp_path, ExecutorSet([executor])) as (daemon, seen):
        assert net.config is not None
        async with Client(config=net.config) as client:
            a = await client.submit(TaskType.ECHO, "echo", {"data": "a"})
            a_result = asyncio.create_task(client.result(a, timeout=90))
            await asyncio.wait_for(executor.running.wait(), 60)
            b = await client.submit(TaskType.ECHO, "echo", {"data": "b"})
            await wait_state(client, b.commitment, TaskState.QUEUED)
            for _ in range(100):  # pushed to the node
                if any(e.name == "TaskQueued" and e.commitment == b.commitment for e in seen.handled):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the node never heard that B was queued")
            executor.release.set()
            assert await a_result == {"echo": "a"}
            assert await client.result(b, timeout=90) == {"echo": "b"}
            info = await client.task(b.commitment)
            assert info is not None and info.node.lower() == daemon.address.lower()
        book = await assert_all_ended_and_conserved(net)
        assert book["SUCCESS"] == 2, book
