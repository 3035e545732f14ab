"""Two processes with the same key (two scripts of one user) never wedge each other: no stuck
nonce, no "replacement underpriced" loop. Real SDK processes, started together, each
submitting several tasks at once from the one account."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridtask.config import save_config
from gridtask.sdk import Client, TaskState

from .conftest import assert_all_ended_and_conserved, start_devnet

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
    net = await start_devnet(tmp_path, nodes=3, node_models=["echo"], block_time=block_time)
    try:
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
    finally:
        net.stop()
