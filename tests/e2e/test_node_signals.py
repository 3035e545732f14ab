"""`gridtask node` stops within 5 s of SIGTERM whatever it waits on, and a restarted node
finishes (or gives up on) its task correctly: real node processes, real signals, a real
anvil and relay. A second signal exits at once. A node gives up on a task whose parameters
never came before its deadline, so the contract does not pause it; one restarted too late
for that is paused (it lost its turn), says why, and takes tasks again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gridtask.devnet import Devnet
from gridtask.sdk import Client, TaskState, TaskType
from gridtask.types import NodeStatus

from .conftest import (
    assert_all_ended_and_conserved,
    devnet_behind_cuttable_proxy,
    scored_unvalidated,
    start_devnet,
    wait_state,
)
from .model_server import HeldModelServer

pytestmark = pytest.mark.e2e

STOP_BUDGET_S = 5.0


def node_log(net: Devnet, name: str = "node0") -> str:
    return (net.home / f"{name}.log").read_text()


def sigterm(net: Devnet, name: str = "node0", *, then: signal.Signals | None = None) -> tuple[float, int]:
    """Send SIGTERM (and ``then`` right after, if given); seconds until the node exited, and its code."""
    proc = net.processes.pop(name)
    assert proc.poll() is None, f"{name} was not running"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    if then is not None:
        proc.send_signal(then)
    try:
        code = proc.wait(STOP_BUDGET_S * 3)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{name} still running {STOP_BUDGET_S * 3:.0f} s after SIGTERM") from None
    took = time.monotonic() - started
    print(f"{name} exited {took:.2f} s after SIGTERM (code {code})")
    return took, code


def assert_stopped_cleanly(net: Devnet, took: float, code: int) -> None:
    assert took < STOP_BUDGET_S, f"took {took:.2f} s"
    assert code == 0
    assert "stopped" in node_log(net).strip().splitlines()[-1]


async def wait_log_grows(net: Devnet, text: str, timeout: float = 30) -> None:
    """Until one more line of the node's log mentions ``text`` (case aside) than now."""
    await wait_log_grows_from(net, node_log(net).lower().count(text), text, timeout)


async def wait_log_grows_from(net: Devnet, before: int, text: str, timeout: float = 30) -> None:
    """Until more than ``before`` lines of the node's log mention ``text`` (case aside)."""
    def count() -> int:
        return node_log(net).lower().count(text)

    deadline = time.monotonic() + timeout
    while count() <= before:
        assert time.monotonic() < deadline, f"no new {text!r} in the log: {node_log(net)[-2000:]}"
        await asyncio.sleep(0.2)


async def test_idle_node_stops_on_sigterm_and_runs_tasks_after_restart(one_echo_net: Devnet) -> None:
    assert one_echo_net.config is not None
    took, code = sigterm(one_echo_net)
    assert_stopped_cleanly(one_echo_net, took, code)
    one_echo_net.start_node(0)
    async with Client(config=one_echo_net.config) as client:
        assert await client.run(TaskType.ECHO, "echo", {"data": "back"}, timeout=90) == {"echo": "back"}
    await assert_all_ended_and_conserved(one_echo_net)


async def aborted_at(client: Client, key: bytes) -> tuple[str, int]:
    """The reason of the task's ``TaskAborted`` and the timestamp of the block that holds it."""
    aborted = next(e for e in await client.events(key) if e.name == "TaskAborted")
    block = await client.chain.w3.eth.get_block(aborted.block_number)
    return str(aborted.args["reason"]), int(block["timestamp"])


async def test_node_waiting_for_parameters_stops_and_after_restart_gives_up_before_the_deadline(
    one_echo_net: Devnet,
) -> None:
    assert one_echo_net.config is not None
    async with Client(config=one_echo_net.config) as client:
        stage_s = 20  # room for the restart below on a loaded machine; the node gives up 5 s before the end
        handle = await client.submit(TaskType.ECHO, "echo", {"data": "never sent"}, stage_timeout=stage_s)
        await wait_state(client, handle.task_id, TaskState.STARTED)
        await asyncio.sleep(1.5)  # the node is in its long poll on the relay now
        took, code = sigterm(one_echo_net)
        assert_stopped_cleanly(one_echo_net, took, code)
        info = await client.task(handle.commitment)
        assert info is not None and info.state == TaskState.STARTED  # nothing ended it on the way out
        one_echo_net.start_node(0)
        # The parameters never come: the restarted node gives up, before the stage deadline.
        await wait_state(client, handle.task_id, TaskState.ABORTED, timeout=stage_s + 60)
        reason, at = await aborted_at(client, handle.commitment)
        assert reason == "node: parameters never arrived"
        print(f"the node aborted {info.deadline - at} s before the deadline")
        assert at <= info.deadline
        node = await client.chain.get_node(info.node)
        assert node is not None and node.status == NodeStatus.IDLE  # in time: not paused
        assert await client.chain.balance_of() == handle.fee  # the fee came back to its creator
    await assert_all_ended_and_conserved(one_echo_net, expect=TaskState.ABORTED)


