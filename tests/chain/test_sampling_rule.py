"""The creator draws a task's sample itself (``gridtask.crypto.sampled``, what the SDK uses
instead of asking ``isSampled``): from the ``TaskCreated`` log's block hash it must give the
contract's answer, on a real anvil and the committed contract, for both outcomes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridtask.chain.anvil import Anvil
from gridtask.chain.client import ChainClient
from gridtask.chain.deploy import deploy
from gridtask.crypto import keccak, sampled, task_commitment, task_id_hash, task_key
from gridtask.devnet import DEVNET_PARAMS
from gridtask.keys import Identity

pytestmark = pytest.mark.e2e

RATE_BPS = 5000  # both draws common: 24 tasks all alike is a 1-in-8-million chance
TASKS = 24


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    with Anvil(log_path=Path(tmp_path_factory.mktemp("anvil")) / "anvil.log") as chain:
        yield chain


async def test_the_local_draw_is_the_contracts_for_every_task(anvil: Anvil) -> None:
    deployer, creator = Identity.generate(), Identity.generate()
    for ident in (deployer, creator):
        anvil.fund(ident.address, 10**21)
    params = dataclasses.replace(DEVNET_PARAMS, validation_rate_bps=RATE_BPS)
    address = await deploy(anvil.url, deployer, deployer.address, params)
    async with ChainClient(anvil.url, address, creator) as chain:
        draws = []
        for _ in range(TASKS):
            task_id, nonce = os.urandom(32), os.urandom(32)
            commitment = task_commitment(task_id, nonce)
            receipt = await chain.create_task(
                task_type=0, commitment=commitment, nonce=nonce, models=["echo"], min_vram=0, required_gpu="",
                params_hash=keccak(b"p" + nonce), task_size=1, timeout=params.min_timeout, fee=10**15)
            created = next(e for e in chain.decode_receipt(receipt) if e.name == "TaskCreated")
            key = task_key(creator.address, commitment)
            await chain.start_task(key, ["echo"], 0, "")  # no node: it queues, and its sample is drawn
            mine = sampled(task_id_hash(task_id), created.block_hash, RATE_BPS)
            assert mine == await chain.is_sampled(key, task_id_hash(task_id), nonce)
            draws.append(mine)
        assert set(draws) == {True, False}
