"""The script executor (``vm``) on the real sandbox: commands in order over a copy of the bundle,
uploads in, downloads out, the first failure ends the script, a sandbox limit is a task error.

The bundle cache is the one stand-in here (a directory of files instead of the relay's bundle):
the cache itself is tested with the relay (tests/relay/test_bundles.py)."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path

import pytest

from gridtask.bundles import BundleCache, bundle_hash, pack_dir
from gridtask.exceptions import RelayError
from gridtask.node.executors.base import ExecutorFailure, InvalidTaskParameters
from gridtask.node.executors.script import ScriptExecutor
from gridtask.scripts import ScriptResult
from gridtask.types import TaskErrorCode

pytestmark = pytest.mark.skipif(
    not __import__("gridtask.node.sandbox", fromlist=["x"]).sandbox_available(), reason="bubblewrap does not run here")

IMAGE = "ab" * 32


class DirCache:
    """A bundle cache whose one bundle is a directory already unpacked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.asked: list[str] = []

    async def path(self, image: str) -> Path:
        self.asked.append(image)
        return self.root


@pytest.fixture
def executor(tmp_path: Path) -> ScriptExecutor:
    image = tmp_path / "image"
    image.mkdir()
    (image / "check.py").write_text("import json, sys\nwords = json.load(open('in/words.json'))\n"
                                    "open('out.txt', 'w').write(','.join(w.upper() for w in words))\n")
    (image / "ro.txt").write_text("from the image")
    (image / "ro.txt").chmod(0o444)
    ex = ScriptExecutor()
    ex._cache = DirCache(image)
    ex._scratch = tmp_path / "scratch"
    return ex


def script(*commands: dict, timeout: int = 20) -> dict:
    return {"image": IMAGE, "commands": list(commands), "timeout": timeout}


def run(cmd: str, *args: str, **env: str) -> dict:
    return {"op": "run", "cmd": cmd, "args": list(args), "env": env}


async def test_commands_run_in_order_over_the_bundle_with_uploads_and_downloads(executor: ScriptExecutor) -> None:
    out = await executor.run("vm", script(
        {"op": "upload", "path": "/work/in/words.json", "data": base64.b64encode(b'["a", "b"]').decode()},
        run("/bin/sh", "-c", "cat ro.txt; echo \" $GREETING\" >&2", GREETING="hi"),
        run("/usr/bin/env", "python3", "check.py"),
        {"op": "download", "path": "out.txt", "limit": 100},
    ))
    result = ScriptResult.from_json(out)
    assert result.failed_index is None
    assert [r.op for r in result.results] == ["upload", "run", "run", "download"]
    assert (result.results[1].stdout, result.results[1].stderr, result.results[1].exit_code) == (
        "from the image", " hi\n", 0)
    assert result.results[3].data == b"A,B"


async def test_the_same_script_gives_the_same_result_bytes(executor: ScriptExecutor) -> None:
    """Nodes' results are compared exactly: nothing in one may depend on the run."""
    s = script(run("/bin/sh", "-c", "pwd; echo $HOME; ls -a"))
    assert await executor.run("vm", s) == await executor.run("vm", s)


async def test_a_failing_command_ends_the_script_and_says_which(executor: ScriptExecutor) -> None:
    out = ScriptResult.from_json(await executor.run("vm", script(
        run("/bin/sh", "-c", "echo before; exit 3"), run("/bin/sh", "-c", "echo never"))))
    assert out.failed_index == 0 and "code 3" in out.failed_message
    assert len(out.results) == 1 and out.results[0].stdout == "before\n"


async def test_a_missing_or_oversized_download_fails_the_script(executor: ScriptExecutor) -> None:
    missing = ScriptResult.from_json(await executor.run("vm", script({"op": "download", "path": "nope"})))
    assert missing.failed_index == 0 and "no such file" in missing.failed_message
    big = ScriptResult.from_json(await executor.run("vm", script(
        run("/bin/sh", "-c", "head -c 200 /dev/zero > big"), {"op": "download", "path": "big", "limit": 100})))
    assert big.failed_index == 1 and "over its limit" in big.failed_message