async def test_node_restarted_past_its_deadline_is_paused_says_why_and_takes_tasks_again(
    one_echo_net: Devnet,
) -> None:
    """Down while its task's deadline passed: the restarted node aborts the task late, the
    contract pauses it for that (it lost its turn), and the node resumes and runs the next task."""
    assert one_echo_net.config is not None
    async with Client(config=one_echo_net.config) as client:
        stage_s = 5
        handle = await client.submit(TaskType.ECHO, "echo", {"data": "never sent"}, stage_timeout=stage_s)
        await wait_state(client, handle.task_id, TaskState.STARTED)
        one_echo_net.stop_process("node0", signal.SIGKILL)
        info = await client.task(handle.commitment)
        assert info is not None
        await asyncio.sleep(max(0.0, info.deadline + 1 - time.time()))
        one_echo_net.start_node(0)
        await wait_state(client, handle.task_id, TaskState.ABORTED, timeout=60)
        reason, at = await aborted_at(client, handle.commitment)
        assert reason == "node: parameters never arrived" and at > info.deadline
        await wait_log_grows_from(one_echo_net, 0, "lost its turn; resuming")
        assert f"task {handle.commitment.hex()[:10]} ended past its deadline" in node_log(one_echo_net)
        paused = [e.name for e in await client.chain.find_logs([client.chain.events.topic("NodePaused")])]
        assert paused == ["NodePaused"]
        assert await client.run(TaskType.ECHO, "echo", {"data": "back"}, timeout=90) == {"echo": "back"}
    await assert_all_ended_and_conserved(one_echo_net)


async def test_node_holding_an_unvalidated_score_stops_and_delivers_after_restart(one_echo_net: Devnet) -> None:
    assert one_echo_net.config is not None
    async with Client(config=one_echo_net.config) as client:
        handle, info = await scored_unvalidated(client, "kept")  # no validation yet
        took, code = sigterm(one_echo_net)
        assert_stopped_cleanly(one_echo_net, took, code)
        saved = list((one_echo_net.home / "nodes").glob("*/results/*.bin"))
        assert [p.name for p in saved] == [handle.commitment.hex() + ".bin"]  # the committed result, on disk
        one_echo_net.start_node(0)
        assert await client.result(handle, timeout=90) == {"echo": "kept"}  # validates, then the node delivers
    await assert_all_ended_and_conserved(one_echo_net)


async def test_node_backing_off_from_an_unreachable_chain_stops_and_finishes_after_restart(tmp_path: Path) -> None:
    async with devnet_behind_cuttable_proxy(tmp_path, nodes=1, node_models=["echo"]) as (net, proxy):
        assert net.config is not None
        async with Client(config=net.config) as client:
            handle = await client.submit(TaskType.ECHO, "echo", {"data": "through the outage"})
            await wait_state(client, handle.task_id, TaskState.STARTED)
            proxy.cut()
            await wait_log_grows(net, "unreachable")  # the node is retrying now
            took, code = sigterm(net)
            assert_stopped_cleanly(net, took, code)
            # Started while the chain is away, it backs off in its start-up: SIGTERM ends that too.
            net.start_node(0)
            await wait_log_grows(net, "unreachable")
            took, code = sigterm(net)
            assert_stopped_cleanly(net, took, code)
            proxy.restore()
            net.start_node(0)
            assert await client.result(handle, timeout=90) == {"echo": "through the outage"}
        await assert_all_ended_and_conserved(net)


async def test_a_second_signal_exits_at_once(one_echo_net: Devnet) -> None:
    took, code = sigterm(one_echo_net, then=signal.SIGINT)
    # Two signals pending at once are delivered lowest number first (SIGINT before SIGTERM) when
    # the node was not scheduled between the two sends, as on a loaded machine: either may be second.
    second = {128 + s: s for s in (signal.SIGINT, signal.SIGTERM)}.get(code)
    assert second is not None, f"exit code {code}: not the forced exit, the graceful one exits 0"
    assert took < 1.0
    assert f"{second.name} again: exiting now" in node_log(one_echo_net)


async def test_node_running_a_task_stops_and_runs_it_again_after_restart(tmp_path: Path) -> None:
    """SIGTERM while the executor is busy with the task (its model server holds the answer)."""
    server = HeldModelServer()
    net = await start_devnet(tmp_path, nodes=1, node_models=[f"openai:held={server.url}"])
    try:
        assert net.config is not None
        async with Client(config=net.config) as client:
            handle = await client.submit(TaskType.LLM, "held", {"prompt": "busy"})
            running = asyncio.create_task(client.result(handle, timeout=120))
            assert await asyncio.to_thread(server.asked.wait, 60), "the node never ran the task"
            took, code = sigterm(net)
            assert_stopped_cleanly(net, took, code)
            info = await client.task(handle.commitment)
            assert info is not None and info.state == TaskState.STARTED  # it did not score on the way out
            server.release.set()
            net.start_node(0)
            assert await running == {"text": "re: busy"}
        await assert_all_ended_and_conserved(net)
    finally:
        net.stop()
        server.close()
