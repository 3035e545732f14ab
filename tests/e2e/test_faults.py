"""Daemons killed and restarted mid-task, the chain unreachable for 10 s, one-second
blocks: every task still reaches a correct end on chain, and money is conserved."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from gridtask.chain.anvil import free_port
from gridtask.devnet import Devnet
from gridtask.sdk import Client, TaskState, TaskType

from .conftest import assert_all_ended_and_conserved, start_devnet, wait_state
from .netcut import CuttableProxy

pytestmark = pytest.mark.e2e


async def test_node_killed_mid_task_resumes_from_the_chain(echo_net: Devnet, client: Client) -> None:
    for name in ["node0", "node1"]:
        echo_net.stop_process(name, signal.SIGKILL)
    # The contract still thinks the nodes are idle: the task starts on a dead node.
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "survives"})
    running = asyncio.create_task(client.result(handle, timeout=90))
    await wait_state(client, handle.task_id, TaskState.STARTED)
    await asyncio.sleep(1)
    assert not running.done()
    echo_net.start_node(0)
    echo_net.start_node(1)
    assert await running == {"echo": "survives"}
    await assert_all_ended_and_conserved(echo_net)


async def test_node_killed_after_scoring_delivers_after_restart(echo_net: Devnet, client: Client) -> None:
    """The sealed result is kept on disk before its hash is committed: a node killed between
    scoring and delivery delivers exactly those bytes after its restart."""
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "kept on disk"})
    await wait_state(client, handle.task_id, TaskState.STARTED)
    info = await client.task(handle.commitment)
    assert info is not None
    await client._upload_params(handle, info, deadline=float("inf"))  # step 4 by hand: no validation yet
    await wait_state(client, handle.task_id, TaskState.SCORE_READY)
    for name in ["node0", "node1"]:
        echo_net.stop_process(name, signal.SIGKILL)
    await client.chain.transact("validateSingleTask", handle.commitment, b"")
    for index in range(2):
        echo_net.start_node(index)
    assert await client.result(handle, timeout=90) == {"echo": "kept on disk"}
    await assert_all_ended_and_conserved(echo_net)


async def test_relay_killed_mid_task_loses_nothing(echo_net: Devnet, client: Client) -> None:
    echo_net.stop_process("relay", signal.SIGKILL)
    handles = [await client.submit(TaskType.ECHO, "echo", {"data": i}) for i in range(2)]
    running = [asyncio.create_task(client.result(h, timeout=120)) for h in handles]
    await asyncio.sleep(2)
    assert not any(r.done() for r in running)
    echo_net.start_relay()
    await echo_net.wait_relay()
    assert await asyncio.gather(*running) == [{"echo": 0}, {"echo": 1}]
    # and once more, killed between two tasks: uploads made before the restart survive it
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "again"})
    assert await client.result(handle, timeout=60) == {"echo": "again"}
    echo_net.stop_process("relay", signal.SIGKILL)
    echo_net.start_relay()
    await echo_net.wait_relay()
    assert await client.relay.download_result(handle.commitment)  # still there
    await assert_all_ended_and_conserved(echo_net)


async def test_chain_unreachable_for_ten_seconds(tmp_path: Path) -> None:
    port = free_port()
    proxy = CuttableProxy(port).start()
    net = await start_devnet(tmp_path, nodes=2, node_models=["echo"], port=port,
                             rpc_url=proxy.url, ws_url=proxy.ws_url)
    try:
        assert net.config is not None
        async with Client(config=net.config) as client:
            handles = [await client.submit(TaskType.ECHO, "echo", {"data": i}) for i in range(3)]
            running = [asyncio.create_task(client.result(h, timeout=120)) for h in handles]
            proxy.cut()
            await asyncio.sleep(10)
            proxy.restore()
            assert await asyncio.gather(*running) == [{"echo": i} for i in range(3)]
            # and a task created after the outage
            assert await client.run(TaskType.ECHO, "echo", {"data": "after"}) == {"echo": "after"}
        await assert_all_ended_and_conserved(net)
    finally:
        net.stop()
        proxy.stop()


async def test_one_second_blocks(tmp_path: Path) -> None:
    net = await start_devnet(tmp_path, nodes=2, node_models=["echo"], block_time=1)
    try:
        assert net.config is not None
        async with Client(config=net.config) as client:
            results = await asyncio.gather(*(client.run(TaskType.ECHO, "echo", {"data": i}, timeout=120)
                                             for i in range(3)))
            assert results == [{"echo": i} for i in range(3)]
        book = await assert_all_ended_and_conserved(net)
        assert book["SUCCESS"] == 3
    finally:
        net.stop()
