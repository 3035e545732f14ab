"""The node's source executor, through the real bubblewrap sandbox: a call returns the function's
output, and each failure is a task error with its code (the node reports it and goes on)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gridtask.config import NetworkConfig
from gridtask.limits import source_model
from gridtask.node.executors.base import InvalidTaskParameters
from gridtask.node.executors.source import ServedSource, SourceExecutor, parse_sources
from gridtask.node.sandbox import sandbox_available
from gridtask.sdk.opengpu import service
from gridtask.types import TaskErrorCode

pytestmark = pytest.mark.skipif(not sandbox_available(), reason="bubblewrap sandbox not available here")

ADDER = Path(__file__).parent / "opengpu_sources" / "adder"
SOURCE = "0x" + "12" * 20
MODEL = source_model(SOURCE)


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> SourceExecutor:
    root = tmp_path_factory.mktemp("bundle") / "source"
    shutil.copytree(ADDER, root)
    out = subprocess.run([sys.executable, service.__file__, "manifest", str(root), "main"],
                         capture_output=True, text=True, timeout=60, check=True)
    manifest = json.loads(out.stdout.strip().splitlines()[-1])
    (root / service.MANIFEST).write_text(json.dumps(manifest))
    network = NetworkConfig(rpc_url="http://127.0.0.1:1", contract="0x" + "00" * 20, relay_url="http://127.0.0.1:1",
                            source_registry="0x" + "01" * 20)
    ex = SourceExecutor(network, None)
    ex.served[MODEL] = ServedSource(SOURCE, "ab" * 32, root, manifest)
    ex.models.append(MODEL)
    return ex


def _inputs(function: str, data: dict) -> dict:
    return {"source": SOURCE, "function": function, "data": data}


async def test_a_call_runs_in_the_sandbox(executor: SourceExecutor) -> None:
    assert await executor.run(MODEL, _inputs("add", {"a": 1, "b": 2})) == {"output": {"total": 3, "ready": True}}


@pytest.mark.parametrize(("function", "data", "code"), [
    ("nope", {"a": 1}, TaskErrorCode.UNKNOWN_FUNCTION),
    ("add", {"a": "x", "b": 1}, TaskErrorCode.INVALID_PARAMETERS),
    ("explode", {"a": 1, "b": 1}, TaskErrorCode.PAYLOAD_FAILED),
    ("slow", {"seconds": 30}, TaskErrorCode.SANDBOX_TIME),
])
async def test_each_failure_is_a_task_error_with_its_code(executor: SourceExecutor, function: str, data: dict,
                                                           code: TaskErrorCode) -> None:
    with pytest.raises(InvalidTaskParameters) as caught:
        await executor.run(MODEL, _inputs(function, data))
    assert caught.value.code == code
    assert await executor.run(MODEL, _inputs("add", {"a": 5, "b": 5})) == {"output": {"total": 10, "ready": True}}


async def test_a_call_for_another_source_or_model_is_refused(executor: SourceExecutor) -> None:
    with pytest.raises(InvalidTaskParameters) as caught:
        await executor.run(MODEL, {"source": "0x" + "34" * 20, "function": "add", "data": {"a": 1, "b": 1}})
    assert caught.value.code == TaskErrorCode.UNKNOWN_MODEL
    with pytest.raises(InvalidTaskParameters) as caught:
        await executor.run(source_model("0x" + "56" * 20), _inputs("add", {"a": 1, "b": 1}))
    assert caught.value.code == TaskErrorCode.UNKNOWN_MODEL


async def test_the_source_cannot_read_the_nodes_files(executor: SourceExecutor, tmp_path: Path) -> None:
    """The function runs with only its bundle, /usr and the node's Python: not the node's state."""
    root = tmp_path / "source"
    root.mkdir()
    secret = tmp_path / "node-key"
    secret.write_text("0xsecret")
    (root / "main.py").write_text(
        "from pydantic import BaseModel\nimport gridtask.sdk.opengpu as ogpu\n"
        "class P(BaseModel):\n    path: str\nclass R(BaseModel):\n    seen: bool\n"
        "@ogpu.service.expose()\ndef peek(p: P) -> R:\n    import os\n    return R(seen=os.path.exists(p.path))\n")
    out = subprocess.run([sys.executable, service.__file__, "manifest", str(root), "main"],
                         capture_output=True, text=True, timeout=60, check=True)
    manifest = json.loads(out.stdout.strip().splitlines()[-1])
    (root / service.MANIFEST).write_text(json.dumps(manifest))
    model = source_model("0x" + "78" * 20)
    executor.served[model] = ServedSource("0x" + "78" * 20, "cd" * 32, root, manifest)
    got = await executor.run(model, {"source": "0x" + "78" * 20, "function": "peek", "data": {"path": str(secret)}})
    assert got == {"output": {"seen": False}}
    assert secret.exists()


def test_sources_option() -> None:
    assert parse_sources(["all"]) is None
    named = parse_sources(["0x" + "ab" * 20])
    assert named is not None and [a.lower() for a in named] == ["0x" + "ab" * 20]
    with pytest.raises(ValueError, match="neither 'all' nor a source address"):
        parse_sources(["everything"])


async def test_a_call_to_an_inactivated_source_is_refused(executor: SourceExecutor) -> None:
    """A core client can still send a task to a source its owner inactivated: the node refuses it."""
    address = "0x" + "9a" * 20
    served = executor.served[MODEL]
    executor.served[source_model(address)] = ServedSource(address, served.bundle_hash, served.path, served.manifest,
                                                          active=False)
    with pytest.raises(InvalidTaskParameters, match="inactivated") as caught:
        await executor.run(source_model(address), {"source": address, "function": "add", "data": {"a": 1, "b": 1}})
    assert caught.value.code == TaskErrorCode.UNKNOWN_FUNCTION
