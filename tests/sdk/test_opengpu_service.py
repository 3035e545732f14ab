"""The source side of gridtask.sdk.opengpu: @expose/@init, the manifest, one call per process
(exit codes the node maps to task errors), and the SDK's check of a call against the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gridtask.sdk.opengpu import service
from gridtask.sdk.opengpu.client import check_call
from gridtask.sdk.opengpu.errors import InvalidTaskDataError, UnknownFunctionError

ADDER = Path(__file__).parent / "opengpu_sources" / "adder"


def _host(command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The host exactly as the node runs it in the sandbox (here without one)."""
    return subprocess.run([sys.executable, service.__file__, command, str(ADDER), "main"], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def _call(function: str, data: object) -> tuple[int, dict]:
    out = _host("call", json.dumps({"function": function, "data": data}))
    line = next(x for x in out.stdout.splitlines() if x.startswith(service.RESULT_MARK))
    return out.returncode, json.loads(line.removeprefix(service.RESULT_MARK))


@pytest.fixture(scope="module")
def manifest() -> dict:
    out = _host("manifest")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_manifest_lists_each_function_with_its_schemas(manifest: dict) -> None:
    assert manifest["entry"] == "main" and manifest["init"] == "warm_up"
    assert sorted(manifest["functions"]) == ["add", "explode", "nap", "slow", "wrong"]
    add = manifest["functions"]["add"]
    assert add["input_schema"]["required"] == ["a", "b"]
    assert add["output_schema"]["properties"]["total"]["type"] == "integer"
    assert manifest["functions"]["slow"]["timeout"] == 1


def test_a_call_runs_init_then_the_function() -> None:
    assert _call("add", {"a": 2, "b": 40}) == (0, {"output": {"total": 42, "ready": True}})


@pytest.mark.parametrize(("function", "data", "code", "words"), [
    ("nope", {}, service.EXIT_UNKNOWN_FUNCTION, "no exposed function 'nope'"),
    ("add", {"a": "two", "b": 1}, service.EXIT_INVALID_DATA, "a: Input should be a valid integer"),
    ("explode", {"a": 1, "b": 1}, service.EXIT_FAILED, "explode raised RuntimeError: cannot add 1"),
    ("wrong", {"a": 1, "b": 1}, service.EXIT_FAILED, "returned dict, not its output model Sum"),
    ("slow", {"seconds": 30}, service.EXIT_TIMEOUT, "ran past its timeout of 1 s"),
])
def test_each_failure_has_its_exit_code_and_says_why(function: str, data: object, code: int, words: str) -> None:
    returned, payload = _call(function, data)
    assert returned == code
    assert words in payload["error"]


def test_a_source_that_does_not_load_fails_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("raise ImportError('no such model file')\n")
    out = subprocess.run([sys.executable, service.__file__, "manifest", str(tmp_path), "main"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == service.EXIT_FAILED and "no such model file" in out.stderr


def test_expose_refuses_untyped_functions() -> None:
    with pytest.raises(TypeError, match="pydantic BaseModel"):
        service.expose()(lambda data: data)


def test_the_sdk_checks_a_call_against_the_manifest_before_paying(manifest: dict) -> None:
    check_call(manifest, "add", {"a": 1, "b": 2})
    with pytest.raises(UnknownFunctionError, match=r"exposes no function 'ad'.*add.*nothing was sent"):
        check_call(manifest, "ad", {"a": 1, "b": 2}, "0xS")
    with pytest.raises(InvalidTaskDataError, match="b: 'x' is not of type 'integer'"):
        check_call(manifest, "add", {"a": 1, "b": "x"})
    with pytest.raises(InvalidTaskDataError, match="'b' is a required property"):
        check_call(manifest, "add", {"a": 1})
