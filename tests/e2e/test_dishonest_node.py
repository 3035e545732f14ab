"""A node that commits the honest score and delivers a forged result is caught on chain.

The node is the real daemon, in this process, on a real anvil with the real relay. It runs
the task honestly and commits the honest result's score, but the bytes it encrypts (under
the task's result key, as every node does) hold a forged result: so the ciphertext hash it
commits with the score, and the bytes it delivers, are the forgery's. The relay can only
check a delivery against that hash, so it accepts it; the creator's SDK decrypts it, finds
that it does not fit the score, and proves it on chain (``disputeResult``): the contract
re-derives the result key, decrypts the committed ciphertext, and compares. The task ends
INVALIDATED, the fee goes back to the creator, the node is slashed, and, its stake now below
the minimum, it is paused and takes no task until it tops up; its daemon says all of that.

And a node that answers wrong consistently (its delivery fits its wrong score) in a task
validated by a group of three with two honest nodes: outvoted, invalidated and slashed.
Every node's daemon reports the outcome for its own task only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import warnings
from pathlib import Path

import pytest
from pydantic import SecretStr

import gridtask.node.worker as worker_module
from gridtask.chain.models import ETHER
from gridtask.crypto import decrypt_result, encrypt_result, keccak, result_key
from gridtask.devnet import FUNDING
from gridtask.exceptions import ResultMismatch
from gridtask.keys import Identity
from gridtask.node import daemon as daemon_module
from gridtask.node.daemon import NodeDaemon
from gridtask.node.executors.base import ExecutorSet
from gridtask.node.executors.echo import EchoExecutor
from gridtask.node.settings import NodeSettings
from gridtask.scoring import canonical_json, score
from gridtask.sdk import Client, TaskState, TaskType
from gridtask.types import GroupOutcome, NodeStatus

from .conftest import assert_conserved, funded_account, running_devnet, wait_state

pytestmark = pytest.mark.e2e

FORGED = canonical_json({"echo": "forged"})


class ForgingCipher:
    """Stands in for the node's ``encrypt_result``, the step between its honest score and its
    commitment: keeps what it was asked to encrypt (the honest result, whose score the node
    commits) and encrypts the forgery instead, under the same result key."""

    def __init__(self) -> None:
        self.honest: list[bytes] = []
        self.delivered: list[bytes] = []

    def __call__(self, key: bytes, plain: bytes) -> bytes:
        self.honest.append(plain)
        self.delivered.append(encrypt_result(key, FORGED))
        return self.delivered[-1]


async def test_forged_delivery_is_disputed_the_node_slashed_paused_and_the_fee_refunded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    forging = ForgingCipher()
    monkeypatch.setattr(worker_module, "encrypt_result", forging)  # raises if the worker no longer uses this name
    caplog.set_level(logging.INFO, logger="gridtask.node")
    # The only node is the liar below; no task is sampled (the test devnet's default), so the
    # creator's check of the delivery against the score is the only check.
    async with running_devnet(tmp_path, nodes=0, node_models=["echo"]) as net:
        liar, network = funded_account(net)
        settings = NodeSettings(network=network, models=["echo"], state_dir=tmp_path / "liar", stake=ETHER,
                                withdraw_interval_s=3600)  # its fee stays in its balance, where a dispute takes it
        daemon = NodeDaemon(settings, ExecutorSet([EchoExecutor()]))
        serving = asyncio.create_task(daemon.serve())
        try:
            async with Client(config=net.config) as client:
                params = await client.chain.network_params()
                await _wait_joined(client, liar.address, serving)
                handle = await client.submit(TaskType.ECHO, "echo", {"data": "honest"})
                with pytest.raises(ResultMismatch, match="does not match the score") as err:
                    await client.result(handle, timeout=90)
                assert err.value.disputed and err.value.task_id == handle.task_id
                info = await client.task(handle.commitment)
                events = {e.name: e for e in await client.events(handle.commitment)}
                slashes = await client.slashes(handle.commitment)
                node = await client.chain.get_node(liar.address)
                refunded = await client.chain.balance_of()
                liar_balance = await client.chain.balance_of(liar.address)
                # Paused with too little stake: a task queued now stays queued, and the liar
                # neither sends a transaction for it nor even looks at it (no claim attempt).
                looked: list[bytes] = []
                get_task = daemon.chain.get_task

                async def spy(key: bytes) -> object:
                    looked.append(key)
                    return await get_task(key)

                monkeypatch.setattr(daemon.chain, "get_task", spy)
                sent_before = await _sent(client, liar.address)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "no node serves echo": the only one is paused
                    waiting = await client.submit(TaskType.ECHO, "echo", {"data": "after the slash"})
                await asyncio.sleep(3)
                waiting_info = await client.task(waiting.commitment)
                sent_after = await _sent(client, liar.address)
                looked_while_low = list(looked)
                # Topped up, it takes work again: the queued task starts on it.
                await daemon.chain.top_up(ETHER)
                await wait_state(client, waiting.commitment, TaskState.STARTED, timeout=30)
        finally:
            daemon.shutdown()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(serving, 30)
        # The node ran the task honestly and committed the honest result's score...
        assert info is not None and info.node.lower() == liar.address.lower()
        assert [json.loads(p) for p in forging.honest] == [{"echo": "honest"}]
        assert info.score == score(forging.honest[0], TaskType.ECHO)
        # ...and the hash of the forgery it delivered, which the relay checked and accepted...
        [delivered] = forging.delivered
        assert keccak(delivered) == info.result_hash
        assert decrypt_result(result_key(handle.secret, handle.nonce), delivered) == FORGED
        # ...and the creator's dispute proved it on chain.
        assert info.state == TaskState.INVALIDATED
        assert "TaskSuccess" in events and "TaskInvalidated" in events
        [slashed] = slashes
        assert slashed.args["node"].lower() == liar.address.lower()
        amount = int(slashed.args["amount"])
        assert amount == ETHER * params.slash_bps // 10_000
        # The fee came back to the creator, with the slash (a dispute has no agreeing nodes to
        # share it: the contract credits the creator who proved the mismatch)...
        assert refunded == handle.fee + amount
        assert liar_balance == 0  # ...the fee taken from the liar's balance, where its payment was
        assert node is not None and node.stake == ETHER - amount and node.status == NodeStatus.PAUSED
        assert waiting_info is not None and waiting_info.state == TaskState.QUEUED
        assert sent_after == sent_before and waiting.commitment not in looked_while_low
        # Its daemon said what happened, and what to do.
        said = caplog.text
        assert f"SLASHED {amount / ETHER:.6g} ETH" in said and slashed.args["reason"] in said
        assert f"stake left {(ETHER - amount) / ETHER:.6g} ETH" in said
        assert f"task {handle.commitment.hex()[:10]}: invalidated" in said
        assert f"top up with `{daemon_module.TOP_UP_COMMAND.format(amount=amount / ETHER)}`" in said
        assert "topped up" in said
        await assert_conserved(net)


class WrongEcho(EchoExecutor):
    """A consistent liar's executor: a plausible answer that is not the echo."""

    async def run(self, model: str, inputs: dict) -> dict:
        return {"echo": ["forged", (await super().run(model, inputs))["echo"]]}


