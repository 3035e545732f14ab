"""The relay learns task state from the chain's events and reads the chain only for a task
it has not seen: measured on a real anvil, with the real relay process reaching the chain
through a proxy that counts its requests (and can drop the events it should have seen)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest

from gridtask.chain.client import ChainClient
from gridtask.crypto import keccak, seal
from gridtask.devnet import Devnet
from gridtask.relay.client import RelayClient
from gridtask.sdk import Client, TaskState, TaskType

from .conftest import assert_all_ended_and_conserved, wait_state
from .relay_kit import cpu_seconds, spawn_relay
from .rpcproxy import RpcProxy

pytestmark = pytest.mark.e2e

TASKS = 20
T = TypeVar("T")


async def test_relay_rpc_and_cpu_per_echo_task(one_echo_net: Devnet) -> None:
    """The numbers for the report: the relay's JSON-RPC requests and CPU per echo task."""
    net = one_echo_net
    assert net.config is not None
    async with counted_relay(net) as proxy, Client(config=net.config) as client:
        relay = net.processes["relay"]
        assert await client.run(TaskType.ECHO, "echo", {"data": "warm"}, timeout=120) == {"echo": "warm"}
        await asyncio.sleep(2)
        proxy.calls.clear()
        cpu0, t0 = cpu_seconds(relay.pid), time.monotonic()
        for i in range(TASKS):
            assert await client.run(TaskType.ECHO, "echo", {"data": i}, timeout=120) == {"echo": i}
        cpu1, t1 = cpu_seconds(relay.pid), time.monotonic()
        busy = dict(proxy.calls)
        proxy.calls.clear()
        await asyncio.sleep(5)
        idle = dict(proxy.calls)
        cpu2 = cpu_seconds(relay.pid)
        print(f"\nrelay, {TASKS} echo tasks in {t1 - t0:.1f}s: requests {sum(busy.values()) / TASKS:.1f}/task {busy}")
        print(f"relay CPU {1000 * (cpu1 - cpu0) / TASKS:.1f} ms/task; "
              f"idle 5 s: {idle}, CPU {1000 * (cpu2 - cpu1):.0f} ms")
        # Before the relay followed events it read the task on every call: 4 eth_call a task.
        # Now a read happens only when a call beats the event that allows it (the node reacts
        # to TaskValidated as fast as the relay does): at most one a task.
        assert busy.get("eth_call", 0) <= TASKS, busy
        await assert_all_ended_and_conserved(net)


# -- by hand: the test plays the node, so it knows exactly when each event is out ------------

SETTLE_S = 1.5  # long enough for the relay to have the events of the last transaction


@asynccontextmanager
async def counted_relay(net: Devnet, *, ws: bool = True) -> AsyncIterator[RpcProxy]:
    """The devnet's relay, restarted to reach the chain through a counting proxy (its
    WebSocket, when ``ws``, straight to anvil; without it every event is polled through the
    proxy, where a test can drop some)."""
    assert net.chain is not None
    proxy = await RpcProxy(net.chain.url).start()
    try:
        spawn_relay(net, proxy.url, ws_url=None if ws else "")
        await net.wait_relay()
        yield proxy
    finally:
        await proxy.stop()


