"""The synthetic-data job of the README, on a devnet: ``examples/dria_dataset.py`` runs
instructions through the two-step QA pipeline on the tiny model, from one command, with a
progress bar, into a dataset (JSON lines, pandas, Hugging Face); interrupted with Ctrl-C and
run again, it finishes without running (or paying for) a finished row twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridtask.config import save_config
from gridtask.devnet import DEVNET_MODELS_DIR, Devnet
from gridtask.node.executors.tiny_llm import TINY_LLM, build_tiny_llm
from gridtask.sdk import Client
from gridtask.sdk.dria import DriaDataset

from .conftest import assert_all_ended_and_conserved, start_devnet

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "dria_dataset.py"
ROWS = int(os.environ.get("GRIDTASK_DRIA_ROWS", "8"))
"""Instructions the job test runs: 8 rows are more tasks than the 3 nodes at each step, so the
progress bar, the export and the money are checked as for 100 (the README's job:
``GRIDTASK_DRIA_ROWS=100``, with ``-o timeout=1200``; 100 rows took 285 s on 3 tiny-llm nodes
on a loaded 2-core machine, 20 rows 82 s)."""


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, Path]]:
    tmp = tmp_path_factory.mktemp("dria-dataset")
    tiny = build_tiny_llm(DEVNET_MODELS_DIR / TINY_LLM).resolve()
    net = asyncio.run(start_devnet(tmp, nodes=3, node_models=[f"llm:{TINY_LLM}={tiny}"]))
    try:
        assert net.config is not None
        yield net, save_config(net.config, tmp / "config.json")
    finally:
        net.stop()


def example_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDTASK_")}
    env.update(GRIDTASK_CONFIG=str(config), COLUMNS="120")
    return env


def journal_records(path: Path) -> list[dict[str, object]]:
    """The finished-row records of the dataset's journal, in the order they were written."""
    return [r for r in DriaDataset("qa", path=path).records() if r.get("kind") == "done"]


async def created_tasks(client: Client, since: int) -> list[str]:
    """Keys of the tasks this account created from block ``since`` on."""
    events = await client.chain.get_logs(since, await client.chain.block_number())
    return ["0x" + (e.commitment or b"").hex() for e in events
            if e.name == "TaskCreated" and e.args["creator"] == client.identity.address]


@pytest.mark.timeout(max(300, 120 + 10 * ROWS))  # 20 rows took 82 s on a loaded 2-core machine
async def test_the_dataset_job_finishes_with_a_dataset_and_a_progress_bar(tiny_net: tuple[Devnet, Path],
                                                                          tmp_path: Path) -> None:
    net, config = tiny_net
    out = tmp_path / "qa.jsonl"
    started = time.monotonic()
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(EXAMPLE), "--instructions", str(ROWS), "--path", str(tmp_path / "qa"),
                         "--out", str(out)], env=example_env(config), capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    print(f"{ROWS} instructions through the two-step pipeline: {elapsed:.1f} s")
    # the progress bar's last frame: both steps, every row
    assert "step 1 Question" in proc.stdout and "step 2 Answer" in proc.stdout, proc.stdout
    assert proc.stdout.count(f"{ROWS}/{ROWS}") >= 2, proc.stdout
    assert f"{ROWS} rows in" in proc.stdout and "0 failed for good" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == ROWS
    assert all(r["model"] == TINY_LLM and r["question"] and r["prediction"] and r["context"] for r in rows)
    assert "Dataset(" in proc.stdout and "num_rows: " + str(ROWS) in proc.stdout  # the Hugging Face view
    assert net.config is not None
    await assert_all_ended_and_conserved(net)


async def test_an_interrupted_job_run_again_never_runs_a_finished_row_twice(tiny_net: tuple[Devnet, Path],
                                                                           tmp_path: Path) -> None:
    net, config = tiny_net
    assert net.config is not None
    # 20 tasks, 2 in flight: after the 5th record 15 are left, about 8 tasks' time for the Ctrl-C
    # to land mid-job on a loaded machine (12 rows with 4 in flight once all finished before it)
    rows, path = 10, tmp_path / "qa"
    command = [sys.executable, str(EXAMPLE), "--instructions", str(rows), "--path", str(path), "--no-tables",
               "--batch-size", "2"]
    async with Client(config=net.config) as client:
        # a shell that started pytest in the background (``&``) hands its children SIGINT ignored,
        # and Python keeps it ignored: give the example a terminal's Ctrl-C
        proc = subprocess.Popen(command, env=example_env(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            for _ in range(600):  # Ctrl-C once a few rows are finished and others are in flight
                if len(journal_records(path)) >= 5:
                    break
                assert proc.poll() is None, proc.communicate()
                await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        before = journal_records(path)
        assert 5 <= len(before) < 2 * rows, "interrupted too late to show anything"
        second_block = await client.chain.block_number() + 1
        rerun = await asyncio.to_thread(subprocess.run, command, env=example_env(config), capture_output=True,
                                        text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
        after = journal_records(path)
        # every record of the first run is still there, unchanged, and was not run again
        assert after[: len(before)] == before
        done_again = {(r["step"], r["row"]) for r in after[len(before):]}
        assert not done_again & {(r["step"], r["row"]) for r in before}
        assert len(after) == 2 * rows  # each row: a question, then its answer
        # what the second run paid for: exactly the records it added
        assert sorted(await created_tasks(client, second_block)) == sorted(str(r["task"]) for r in after[len(before):])
        assert f"{rows} rows in" in rerun.stdout
