"""Reorgs on a real anvil: the event follower takes back what a reorg removed (poll and push
paths), trails the head by N confirmations when asked, and a node daemon and the SDK carry
a task through a chain that went back under them."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets

from gridtask.chain.anvil import Anvil, rpc_call
from gridtask.chain.client import ChainClient, ChainEvent
from gridtask.chain.deploy import NetworkParams, deploy
from gridtask.chain.events import EventFollower
from gridtask.crypto import task_commitment, task_key
from gridtask.devnet import Devnet
from gridtask.keys import Identity
from gridtask.sdk import Client, TaskState, TaskType

from .conftest import assert_all_ended_and_conserved, funded_account, wait_state

pytestmark = pytest.mark.e2e


@dataclass
class Chain:
    anvil: Anvil
    client: ChainClient

    def rpc(self, method: str, *params: object) -> object:
        return rpc_call(self.anvil.url, method, list(params))

    async def queue_task(self) -> bytes:
        """A task no node can run: it waits in the queue (TaskCreated, TaskQueued). Each from a
        fresh account, so that no client sends a reorged transaction again (that has its own test)."""
        creator = Identity.generate()
        self.anvil.fund(creator.address, 10**20)
        commitment = task_commitment(os.urandom(32), nonce := os.urandom(32))
        async with ChainClient(self.anvil.url, self.client.address, creator) as client:
            await client.create_task(
                task_type=TaskType.ECHO, commitment=commitment, nonce=nonce, models=["nobody-serves-it"],
                min_vram=0, required_gpu="", params_hash=os.urandom(32), task_size=1, timeout=60, fee=10**15)
            await client.start_task(task_key(creator.address, commitment), ["nobody-serves-it"], 0, "")
        return task_key(creator.address, commitment)


@pytest.fixture
async def chain() -> AsyncIterator[Chain]:
    with Anvil() as anvil:
        deployer, app = Identity.generate(), Identity.generate()
        for ident in (deployer, app):
            anvil.fund(ident.address, 10**22)
        contract = await deploy(anvil.url, deployer, deployer.address, NetworkParams())
        async with ChainClient(anvil.url, contract, app) as client:
            yield Chain(anvil, client)


async def collect(follower: EventFollower, quiet: float = 1.5) -> list[ChainEvent]:
    """Every event delivered until none has come for ``quiet`` seconds."""
    out = []
    while (event := await follower.next(timeout=quiet)) is not None:
        out.append(event)
    return out


def summary(events: list[ChainEvent]) -> list[tuple[str, bytes | None, bool]]:
    return [(e.name, e.commitment, e.removed) for e in events]


@pytest.mark.parametrize("push", [False, True], ids=["poll", "push"])
async def test_events_of_reorged_blocks_come_back_removed_and_new_ones_arrive(chain: Chain, push: bool) -> None:
    """anvil_reorg replaces the block holding task A's events; evm_revert then takes the chain
    back under the follower's cursor, and task C's events land at the very block number and
    log indices of B's: A and B are delivered again as removed, C is delivered."""
    follower = EventFollower(chain.client, ws_url=chain.anvil.ws_url if push else "", poll_interval=0.05)
    async with follower:
        if push:
            await asyncio.wait_for(follower.connected.wait(), 10)
        snapshot = chain.rpc("evm_snapshot")
        a = await chain.queue_task()
        assert summary(await collect(follower)) == [("TaskCreated", a, False), ("TaskQueued", a, False)]

        chain.rpc("anvil_reorg", 2, [])  # A's creation and start blocks are replaced by empty ones
        assert await chain.client.get_task(a) is None
        got = await collect(follower)
        assert sorted(summary(got)) == [("TaskCreated", a, True), ("TaskQueued", a, True)]
        removed = {e.key for e in got}

        b = await chain.queue_task()
        assert summary(await collect(follower)) == [("TaskCreated", b, False), ("TaskQueued", b, False)]
        chain.rpc("evm_revert", snapshot)  # back below the cursor: B's blocks are gone
        c = await chain.queue_task()
        got = await collect(follower)
        assert sorted(summary(got)) == sorted([
            ("TaskCreated", b, True), ("TaskQueued", b, True), ("TaskCreated", c, False), ("TaskQueued", c, False),
        ])
        assert not removed & {e.key for e in got if not e.removed}