class HandPlayedTask:
    """One echo task whose node daemon was killed: the test uploads, downloads, scores,
    validates and delivers itself, and counts the relay's chain reads (``eth_call``) per
    relay call."""

    def __init__(self, net: Devnet, client: Client) -> None:
        assert net.config is not None
        self.net, self.client = net, client
        self.node = net.node_identities[0]
        self.result = b"the node's sealed result"
        self.reads: dict[str, int] = {}

    async def start(self) -> HandPlayedTask:
        self.net.stop_process("node0", signal.SIGKILL)  # IDLE on chain still: it is selected
        self.handle = await self.client.submit(TaskType.ECHO, "echo", {"data": "by hand"}, stage_timeout=300)
        await wait_state(self.client, self.handle.task_id, TaskState.STARTED)
        info = await self.client.chain.get_node(self.node.address)
        assert info is not None
        self.params = seal(self.handle.params, info.public_key)
        return self

    async def relay_call(self, proxy: RpcProxy, name: str, call: Awaitable[T]) -> T:
        before = proxy.calls["eth_call"]
        answer = await call
        self.reads[name] = proxy.calls["eth_call"] - before
        return answer

    async def upload_and_download_params(self, proxy: RpcProxy) -> None:
        assert self.net.config is not None
        key = self.handle.commitment
        await self.relay_call(proxy, "PUT params", self.client.relay.upload_params(key, self.params))
        async with RelayClient(self.net.config.relay_url, self.node) as as_node:
            got = await self.relay_call(proxy, "GET params", as_node.download_params(key))
            assert got == self.params
            assert await self.relay_call(proxy, "GET params again", as_node.download_params(key)) == self.params

    async def score_and_validate(self) -> None:
        assert self.net.config is not None
        key = self.handle.commitment
        async with ChainClient(self.net.config.rpc_url, self.net.config.contract, self.node) as as_node:
            await as_node.submit_score(key, b"\x01" * 32, keccak(self.result))
        await self.client.chain.validate_single_task(key, self.handle.opening, self.handle.nonce)

    async def deliver_and_read(self, proxy: RpcProxy) -> None:
        assert self.net.config is not None
        key = self.handle.commitment
        async with RelayClient(self.net.config.relay_url, self.node) as as_node:
            await self.relay_call(proxy, "PUT result", as_node.upload_result(key, self.result))
        got = await self.relay_call(proxy, "GET result", self.client.relay.download_result(key))
        assert got == self.result

    async def check_paid(self) -> None:
        info = await self.client.task(self.handle.commitment)
        assert info is not None and info.state == TaskState.SUCCESS
        assert await self.client.chain.balance_of(self.node.address) == self.handle.fee
        await assert_all_ended_and_conserved(self.net)


async def test_a_task_the_relay_follows_is_served_without_one_chain_read(one_echo_net: Devnet) -> None:
    net = one_echo_net
    assert net.config is not None
    async with counted_relay(net) as proxy, Client(config=net.config) as client:
        task = await HandPlayedTask(net, client).start()
        await asyncio.sleep(SETTLE_S)  # TaskStarted has reached the relay
        await task.upload_and_download_params(proxy)
        await task.score_and_validate()
        await asyncio.sleep(SETTLE_S)
        await task.deliver_and_read(proxy)
        assert task.reads == {"PUT params": 0, "GET params": 0, "GET params again": 0,
                              "PUT result": 0, "GET result": 0}, task.reads
        await task.check_paid()


async def test_a_relay_started_after_the_task_reads_it_once_and_a_restart_stays_correct(
    one_echo_net: Devnet,
) -> None:
    """Cold table: the relay (re)starts after the task started, so it never saw TaskStarted;
    the first call reads the chain, the next ones do not. Restarted again before the
    delivery, it reads the task once more and delivers."""
    net = one_echo_net
    assert net.config is not None
    async with Client(config=net.config) as client:
        task = await HandPlayedTask(net, client).start()
        async with counted_relay(net) as proxy:
            await task.upload_and_download_params(proxy)
            assert task.reads == {"PUT params": 1, "GET params": 0, "GET params again": 0}, task.reads
        await task.score_and_validate()
        async with counted_relay(net) as proxy:
            await task.deliver_and_read(proxy)
        assert task.reads["PUT result"] == 1 and task.reads["GET result"] == 0, task.reads
        await task.check_paid()


async def test_events_the_relay_missed_cost_one_read_each_not_a_wrong_answer(one_echo_net: Devnet) -> None:
    """The proxy cuts TaskStarted and TaskValidated out of every eth_getLogs answer the relay
    gets (no WebSocket: every event is polled through it). The creator's upload, refused by
    the table (task unknown), and the node's delivery, refused by it (not validated), are
    each judged on one fresh read, and both go through."""
    net = one_echo_net
    assert net.config is not None
    async with counted_relay(net, ws=False) as proxy, Client(config=net.config) as client:
        proxy.drop_topics = {"0x" + client.chain.events.topic(n).hex() for n in ("TaskStarted", "TaskValidated")}
        task = await HandPlayedTask(net, client).start()
        await asyncio.sleep(SETTLE_S)
        await task.upload_and_download_params(proxy)
        await task.score_and_validate()
        await asyncio.sleep(SETTLE_S)
        await task.deliver_and_read(proxy)
        assert proxy.dropped >= 2
        assert task.reads == {"PUT params": 1, "GET params": 0, "GET params again": 0,
                              "PUT result": 1, "GET result": 0}, task.reads
        await task.check_paid()
