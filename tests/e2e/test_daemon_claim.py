"""The node daemon's claim path on a real anvil, with more idle nodes than the contract
probes per selection: a task can then be queued next to an idle node that could run it
(the selection missed it), and only that node's daemon, claiming on ``TaskQueued``,
starts it. A ``TaskQueued`` that arrives while the daemon is already claiming must not be
dropped. And the other claim a node makes: the fee of a task it scored whose creator let the
validation window pass (``claimUnvalidated``)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from gridtask.chain.anvil import ROOT
from gridtask.chain.client import ChainClient, ChainEvent
from gridtask.crypto import task_id_hash
from gridtask.devnet import FUNDING, Devnet
from gridtask.keys import Identity
from gridtask.node import daemon as daemon_module
from gridtask.node.daemon import NodeDaemon
from gridtask.node.settings import NodeSettings, build_executors
from gridtask.sdk import Client, TaskHandle, TaskState, TaskType
from gridtask.types import NodeStatus

from .conftest import (
    NO_SAMPLING,
    assert_all_ended_and_conserved,
    assert_conserved,
    funded_account,
    running_devnet,
    scored_unvalidated,
    wait_state,
)
from .model_server import HeldModelServer

pytestmark = pytest.mark.e2e

ETHER = 10**18
BIG_VRAM = 8000  # only the daemon under test has it; the crowd of idle nodes has none
MAX_TRIES = 30  # tasks created until one is queued (each is with probability ~0.45)
VALIDATION_WINDOW_S = 5


def contract_probes() -> int:
    return contract_constant("MAX_PROBES")


@pytest.fixture
async def crowded(tmp_path: Path) -> AsyncIterator[tuple[Devnet, NodeDaemon]]:
    """Anvil, the contract and the relay; MAX_PROBES + 4 idle echo nodes with no VRAM; and,
    in this process, the daemon under test: an echo node with ``BIG_VRAM``, started up."""
    net = Devnet(nodes=0, home=tmp_path / "devnet", params=NO_SAMPLING)  # one node runs these: no groups
    try:
        await net.start()
        assert net.config is not None and net.chain is not None
        crowd = [Identity.generate() for _ in range(contract_probes() + 4)]
        for ident in crowd:
            net.chain.fund(ident.address, FUNDING)
            async with ChainClient(net.config.rpc_url, net.config.contract, ident) as chain:
                await chain.join(gpu="cpu", vram=0, models=["echo"], public_key=ident.encryption_public_key,
                                 version=1, stake=ETHER)
        _, network = funded_account(net)
        settings = NodeSettings(network=network, models=["echo"], vram=BIG_VRAM, state_dir=tmp_path / "node")
        daemon = NodeDaemon(settings, build_executors(["echo"]))
        yield net, daemon
    finally:
        net.stop()


async def queued_next_to_idle(client: Client, daemon: NodeDaemon) -> TaskHandle:
    """A task only the daemon's node can run that the contract's selection missed: queued,
    with that node idle. A task the selection gave it is aborted by the node (which frees
    it) and another is created."""
    for _ in range(MAX_TRIES):
        handle = await client.submit(TaskType.ECHO, "echo", {"data": "queued"}, min_vram=BIG_VRAM)
        info = await client.task(handle.commitment)
        assert info is not None
        if info.state == TaskState.QUEUED:
            node = await client.chain.get_node(daemon.address)
            assert node is not None and node.status == NodeStatus.IDLE
            return handle
        assert info.node == daemon.address
        await daemon.chain.abort_task(handle.commitment, "node: not now")
    raise AssertionError(f"the selection found the only matching node {MAX_TRIES} times in a row")


async def events_of(client: Client, commitment: bytes) -> dict[str, ChainEvent]:
    head = await client.chain.block_number()
    return {e.name: e for e in await client.chain.get_logs(0, head) if e.commitment == commitment}


async def test_task_queued_while_claiming_is_claimed(crowded: tuple[Devnet, NodeDaemon]) -> None:
    """Two ``TaskQueued`` in a row: the first for a model this node does not serve (its claim
    ends at once), the second for a task it can run. The second must not be dropped."""
    net, daemon = crowded
    assert net.config is not None
    await daemon.startup()
    try:
        async with Client(config=net.config) as client:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no node serves other": that is the point
                other = await client.submit(TaskType.LLM, "other", {"prompt": "nobody runs this"})
            runnable = await queued_next_to_idle(client, daemon)
            first, second = await events_of(client, other.commitment), await events_of(client, runnable.commitment)
            for event in (first["TaskCreated"], second["TaskCreated"], first["TaskQueued"], second["TaskQueued"]):
                await daemon.handle(event)  # as the main loop does, back to back
            await wait_state(client, runnable.commitment, TaskState.STARTED, timeout=20)
            info = await client.task(runnable.commitment)
            assert info is not None and info.node == daemon.address
            assert (await client.task(other.commitment)).state == TaskState.QUEUED  # type: ignore[union-attr]
    finally:
        await daemon.shutdown_cleanup()


async def test_running_daemon_claims_what_the_selection_missed(crowded: tuple[Devnet, NodeDaemon]) -> None:
    """The whole daemon (``serve()``) with the crowd around it: tasks that the contract queued
    next to it are claimed and run to success; money is conserved."""
    net, daemon = crowded
    assert net.config is not None
    serving = asyncio.create_task(daemon.serve())
    try:
        async with Client(config=net.config) as client:
            for _ in range(100):
                if await client.chain.get_node(daemon.address) is not None:
                    break
                await asyncio.sleep(0.1)
            claimed = 0
            for _ in range(MAX_TRIES):
                handle = await client.submit(TaskType.ECHO, "echo", {"data": claimed}, min_vram=BIG_VRAM)
                assert await client.result(handle, timeout=60) == {"echo": claimed}
                events = await events_of(client, handle.commitment)
                assert events["TaskStarted"].args["node"] == daemon.address
                if "TaskQueued" in events:  # the selection missed it; the daemon's claim started it
                    claimed += 1
                    if claimed == 2:
                        break
            assert claimed == 2
    finally:
        daemon.shutdown()
        await asyncio.wait_for(serving, 10)
    await assert_all_ended_and_conserved(net)


def contract_constant(name: str) -> int:
    """A constant of the contract or of one of its modules (contracts/*.vy)."""
    sources = "\n".join(p.read_text() for p in sorted((ROOT / "gridtask" / "chain" / "contracts").glob("*.vy")))
    found = re.search(rf"^{name}: constant\(uint256\) = (\d+)", sources, re.M)
    assert found, f"{name} not found in the contracts"
    return int(found.group(1))


def test_the_daemons_sweep_bound_follows_the_contracts_queue_look() -> None:
    in_contract = contract_constant("QUEUE_SCAN"), contract_constant("SWEEP_SCAN")
    assert in_contract == (daemon_module.QUEUE_SCAN, daemon_module.SWEEP_SCAN)
    assert [daemon_module.sweep_polls(n) for n in (0, 4, 5, 8, 9, 41)] == [1, 1, 2, 2, 3, 11]


BLOCKERS = 40  # queued ahead of the runnable task: far more than one look of the contract sees


async def test_a_node_that_joins_late_reaches_a_task_behind_many_it_cannot_run(tmp_path: Path) -> None:
    """Forty well-paid tasks that ask for a GPU nobody has, then a poorly paid one the node
    can run, all queued before the node exists. Joining, the node's start-up sweeps the whole
    queue: the runnable task starts on it and succeeds (one look of the contract, as at join,
    sees only the first QUEUE_SCAN + SWEEP_SCAN tasks)."""
    async with running_devnet(tmp_path, nodes=0) as net:
        assert net.config is not None and net.chain is not None
        async with Client(config=net.config) as client:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no node serves echo yet": that is the point
                blockers = [await client.submit(TaskType.ECHO, "echo", {"data": i}, gpu="h100", fee=10**16)
                            for i in range(BLOCKERS)]
                runnable = await client.submit(TaskType.ECHO, "echo", {"data": "behind"}, fee=10**14)
            me = Identity.generate()
            net.chain.fund(me.address, FUNDING)
            network = net.config.model_copy(update={"private_key": SecretStr("0x" + me.private_key.hex())})
            daemon = NodeDaemon(NodeSettings(network=network, models=["echo"], state_dir=tmp_path / "late"),
                                build_executors(["echo"]))
            serving = asyncio.create_task(daemon.serve())
            try:
                assert await client.result(runnable, timeout=60) == {"echo": "behind"}
                events = await events_of(client, runnable.commitment)
                assert events["TaskStarted"].args["node"] == daemon.address
            finally:
                daemon.shutdown()
                await asyncio.wait_for(serving, 10)
            for handle in blockers:
                info = await client.task(handle.commitment)
                assert info is not None and info.state == TaskState.QUEUED
        await assert_conserved(net)


async def test_a_node_whose_creator_never_validates_claims_its_fee_after_the_window(tmp_path: Path) -> None:
    """The creator uploads the parameters and then stays silent: once the validation window
    after the score has passed, the node (a real ``gridtask node`` process) claims the fee
    itself; the task ends ABORTED "node paid", the creator gets nothing back, the node is free."""
    params = dataclasses.replace(NO_SAMPLING, validation_window=VALIDATION_WINDOW_S)
    async with running_devnet(tmp_path, nodes=1, node_models=["echo"], params=params) as net:
        assert net.config is not None
        async with Client(config=net.config) as client:
            handle, info = await scored_unvalidated(client, "never validated")  # and no more
            scored = await client.task(handle.commitment)
            assert scored is not None
            await wait_state(client, handle.commitment, TaskState.ABORTED, timeout=VALIDATION_WINDOW_S + 60)
            events = await events_of(client, handle.commitment)
            claimed = events["TaskAborted"]
            block = await client.chain.w3.eth.get_block(claimed.block_number)
            node = await client.chain.get_node(info.node)
            refunded = await client.chain.balance_of()
            paid = await client.chain.balance_of(info.node) + sum(
                int(e.args["amount"]) for e in await client.chain.get_logs(0, await client.chain.block_number())
                if e.name == "Withdrawal" and e.args["account"].lower() == info.node.lower())
        assert claimed.args["by"] == info.node
        assert claimed.args["reason"] == "creator did not validate in time: node paid"
        late = int(block["timestamp"]) - scored.deadline
        print(f"the node claimed {late} s after the validation window ended")
        assert 0 < late < 30  # not before the window ended, and soon after it
        assert refunded == 0 and paid == handle.fee
        assert node is not None and node.status == NodeStatus.IDLE
        log = (net.home / "node0.log").read_text()
        assert f"task {handle.commitment.hex()[:10]}: not validated within its window: claimed the fee" in log
        assert not list((net.home / "nodes").glob("*/results/*.bin"))  # nothing left to deliver
        await assert_all_ended_and_conserved(net, expect=TaskState.ABORTED)


async def test_a_scored_node_takes_the_next_task_and_delivers_the_first_while_computing_it(
    tmp_path: Path,
) -> None:
    """A node is busy only while it computes: once task A is scored it takes task B, and while
    B is being computed (its model server holds the answer) A is validated and delivered.
    One real ``gridtask node`` process serving echo and the held model."""
    server = HeldModelServer()
    try:
        async with running_devnet(tmp_path, nodes=1, node_models=["echo", f"openai:held={server.url}"]) as net:
            assert net.config is not None
            async with Client(config=net.config) as client:
                first, info = await scored_unvalidated(client, "first")  # no validation yet
                node = await client.chain.get_node(info.node)
                assert node is not None and node.status == NodeStatus.IDLE  # scored: free again
                second = await client.submit(TaskType.LLM, "held", {"prompt": "next"})
                computing = asyncio.create_task(client.result(second, timeout=120))
                assert await asyncio.to_thread(server.asked.wait, 60), "the node never ran the second task"
                assert (await client.task(second.commitment)).node == info.node  # type: ignore[union-attr]
                await client.chain.validate_single_task(first.commitment, task_id_hash(first.secret), first.nonce)
                assert await client.result(first, timeout=60) == {"echo": "first"}  # delivered meanwhile
                held = await client.task(second.commitment)
                assert held is not None and held.state == TaskState.STARTED and not computing.done()
                server.release.set()
                assert await computing == {"text": "re: next"}
            await assert_all_ended_and_conserved(net)
    finally:
        server.close()
