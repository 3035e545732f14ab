"""Two processes with the same key (two scripts of one user) never wedge each other: no stuck
nonce, no "replacement underpriced" loop. Real SDK processes, started together, each
submitting several tasks at once from the one account."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account

from gridtask.chain.anvil import Anvil, rpc_call
from gridtask.chain.client import ChainClient
from gridtask.chain.deploy import NetworkParams, deploy
from gridtask.config import save_config
from gridtask.crypto import task_commitment, task_key
from gridtask.keys import Identity
from gridtask.sdk import Client, TaskState, TaskType

from .conftest import assert_all_ended_and_conserved, running_devnet

pytestmark = pytest.mark.e2e

PROCESSES = 3
TASKS_EACH = 6
BOUND_S = 150

SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from gridtask.sdk import Client, TaskType

async def main(tag, where):
    async with Client() as client:
        (where / ("ready-" + tag)).touch()
        while not (where / "go").exists():
            await asyncio.sleep(0.01)
        handles = await asyncio.gather(*(
            client.submit(TaskType.ECHO, "echo", {"data": [tag, i]}, fee=10**15 + i) for i in range(%(n)d)))
        results = await asyncio.gather(*(client.result(h, timeout=90) for h in handles))
        print(json.dumps({"ids": [h.task_id for h in handles], "results": results}))

asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
"""


@pytest.mark.parametrize("block_time", [None, 1.0], ids=["automine", "1s-blocks"])
async def test_two_processes_with_one_key_create_all_their_tasks(tmp_path: Path, block_time: float | None) -> None:
    async with running_devnet(tmp_path, nodes=3, node_models=["echo"], block_time=block_time) as net:
        assert net.config is not None
        config_file = save_config(net.config, tmp_path / "config.json")
        env = dict(os.environ, GRIDTASK_CONFIG=str(config_file))
        script = SCRIPT % {"n": TASKS_EACH}
        procs = [subprocess.Popen([sys.executable, "-c", script, f"p{i}", str(tmp_path)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(PROCESSES)]
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-p{i}").exists() for i in range(PROCESSES)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "scripts did not start"
            time.sleep(0.05)
        started = time.monotonic()
        (tmp_path / "go").touch()  # both at once, from the same account
        outputs = []
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=max(1.0, BOUND_S - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                pytest.fail(f"a process with the shared key hung past {BOUND_S}s")
            assert proc.returncode == 0, err[-3000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
        took = time.monotonic() - started
        print(f"{PROCESSES} processes x {TASKS_EACH} tasks, one key, blocks {block_time or 'on demand'}: {took:.1f}s")

        for i, out in enumerate(outputs):
            assert out["results"] == [{"echo": [f"p{i}", n]} for n in range(TASKS_EACH)]
        ids = [task_id for out in outputs for task_id in out["ids"]]
        assert len(set(ids)) == PROCESSES * TASKS_EACH
        async with Client(config=net.config) as client:
            for task_id in ids:
                info = await client.task(task_id)
                assert info is not None and info.state == TaskState.SUCCESS, task_id
        book = await assert_all_ended_and_conserved(net)
        assert book["SUCCESS"] == PROCESSES * TASKS_EACH, book


async def test_a_transaction_replaced_by_another_process_of_the_same_key_is_signed_again() -> None:
    """Blocks mined by hand: our createTask waits in the pool when another process of the same
    key replaces it (same nonce, higher fees) and that one is mined. Ours can never run now: the
    client signs it again with the next nonce and the task is created, once."""
    with Anvil() as anvil:
        deployer, user = Identity.generate(), Identity.generate()
        for ident in (deployer, user):
            anvil.fund(ident.address, 10**22)
        contract = await deploy(anvil.url, deployer, deployer.address, NetworkParams())
        async with ChainClient(anvil.url, contract, user, send_retry_s=20) as client:
            rpc_call(anvil.url, "evm_setAutomine", [False])
            commitment = task_commitment(os.urandom(32), nonce := os.urandom(32))
            creating = asyncio.create_task(client.create_task(
                task_type=TaskType.ECHO, commitment=commitment, nonce=nonce, models=["nobody-serves-it"], min_vram=0,
                required_gpu="", params_hash=os.urandom(32), task_size=1, timeout=60, fee=10**15))
            for _ in range(200):
                pool = rpc_call(anvil.url, "eth_getBlockByNumber", ["pending", True])
                if isinstance(pool, dict) and pool["transactions"]:
                    break
                await asyncio.sleep(0.05)
            ours = pool["transactions"][0]  # type: ignore[index]
            other = Account.from_key(user.private_key).sign_transaction({
                "to": user.address, "value": 0, "gas": 21_000, "nonce": int(ours["nonce"], 16),
                "chainId": int(ours["chainId"], 16), "maxFeePerGas": 4 * int(ours["maxFeePerGas"], 16),
                "maxPriorityFeePerGas": 4 * int(ours["maxPriorityFeePerGas"], 16)})
            rpc_call(anvil.url, "eth_sendRawTransaction", ["0x" + bytes(other.raw_transaction).hex()])
            rpc_call(anvil.url, "evm_mine", [])  # the other process's transaction takes the nonce
            rpc_call(anvil.url, "evm_setAutomine", [True])
            receipt = await asyncio.wait_for(creating, 30)
            assert receipt["status"] == 1
            sent = await client.w3.eth.get_transaction(receipt["transactionHash"])
            assert sent["nonce"] == int(ours["nonce"], 16) + 1  # signed again, with the next nonce
            info = await client.get_task(task_key(user.address, commitment))
            assert info is not None and info.state == TaskState.CREATED  # created once (startTask comes next)
            assert await client.nonce_used(nonce)