async def test_node_outvoted_by_its_group_is_slashed_and_every_node_reports_its_own_outcome(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gridtask.node")
    async with running_devnet(tmp_path, nodes=2, node_models=["echo"]) as net:  # two honest nodes
        assert net.config is not None and net.chain is not None
        liar = Identity.generate()
        net.chain.fund(liar.address, FUNDING)
        network = net.config.model_copy(update={"private_key": SecretStr("0x" + liar.private_key.hex())})
        settings = NodeSettings(network=network, models=["echo"], state_dir=tmp_path / "liar")
        daemon = NodeDaemon(settings, ExecutorSet([WrongEcho()]))
        serving = asyncio.create_task(daemon.serve())
        try:
            async with Client(config=net.config) as client:
                await _wait_joined(client, liar.address, serving)
                handle = await client.submit(TaskType.ECHO, "echo", {"data": "x"}, validate="always")
                assert await client.result(handle, timeout=120) == {"echo": "x"}
                group = handle.group
                liar_node = await client.chain.get_node(liar.address)
                await asyncio.sleep(1)  # the daemons' logs of the last events
        finally:
            daemon.shutdown()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(serving, 30)
        assert group is not None and group.outcome == GroupOutcome.AGREED
        nodes = [n.lower() for n in group.nodes]
        lying = nodes.index(liar.address.lower())
        assert [not a for a in group.agreeing] == [i == lying for i in range(3)]
        assert liar_node is not None and liar_node.status == NodeStatus.PAUSED and liar_node.stake < ETHER
        # The liar's daemon: its own task only, rejected; the slash; the pause and what to do.
        said = caplog.text
        liar_task = group.keys[lying].hex()[:10]
        assert (f"task {liar_task}: validated against other runs: AGREED; this node's result REJECTED: "
                "it disagreed with the majority") in said
        assert f"task {liar_task}: invalidated" in said and "SLASHED" in said and "top up with" in said
        assert sum(f"task {k.hex()[:10]}: validated against other runs" in said for k in group.keys) == 1
        # Each honest daemon (a `gridtask node` process): its own task, accepted; nothing else.
        for index, name in enumerate(["node0", "node1"]):
            text = (net.home / f"{name}.log").read_text()
            address = net.node_identities[index].address.lower()
            own = group.keys[nodes.index(address)].hex()[:10]
            assert f"task {own}: validated against other runs: AGREED; this node's result accepted" in text
            assert text.count("validated against other runs") == 1
            assert "SLASHED" not in text
        await assert_conserved(net)


async def _sent(client: Client, address: str) -> int:
    """How many transactions ``address`` has sent (its nonce)."""
    return int(await client.chain.w3.eth.get_transaction_count(address))  # type: ignore[arg-type]


async def _wait_joined(client: Client, address: str, serving: asyncio.Task[None], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while await client.chain.get_node(address) is None:
        if serving.done():
            serving.result()  # the daemon's own error, if it failed to start
            raise AssertionError("the node stopped before it joined")
        if time.monotonic() > deadline:
            raise AssertionError(f"the node did not join in {timeout} s")
        await asyncio.sleep(0.2)