async def test_a_script_past_its_time_is_a_sandbox_time_error(executor: ScriptExecutor) -> None:
    with pytest.raises(InvalidTaskParameters) as caught:
        await executor.run("vm", script(run("/bin/sh", "-c", "sleep 30"), timeout=1))
    assert caught.value.code == TaskErrorCode.SANDBOX_TIME


async def test_a_path_outside_the_work_dir_is_refused_as_the_tasks_fault(executor: ScriptExecutor) -> None:
    with pytest.raises(InvalidTaskParameters, match="outside the VM's work directory"):
        await executor.run("vm", script({"op": "download", "path": "/etc/passwd"}))
    with pytest.raises(InvalidTaskParameters, match="outside"):
        await executor.run("vm", script({"op": "upload", "path": "../x", "data": ""}))


async def test_a_script_needing_more_cpu_threads_than_the_node_has_is_refused_before_it_runs(
        executor: ScriptExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """``vm.repo(min_cpu_threads=...)``: a node with fewer threads refuses the script (a task error,
    refunded; the Golem SDK sends it to another node), before the bundle is even fetched."""
    monkeypatch.setattr("gridtask.node.executors.script.cpu_threads", lambda: 2)
    with pytest.raises(InvalidTaskParameters, match="needs 3 CPU threads; this node has 2") as caught:
        await executor.run("vm", {**script(run("/bin/true")), "cpu_threads": 3})
    assert caught.value.code == TaskErrorCode.INVALID_PARAMETERS
    assert executor._cache.asked == []
    done = await executor.run("vm", {**script(run("/bin/echo", "ok")), "cpu_threads": 2})
    assert ScriptResult.from_json(done).results[0].stdout == "ok\n"


# ---------------------------------------------------------------- whose fault a bad bundle is


class FixedSource:
    """A relay stand-in for the real BundleCache: gives the bytes it holds, or a 404."""

    def __init__(self, data: bytes | None) -> None:
        self.data = data

    async def get_bundle(self, bundle: str) -> bytes:
        if self.data is None:
            raise RelayError("unknown bundle", status=404)
        return self.data


def _escaping_bundle() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../outside")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return buffer.getvalue()


def _bound(tmp_path: Path, source: FixedSource) -> ScriptExecutor:
    ex = ScriptExecutor()
    ex._cache = BundleCache(tmp_path / "bundles", source)
    ex._scratch = tmp_path / "scratch"
    return ex


async def test_bytes_that_do_not_match_the_image_hash_abort_the_task(tmp_path: Path) -> None:
    """The relay sent another blob: not the creator's fault, so no task error (the node aborts)."""
    image = tmp_path / "image"
    image.mkdir()
    (image / "a.txt").write_text("a")
    good = pack_dir(image)
    ex = _bound(tmp_path, FixedSource(b"not the bundle"))
    with pytest.raises(ExecutorFailure, match="relay"):
        await ex.run("vm", {**script(run("/bin/true")), "image": bundle_hash(good)})


async def test_an_unknown_or_unsafe_image_is_the_creators_fault(tmp_path: Path) -> None:
    with pytest.raises(InvalidTaskParameters, match="no such bundle") as unknown:
        await _bound(tmp_path / "a", FixedSource(None)).run("vm", script(run("/bin/true")))
    assert unknown.value.code == TaskErrorCode.PAYLOAD_FAILED
    bad = _escaping_bundle()
    with pytest.raises(InvalidTaskParameters, match="refused") as unsafe:
        await _bound(tmp_path / "b", FixedSource(bad)).run("vm", {**script(run("/bin/true")),
                                                                  "image": bundle_hash(bad)})
    assert unsafe.value.code == TaskErrorCode.PAYLOAD_FAILED
