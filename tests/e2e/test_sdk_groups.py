"""Validation groups through the SDK on a real devnet: three echo nodes, the real contract,
relay and node processes. The network's sampling rate is a deploy parameter, so a devnet
deployed with ``validation_rate_bps`` 10000 samples every task and one with 0 none: each
path below is taken for certain, not by chance."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridtask.chain.client import ChainClient
from gridtask.chain.models import same_address
from gridtask.config import save_config
from gridtask.crypto import seal
from gridtask.devnet import DEVNET_PARAMS, Devnet
from gridtask.exceptions import TransactionReverted
from gridtask.sdk import Client, GroupOutcome, TaskState, TaskType

from .conftest import assert_all_ended_and_conserved, gridtask_async, start_devnet, wait_state

pytestmark = pytest.mark.e2e

FEE = 7 * 10**15


def devnet(tmp_path_factory: pytest.TempPathFactory, name: str, rate_bps: int) -> Iterator[tuple[Devnet, Path]]:
    tmp = tmp_path_factory.mktemp(name)
    params = dataclasses.replace(DEVNET_PARAMS, validation_rate_bps=rate_bps)
    net = asyncio.run(start_devnet(tmp, nodes=3, node_models=["echo"], params=params))
    try:
        assert net.config is not None
        yield net, save_config(net.config, tmp / "config.json")
    finally:
        net.stop()


@pytest.fixture(scope="module")
def sampling_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, Path]]:
    """Every task is sampled (validation_rate_bps 10000)."""
    yield from devnet(tmp_path_factory, "sample-all", 10_000)


@pytest.fixture(scope="module")
def unsampled_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, Path]]:
    """No task is sampled (validation_rate_bps 0): only ``validate="always"`` makes groups."""
    yield from devnet(tmp_path_factory, "sample-none", 0)


async def success_fees(client: Client, keys: list[bytes]) -> list[int]:
    """What each member's node was paid (``TaskSuccess.fee``), once every member delivered."""
    fees = []
    for key in keys:
        await wait_state(client, key, TaskState.SUCCESS)
        fees += [int(e.args["fee"]) for e in await client.events(key) if e.name == "TaskSuccess"]
    return fees


