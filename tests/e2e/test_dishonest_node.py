"""A node that commits a score and then delivers a result that does not match it.

The node is the real daemon, in this process, on a real anvil with the real relay. It runs
the task honestly and commits the honest result's score, but the bytes it seals hold a
forged result: so the ciphertext hash it commits with the score, and the bytes it
delivers, are the forgery's. The relay can only check a delivery against that hash, so it
accepts it and the task ends in success on chain (whether such a node is paid is the
trust issue's business); the SDK decrypts the result, checks it against the score, and
raises ``ResultMismatch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest

import gridtask.node.worker as worker_module
from gridtask.config import NetworkConfig
from gridtask.crypto import keccak, seal, unseal
from gridtask.devnet import FUNDING
from gridtask.exceptions import ResultMismatch
from gridtask.keys import Identity
from gridtask.node.daemon import NodeDaemon
from gridtask.node.executors.base import ExecutorSet
from gridtask.node.executors.echo import EchoExecutor
from gridtask.node.settings import NodeSettings
from gridtask.scoring import canonical_json, score
from gridtask.sdk import Client, TaskState, TaskType

from .conftest import assert_all_ended_and_conserved, start_devnet

pytestmark = pytest.mark.e2e

FORGED = canonical_json({"echo": "forged"})


class ForgingSeal:
    """Stands in for the node's ``seal``, the step between its honest score and its
    commitment: keeps what it was asked to seal (the honest result, whose score the node
    commits) and seals the forgery instead."""

    def __init__(self) -> None:
        self.honest: list[bytes] = []

    def __call__(self, plain: bytes, public_key: bytes) -> bytes:
        self.honest.append(plain)
        return seal(FORGED, public_key)


async def test_result_that_does_not_match_the_committed_score_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = await start_devnet(tmp_path, nodes=0, node_models=["echo"])  # the only node is the liar below
    forging = ForgingSeal()
    monkeypatch.setattr(worker_module, "seal", forging)  # raises if the worker no longer seals by this name
    try:
        assert net.config is not None and net.chain is not None
        liar = Identity.generate()
        net.chain.fund(liar.address, FUNDING)
        network = NetworkConfig(
            rpc_url=net.config.rpc_url, ws_url=net.config.ws_url, contract=net.config.contract,
            relay_url=net.config.relay_url, private_key="0x" + liar.private_key.hex(),
        )
        settings = NodeSettings(network=network, models=["echo"], state_dir=tmp_path / "liar")
        daemon = NodeDaemon(settings, ExecutorSet([EchoExecutor()]))
        serving = asyncio.create_task(daemon.serve())
        try:
            async with Client(config=net.config) as client:
                await _wait_joined(client, liar.address, serving)
                handle = await client.submit(TaskType.ECHO, "echo", {"data": "honest"})
                with pytest.raises(ResultMismatch, match="does not match the score") as err:
                    await client.result(handle, timeout=90)
                assert err.value.task_id == handle.task_id
                info = await client.task(handle.commitment)
                delivered = await client.relay.download_result(handle.commitment)
                plain = unseal(delivered, client.identity.encryption_private_key)
        finally:
            daemon.shutdown()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(serving, 30)
        # The node ran the task honestly and committed the honest result's score...
        assert info is not None and info.node.lower() == liar.address.lower()
        assert [json.loads(p) for p in forging.honest] == [{"echo": "honest"}]
        assert info.score == score(forging.honest[0])
        # ...and the hash of what it delivered, which the relay checked and reported: success on chain.
        assert info.state == TaskState.SUCCESS
        assert keccak(delivered) == info.result_hash
        assert plain == FORGED and score(plain) != info.score
        await assert_all_ended_and_conserved(net)
    finally:
        net.stop()


async def _wait_joined(client: Client, address: str, serving: asyncio.Task[None], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while await client.chain.get_node(address) is None:
        if serving.done():
            serving.result()  # the daemon's own error, if it failed to start
            raise AssertionError("the node stopped before it joined")
        if time.monotonic() > deadline:
            raise AssertionError(f"the node did not join in {timeout} s")
        await asyncio.sleep(0.2)
