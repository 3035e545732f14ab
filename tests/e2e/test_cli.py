"""The command line against a real devnet: answers, JSON, and bad input as one line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gridtask.cli import app
from gridtask.config import save_config
from gridtask.devnet import Devnet, default_node_models

from .conftest import run_gridtask, start_devnet

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("cli")
    net: Devnet = asyncio.run(start_devnet(tmp, nodes=1, node_models=default_node_models()))
    try:
        assert net.config is not None
        yield save_config(net.config, tmp / "config.json")
    finally:
        net.stop()


def invoke(*args: str) -> tuple[int, str, str]:
    """The command in-process (typer's CliRunner): exit code, stdout, stderr."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_run_prints_generated_text_and_json(config_file: Path) -> None:
    code, out, _ = invoke("run", "Hey there", "--model", "tiny-llm", "--config", str(config_file))
    assert code == 0 and out.strip()
    code, out, _ = invoke("run", "Hey there", "--model", "tiny-llm", "--json", "--config", str(config_file))
    doc = json.loads(out)
    assert code == 0 and doc["state"] == "SUCCESS" and doc["result"]["text"]
    assert doc["group"] is None and doc["delivered_by"] == doc["task_id"]  # not sampled: validated alone
    code, out, _ = invoke("task", "show", doc["task_id"], "--json", "--config", str(config_file))
    shown = json.loads(out)
    assert code == 0 and shown["state"] == "SUCCESS"
    assert [e["name"] for e in shown["events"]][-1] == "TaskSuccess"


def test_embed_json_gives_vectors(config_file: Path) -> None:
    code, out, _ = invoke("embed", "one", "two", "--json", "--config", str(config_file))
    doc = json.loads(out)
    assert code == 0 and [len(v) for v in doc["result"]["embeddings"]] == [384, 384]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "hi", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["task", "show", "0x1234"], "malformed task ID"),
        (["task", "show", "0x" + "ab" * 32], "unknown task"),
        (["embed", "x", "--model", "x" * 40], "1 to 32 bytes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(config_file: Path, args: list[str], message: str) -> None:
    proc = run_gridtask(*args, "--config", str(config_file))
    assert proc.returncode == 2, proc
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), proc.stderr  # one line, no traceback
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_no_network_configured_says_what_to_do(tmp_path: Path) -> None:
    proc = run_gridtask("task", "show", "0x" + "ab" * 32, "--config", str(tmp_path / "missing.json"))
    assert proc.returncode == 1, proc  # not bad input: the machine has no network set up yet
    assert proc.stderr.count("\n") == 1 and "gridtask devnet" in proc.stderr, proc.stderr
