"""Whole tasks on a real anvil, through the relay and real node processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gridtask.config import save_config
from gridtask.devnet import Devnet, default_node_models
from gridtask.exceptions import TaskErrored, TransactionReverted, ValidationError
from gridtask.sdk import Client, Model, NoNodeWarning, Simple, StageTimeoutWarning, Task, TaskState, TaskType
from gridtask.sdk.dria import Dria
from gridtask.types import TaskErrorCode

from .conftest import assert_all_ended_and_conserved, assert_conserved, start_devnet

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


async def test_echo_tasks_succeed_and_money_is_conserved(echo_net: Devnet, client: Client) -> None:
    results = await asyncio.gather(*(client.run(TaskType.ECHO, "echo", {"data": [i, "x"]}) for i in range(4)))
    assert results == [{"echo": [i, "x"]} for i in range(4)]
    book = await assert_all_ended_and_conserved(echo_net)
    assert book["SUCCESS"] == 4


async def test_node_is_paid_the_fee_on_success(echo_net: Devnet, client: Client) -> None:
    handle = await client.submit(TaskType.ECHO, "echo", {"data": 1}, fee=12345 * 10**9)
    await client.result(handle)
    info = await client.task(handle.commitment)
    assert info is not None and info.state == TaskState.SUCCESS
    events = [e.name for e in await client.events(handle.commitment)]
    assert events == ["TaskCreated", "TaskStarted", "TaskScoreReady", "TaskValidated", "TaskSuccess"]
    success = [e for e in await client.events(handle.commitment) if e.name == "TaskSuccess"][0]
    assert success.args["fee"] == 12345 * 10**9 and success.args["node"] == info.node
    await assert_all_ended_and_conserved(echo_net)


async def test_parameters_that_do_not_match_their_hash_are_a_task_error(echo_net: Devnet, client: Client) -> None:
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "honest"})
    handle.params = handle.params.replace(b"honest", b"forged")  # the relay gets other bytes
    with pytest.raises(TaskErrored) as err:
        await client.result(handle, timeout=60)
    assert err.value.code == TaskErrorCode.PARAMETERS_HASH_MISMATCH
    await assert_all_ended_and_conserved(echo_net, expect=TaskState.ERRORED)


async def test_reverts_reach_the_user_with_the_contracts_reason(echo_net: Devnet, client: Client) -> None:
    with pytest.raises(TransactionReverted, match="tasks: timeout out of bounds"):
        await client.submit(TaskType.ECHO, "echo", {"data": 1}, stage_timeout=1)
    with pytest.raises(ValidationError):
        await client.submit(TaskType.ECHO, "a-model-name-that-is-far-too-long-for-bytes32", {"data": 1})
    book = await assert_conserved(echo_net)  # a refused creation leaves nothing in escrow
    assert book["escrow"] == 0 and book["balance"] == book["stakes"], book


async def test_task_for_an_unserved_model_warns_and_queues(echo_net: Devnet, client: Client) -> None:
    with pytest.warns(NoNodeWarning, match="no node serves nobody-has-it"):
        handle = await client.submit(TaskType.LLM, "nobody-has-it", {"prompt": "hi"})
    info = await client.task(handle.commitment)
    assert info is not None and info.state == TaskState.QUEUED
    await client.chain.cancel_task(handle.commitment)
    await assert_all_ended_and_conserved(echo_net, expect=TaskState.ABORTED)


@pytest.mark.slow
async def test_readme_example_and_demo_run_on_a_devnet_with_real_models(tmp_path: Path) -> None:
    """The README's Python example, unchanged, prints an answer; embeddings come back."""
    net = await start_devnet(tmp_path, nodes=1, node_models=default_node_models())
    try:
        assert net.config is not None
        async with Client(config=net.config) as client:
            result = await client.run(TaskType.EMBED, Model.MINILM.value, {"texts": ["a", "b"]})
            assert len(result["embeddings"]) == 2 and len(result["embeddings"][0]) == 384
            simple = Simple()
            res = await Dria(client=client).execute(Task(workflow=simple.workflow(prompt="Hi").model_dump(),
                                                         models=[Model.TINY_LLM]), timeout=60)
            assert simple.parse_result(res).strip()
        readme = (ROOT / "README.md").read_text()
        example = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "execute(" in b)
        (tmp_path / "example.py").write_text(example)
        config = save_config(net.config, tmp_path / "config.json")
        env = dict(os.environ, GRIDTASK_CONFIG=str(config))
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, str(tmp_path / "example.py")],
                                       env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip(), "the README example printed nothing"
        await assert_all_ended_and_conserved(net)
    finally:
        net.stop()


def test_committed_abi_names_every_function_the_sdk_calls() -> None:
    from gridtask.chain import artifact

    names = {item.get("name") for item in artifact.abi()}
    for fn in ["createTask", "startTask", "isSampled", "submitScore", "validateSingleTask", "validateTaskGroup",
               "disputeResult", "reportResultUploaded", "abortTask", "cancelTask", "reportTaskError", "withdraw",
               "join", "topUp", "takeQueuedTask", "getTask", "getNode", "min_fee_per_unit", "validation_rate_bps"]:
        assert fn in names
    assert json.loads((ROOT / "package.json").read_text())["dependencies"]["@foundry-rs/anvil"] == "1.7.1"


async def test_queued_task_is_taken_by_a_node_that_joins_later(echo_net: Devnet, client: Client) -> None:
    """No node serves the model: the task waits in the queue; a node that joins with it runs it."""
    from gridtask.node.executors.tiny_llm import build_tiny_llm

    # The node must start and load its model while the task waits: longer than the SDK's default
    # stage timeout on the devnet (half its 60 s validation window). This devnet samples nothing,
    # so no group can form and the SDK does not warn about the long stage.
    with pytest.warns(NoNodeWarning, match="no node serves late-model") as caught:
        handle = await client.submit(TaskType.LLM, "late-model", {"prompt": "hello", "max_tokens": 4},
                                     stage_timeout=120)
    assert not [w for w in caught if issubclass(w.category, StageTimeoutWarning)]
    running = asyncio.create_task(client.result(handle, timeout=180))
    await asyncio.sleep(1)
    info = await client.task(handle.commitment)
    assert info is not None and info.state == TaskState.QUEUED
    tiny = build_tiny_llm(echo_net.home / "tiny")
    echo_net.add_node([f"llm:late-model={tiny}"])
    result = await running
    assert result["text"].strip()
    events = [e.name for e in await client.events(handle.commitment)]
    assert events[:3] == ["TaskCreated", "TaskQueued", "TaskStarted"]
    await assert_all_ended_and_conserved(echo_net)