async def test_a_log_pushed_with_removed_takes_the_event_back_once(chain: Chain) -> None:
    """anvil never pushes ``removed: true``; geth and others do after a reorg. A socket that speaks
    eth_subscribe pushes a real log of the contract, then the same log marked removed (twice)."""
    key = await chain.queue_task()
    logs = chain.rpc("eth_getLogs", {"address": chain.client.address, "fromBlock": "0x0", "toBlock": "latest"})
    assert isinstance(logs, list) and logs
    created = logs[0]

    async def node(ws: websockets.ServerConnection) -> None:
        request = json.loads(await ws.recv())
        assert request["method"] == "eth_subscribe"
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x1"}))
        for raw in (created, {**created, "removed": True}, {**created, "removed": True}):
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                                      "params": {"subscription": "0x1", "result": raw}}))
        await ws.wait_closed()

    async with websockets.serve(node, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        # the poll starts at the head: it will not read the log again itself
        async with EventFollower(chain.client, ws_url=f"ws://127.0.0.1:{port}", poll_interval=3600) as follower:
            got = await collect(follower, quiet=1.0)
    assert summary(got) == [("TaskCreated", key, False), ("TaskCreated", key, True)]


async def test_confirmations_hold_events_back_and_hide_shallow_reorgs(chain: Chain) -> None:
    follower = EventFollower(chain.client, ws_url=chain.anvil.ws_url, confirmations=2, poll_interval=0.05)
    async with follower:
        await asyncio.wait_for(follower.connected.wait(), 10)
        shallow = await chain.queue_task()  # created, then started (queued) in the next block
        assert await collect(follower, quiet=1.0) == []  # its creation has one confirmation: not yet
        chain.rpc("anvil_reorg", 2, [])  # the task never reached two confirmations: never seen
        chain.rpc("evm_mine")
        chain.rpc("evm_mine")
        assert await collect(follower, quiet=1.0) == []
        assert await chain.client.get_task(shallow) is None

        deep = await chain.queue_task()
        assert await collect(follower, quiet=1.0) == []
        chain.rpc("evm_mine")  # the creation's two confirmations; the start has one
        assert summary(await collect(follower)) == [("TaskCreated", deep, False)]
        chain.rpc("evm_mine")
        assert summary(await collect(follower)) == [("TaskQueued", deep, False)]


async def test_a_restarted_follower_notices_a_reorg_at_its_saved_cursor(chain: Chain, tmp_path: Path) -> None:
    """The follower stops after reading task A's blocks (its creation, then its start); a reorg
    replaces both with a block that creates task B and an empty one (same height). Restarted
    from its saved cursor, it reads B."""
    cursor = tmp_path / "cursor"
    async with EventFollower(chain.client, cursor_path=cursor, poll_interval=0.05) as follower:
        await chain.queue_task()
        assert len(await collect(follower, quiet=1.0)) == 2
    commitment = task_commitment(os.urandom(32), nonce := os.urandom(32))
    data = chain.client.contract.encode_abi("createTask", args=[
        int(TaskType.ECHO), commitment, nonce, [b"nobody-serves-it".ljust(32, b"\0")], 0, bytes(32),
        os.urandom(32), 1, 60, False])
    dev_account = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil's first unlocked account
    tx = {"from": dev_account, "to": chain.client.address, "data": data, "value": hex(10**15), "gas": hex(2_000_000)}
    chain.rpc("anvil_reorg", 2, [[tx, 0]])
    b = task_key(dev_account, commitment)
    assert await chain.client.get_task(b) is not None
    async with EventFollower(chain.client, cursor_path=cursor, poll_interval=0.05) as follower:
        assert summary(await collect(follower, quiet=1.0)) == [("TaskCreated", b, False)]


async def test_a_task_in_flight_when_the_chain_goes_back_and_the_next_ones_complete(one_echo_net: Devnet) -> None:
    """One echo node. Task X starts on it and waits for its parameters; the chain is taken back
    to before X existed. Another account then creates Y, whose events take the very block number
    and log indices X's had: the node runs Y. X's creator creates Z: its client first sends X's
    reorged createTask again (a real chain puts a reorged transaction back in its pool), so X
    comes back, ends ABORTED after its 5 s stage (refunded), and Z ends SUCCESS after it.
    Money is conserved."""
    net = one_echo_net
    assert net.config is not None and net.chain is not None
    _, second_config = funded_account(net, 10**21)
    async with Client(config=net.config) as client, Client(config=second_config) as second:
        snapshot = rpc_call(net.chain.url, "evm_snapshot", [])
        x = await client.submit(TaskType.ECHO, "echo", {"data": "x"}, stage_timeout=5)
        await wait_state(client, x.task_id, TaskState.STARTED)
        await asyncio.sleep(0.5)  # the node is now waiting for X's parameters
        assert rpc_call(net.chain.url, "evm_revert", [snapshot]) is True
        assert await client.task(x.task_id) is None

        y = await second.submit(TaskType.ECHO, "echo", {"data": "y"}, stage_timeout=20)
        assert await second.result(y, timeout=40) == {"echo": "y"}

        z = await client.submit(TaskType.ECHO, "echo", {"data": "z"}, stage_timeout=20)
        assert await client.result(z, timeout=60) == {"echo": "z"}
        await wait_state(client, x.task_id, TaskState.ABORTED, timeout=30)
    book = await assert_all_ended_and_conserved(net)
    assert book["SUCCESS"] == 2 and book["ABORTED"] == 1, book


async def test_a_reorg_that_takes_back_the_creators_validation_is_validated_again(one_echo_net: Devnet) -> None:
    """Blocks are mined by hand. The creator's validateSingleTask is mined, its receipt read;
    then a reorg replaces that block with an empty one: the task is SCORE_READY again. The SDK,
    told by the removed TaskValidated (or its own re-read), validates again and the task
    succeeds; the node is paid once and money is conserved."""
    net = one_echo_net
    assert net.config is not None and net.chain is not None
    url = net.chain.url

    def pending() -> int:
        block = rpc_call(url, "eth_getBlockByNumber", ["pending", False])
        return len(block["transactions"]) if isinstance(block, dict) else 0

    async def mine_when_pending(timeout: float = 30) -> None:
        for _ in range(int(timeout / 0.05)):
            if pending():
                rpc_call(url, "evm_mine", [])
                return
            await asyncio.sleep(0.05)
        raise AssertionError("no transaction came")

    async with Client(config=net.config) as client:
        x = await client.submit(TaskType.ECHO, "echo", {"data": "x"}, stage_timeout=30)
        await wait_state(client, x.task_id, TaskState.STARTED)
        rpc_call(url, "evm_setAutomine", [False])
        running = asyncio.create_task(client.result(x, timeout=90))
        await mine_when_pending()  # the node's submitScore
        await wait_state(client, x.task_id, TaskState.SCORE_READY)
        await mine_when_pending()  # the creator's validateSingleTask
        await wait_state(client, x.task_id, TaskState.VALIDATED)
        await asyncio.sleep(1.5)  # the SDK has its receipt
        rpc_call(url, "anvil_reorg", [1, []])
        info = await client.task(x.task_id)
        assert info is not None and info.state == TaskState.SCORE_READY
        rpc_call(url, "evm_setAutomine", [True])
        rpc_call(url, "evm_mine", [])  # anything left in the pool
        assert await running == {"echo": "x"}
    book = await assert_all_ended_and_conserved(net)
    assert book["SUCCESS"] == 1, book
