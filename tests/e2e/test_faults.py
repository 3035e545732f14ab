"""Daemons killed and restarted mid-task, the chain unreachable for 10 s, one-second
blocks: every task still reaches a correct end on chain, and money is conserved.

A node killed at an exact moment (after it fetched the parameters, before ``submitScore``)
runs an LLM task against a model server this test holds: the node's request reaching it
proves the parameters were fetched, decrypted and checked, and nothing can be scored
until the test lets the server answer, so the kill lands in that window without a race.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gridtask.crypto import task_id_hash
from gridtask.devnet import Devnet
from gridtask.exceptions import TaskAborted
from gridtask.sdk import Client, TaskHandle, TaskState, TaskType

from .conftest import (
    assert_all_ended_and_conserved,
    devnet_behind_cuttable_proxy,
    running_devnet,
    scored_unvalidated,
    start_devnet,
    wait_state,
)
from .model_server import HeldModelServer

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
    handle, _ = await scored_unvalidated(client, "kept on disk")  # no validation yet
    for name in ["node0", "node1"]:
        echo_net.stop_process(name, signal.SIGKILL)
    await client.chain.validate_single_task(handle.commitment, task_id_hash(handle.secret), handle.nonce)
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
    async with devnet_behind_cuttable_proxy(tmp_path, nodes=2, node_models=["echo"]) as (net, proxy):
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


# ---------------------------------------------------------------- killed after fetching


@pytest.fixture
def model_server() -> Iterator[HeldModelServer]:
    server = HeldModelServer()
    yield server
    server.close()


@pytest.fixture
async def held_net(tmp_path: Path, model_server: HeldModelServer) -> AsyncIterator[Devnet]:
    """One node whose only model is the held server's."""
    async with running_devnet(tmp_path, nodes=1, node_models=[f"openai:held={model_server.url}"]) as net:
        yield net


async def kill_after_parameters_fetched(net: Devnet, client: Client, server: HeldModelServer,
                                        stage_timeout: int) -> tuple[TaskHandle, asyncio.Task[Any]]:
    """Submit a task, let the SDK upload its parameters, and SIGKILL the node the moment it
    runs them: after the fetch, before ``submitScore``."""
    handle = await client.submit(TaskType.LLM, "held", {"prompt": "hold on"}, stage_timeout=stage_timeout)
    running = asyncio.create_task(client.result(handle, timeout=stage_timeout + 40))
    assert await asyncio.to_thread(server.asked.wait, 60), "the node never ran the task"
    assert f"task {handle.commitment.hex()[:10]}: parameters fetched" in (net.home / "node0.log").read_text()
    net.stop_process("node0", signal.SIGKILL)
    info = await client.task(handle.commitment)
    assert info is not None and info.state == TaskState.STARTED and info.score == bytes(32)  # no score yet
    return handle, running


async def test_node_killed_after_fetching_parameters_finishes_after_restart(
    held_net: Devnet, model_server: HeldModelServer,
) -> None:
    assert held_net.config is not None
    async with Client(config=held_net.config) as client:
        handle, running = await kill_after_parameters_fetched(held_net, client, model_server, stage_timeout=60)
        model_server.release.set()
        held_net.start_node(0)
        assert await running == {"text": "re: hold on"}
        assert model_server.requests == 2  # run again from the chain's STARTED, by the restarted node
        info = await client.task(handle.commitment)
        assert info is not None and info.state == TaskState.SUCCESS
        assert await client.chain.balance_of(info.node) == handle.fee
    await assert_all_ended_and_conserved(held_net)


async def test_node_killed_after_fetching_parameters_and_never_restarted_the_sdk_aborts(
    held_net: Devnet, model_server: HeldModelServer,
) -> None:
    """Never restarted: the SDK aborts the task itself a few seconds after the stage deadline
    and raises ``TaskAborted``; the fee is back with its creator, with nothing else done."""
    assert held_net.config is not None
    stage_s = 8
    async with Client(config=held_net.config) as client:
        handle, running = await kill_after_parameters_fetched(held_net, client, model_server, stage_timeout=stage_s)
        info = await client.task(handle.commitment)
        assert info is not None
        with pytest.raises(TaskAborted):
            await running
        late = time.time() - info.deadline
        print(f"the SDK aborted the task {late:.1f} s after its stage deadline")
        assert late < 10
        assert await client.chain.balance_of() == handle.fee  # refunded
    await assert_all_ended_and_conserved(held_net, expect=TaskState.ABORTED)