async def test_a_sampled_task_becomes_a_group_of_three_on_three_nodes(sampling_net: tuple[Devnet, Path]) -> None:
    net, config = sampling_net
    assert net.config is not None
    async with Client(config=net.config) as client:
        owed = await client.chain.balance_of()
        handle = await client.submit(TaskType.ECHO, "echo", {"data": "checked"}, fee=FEE)
        assert handle.sampled is True and handle.is_group and len(handle.members) == 3
        keys = [m.key for m in handle.members]
        # three tasks, one task ID: three different commitments and parameters hashes
        created = [next(e for e in await client.events(k) if e.name == "TaskCreated") for k in keys]
        assert len({bytes(e.args["params_hash"]) for e in created}) == 3
        assert await client.result(handle, timeout=120) == {"echo": "checked"}

        group = handle.group
        assert group is not None and group.outcome == GroupOutcome.AGREED
        assert group.keys == tuple(keys) and group.agreeing == (True, True, True)
        assert group.sampled is True and group.slashed == {}
        nodes = [info.node for info in [await client.task(k) for k in keys] if info is not None]
        assert len({n.lower() for n in nodes}) == 3, nodes  # three distinct nodes ran them
        assert {n.lower() for n in nodes} == {i.address.lower() for i in net.node_identities}
        assert same_address(handle.node, nodes[0])  # the original's result was returned
        # Fees: the three nodes share the original's fee; the two extra fees come back.
        paid = await success_fees(client, keys)
        assert sorted(paid) == sorted([FEE // 3 + FEE % 3, FEE // 3, FEE // 3]), paid
        assert await client.chain.balance_of() == owed + 2 * FEE
        validated = [e for k in keys for e in await client.events(k) if e.name == "TaskValidated"]
        assert len(validated) == 3
        # `gridtask task show` names the group and its outcome, for any member
        shown = await gridtask_async(config, "task", "show", keys[2].hex())
        assert shown.returncode == 0, shown.stderr
        assert "group   AGREED (3 of 3 agree; sampled by the network)" in shown.stdout, shown.stdout
        assert shown.stdout.count("agreed") >= 3 and "(this task)" in shown.stdout
    await assert_all_ended_and_conserved(net)


async def test_validate_single_task_is_refused_for_a_sampled_task(sampling_net: tuple[Devnet, Path]) -> None:
    """The creator cannot take a sampled task's result without its group: the contract
    refuses to validate it alone, and the SDK goes on to validate the group."""
    net, _ = sampling_net
    assert net.config is not None
    async with Client(config=net.config) as client:
        handle = await client.submit(TaskType.ECHO, "echo", {"data": "alone?"}, fee=FEE)
        original = handle.original
        # The original's parameters go to its node as result() would send them; it scores.
        await wait_state(client, original.key, TaskState.STARTED)
        node = await client.chain.get_node(original.node)
        assert node is not None
        await client.relay.upload_params(original.key, seal(original.params, node.public_key))
        await wait_state(client, original.key, TaskState.SCORE_READY)
        with pytest.raises(TransactionReverted, match="tasks: task was sampled: validate it as a group of three"):
            await client.chain.validate_single_task(original.key, handle.opening, original.nonce)
        info = await client.task(original.key)
        assert info is not None and info.state == TaskState.SCORE_READY  # nothing changed
        assert await client.chain.is_sampled(original.key, handle.opening, original.nonce) is True
        with pytest.raises(TransactionReverted, match="task ID does not open the commitment"):
            await client.chain.is_sampled(original.key, handle.secret, original.nonce)  # the ID itself: no
        assert await client.result(handle, timeout=120) == {"echo": "alone?"}
        assert handle.group is not None and handle.group.outcome == GroupOutcome.AGREED
        await success_fees(client, [m.key for m in handle.members])
    await assert_all_ended_and_conserved(net)


async def test_validate_always_makes_a_group_where_each_node_keeps_its_fee(
    unsampled_net: tuple[Devnet, Path],
) -> None:
    net, config = unsampled_net
    assert net.config is not None
    async with Client(config=net.config) as client:
        # Without asking, a task of this network is never sampled: one task, validated alone.
        lone = await client.submit(TaskType.ECHO, "echo", {"data": 1}, fee=FEE)
        assert lone.sampled is False and not lone.is_group
        assert await client.result(lone, timeout=120) == {"echo": 1}
        assert lone.group is None
        owed = await client.chain.balance_of()
        handle = await client.submit(TaskType.ECHO, "echo", {"data": "sure"}, fee=FEE, validate="always")
        assert handle.sampled is False and len(handle.members) == 3
        assert await client.result(handle, timeout=120) == {"echo": "sure"}
        group = handle.group
        assert group is not None and group.outcome == GroupOutcome.AGREED and group.sampled is False
        assert len({n.lower() for n in group.nodes}) == 3
        assert await success_fees(client, list(group.keys)) == [FEE, FEE, FEE]  # each node its own fee
        assert await client.chain.balance_of() == owed  # nothing comes back
    # the CLI asks for it too
    proc = await gridtask_async(config, "task", "show", handle.task_id)
    assert "validation asked for" in proc.stdout, proc.stdout
    await assert_all_ended_and_conserved(net)


async def test_exclude_lists_keep_consecutive_tasks_off_the_same_node(unsampled_net: tuple[Devnet, Path]) -> None:
    """Every task excludes the nodes of the client's two most recent tasks: three tasks in a
    row run on three different nodes even when nothing else is running."""
    net, _ = unsampled_net
    assert net.config is not None
    async with Client(config=net.config) as client:
        nodes = []
        for i in range(3):
            handle = await client.submit(TaskType.ECHO, "echo", {"data": i}, fee=FEE)
            await client.result(handle, timeout=120)
            nodes.append(handle.node.lower())
        assert len(set(nodes)) == 3, nodes
    await assert_all_ended_and_conserved(net)


async def test_node_top_up_adds_to_the_stake(unsampled_net: tuple[Devnet, Path], tmp_path: Path) -> None:
    net, config = unsampled_net
    assert net.config is not None and net.chain is not None
    node = net.node_identities[0]
    node_config = save_config(
        net.config.model_copy(update={"private_key": "0x" + node.private_key.hex()}), tmp_path / "node.json")
    async with ChainClient(net.chain.url, net.config.contract, node) as chain:
        before = await chain.get_node(node.address)
        assert before is not None
        proc = await gridtask_async(node_config, "node", "top-up", "--amount", "0.25")
        assert proc.returncode == 0, proc.stderr
        after = await chain.get_node(node.address)
        assert after is not None and after.stake == before.stake + 25 * 10**16
    assert f"stake {before.stake / 10**18} -> {after.stake / 10**18} ETH" in proc.stderr, proc.stderr
    # the application's key is no node: one line, exit 2, nothing sent
    proc = await gridtask_async(config, "node", "top-up", "--amount", "0.25")
    assert proc.returncode == 2 and "is not a node on this network" in proc.stderr, proc.stderr
    await assert_all_ended_and_conserved(net)
