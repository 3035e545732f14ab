"""A task whose node died ends by itself: once a stage deadline has passed with no
progress, ``Client.result()`` aborts it, the fee comes back, and ``TaskAborted`` is raised
within a few seconds of that deadline instead of the caller's whole wait."""

from __future__ import annotations

import signal
import time
import warnings
from pathlib import Path

import pytest

from gridtask.chain.models import same_address
from gridtask.config import save_config
from gridtask.devnet import Devnet
from gridtask.exceptions import TaskAborted
from gridtask.sdk import Client, NoNodeWarning, TaskState, TaskType

from .conftest import assert_all_ended_and_conserved, gridtask_async, wait_state

pytestmark = pytest.mark.e2e

STAGE_TIMEOUT_S = 8
WAIT_S = 60  # the caller's own wait: far longer than the stage, as an application would give
PROMPT_S = 5.0  # how soon after the deadline the SDK must have ended it


def node_name(net: Devnet, address: str) -> str:
    index = next(i for i, ident in enumerate(net.node_identities) if same_address(ident.address, address))
    return f"node{index}"


async def test_result_aborts_a_task_whose_node_was_killed(echo_net: Devnet, client: Client) -> None:
    fee = 4242 * 10**9
    owed_before = await client.chain.balance_of()
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "never run"}, fee=fee,
                                 stage_timeout=STAGE_TIMEOUT_S)
    await wait_state(client, handle.task_id, TaskState.STARTED)
    info = await client.task(handle.commitment)
    assert info is not None and info.state == TaskState.STARTED
    # The task has started on its node, which waits for the parameters: kill it there.
    echo_net.stop_process(node_name(echo_net, info.node), signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(TaskAborted) as aborted:
        await client.result(handle, timeout=WAIT_S)
    late = time.time() - info.deadline
    assert late < PROMPT_S, f"aborted {late:.1f} s after the stage deadline"
    assert time.monotonic() - started < STAGE_TIMEOUT_S + PROMPT_S  # not the caller's 60 s
    assert "no progress by the STARTED deadline" in aborted.value.reason
    assert aborted.value.fee == fee and "went back to your balance" in str(aborted.value)
    after = await client.task(handle.commitment)
    assert after is not None and after.state == TaskState.ABORTED
    events = await client.events(handle.commitment)
    abort = [e for e in events if e.name == "TaskAborted"]
    assert len(abort) == 1 and same_address(abort[0].args["by"], client.identity.address)
    assert await client.chain.balance_of() == owed_before + fee
    await assert_all_ended_and_conserved(echo_net, expect=TaskState.ABORTED)


async def test_result_aborts_a_task_no_node_took_before_its_deadline(echo_net: Devnet, client: Client,
                                                                     tmp_path: Path) -> None:
    """Queued for a model nobody serves: at the deadline it is over, not a wait for the caller's timeout."""
    owed_before = await client.chain.balance_of()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoNodeWarning)
        handle = await client.submit(TaskType.LLM, "nobody-serves-it", {"prompt": "hi"}, fee=99 * 10**9,
                                     stage_timeout=5)
    info = await client.task(handle.commitment)
    assert info is not None and info.state == TaskState.QUEUED
    with pytest.raises(TaskAborted, match="no progress by the QUEUED deadline"):
        await client.result(handle, timeout=WAIT_S)
    assert time.time() - info.deadline < PROMPT_S
    assert await client.chain.balance_of() == owed_before + 99 * 10**9
    assert echo_net.config is not None  # and `gridtask task show` says why it ended
    shown = await gridtask_async(save_config(echo_net.config, tmp_path / "config.json"), "task", "show", handle.task_id)
    assert shown.returncode == 0, shown.stderr
    assert "reason  creator: no progress by the QUEUED deadline (the fee was refunded)" in shown.stdout
    await assert_all_ended_and_conserved(echo_net, expect=TaskState.ABORTED)


async def test_a_live_node_is_never_aborted_under_it(echo_net: Devnet, client: Client) -> None:
    """Tasks that progress are never aborted, even with the shortest stage timeout."""
    for i in range(3):
        handle = await client.submit(TaskType.ECHO, "echo", {"data": i}, stage_timeout=5)
        assert await client.result(handle, timeout=WAIT_S) == {"echo": i}
    await assert_all_ended_and_conserved(echo_net, expect=TaskState.SUCCESS)
