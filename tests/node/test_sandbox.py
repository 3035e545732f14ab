"""The sandbox stops each misbehaving payload with the right violation, and keeps working.

Real bubblewrap, real processes: nothing is mocked. Limits are kept small (a fork bomb
gets 32 processes) so a test never loads the shared machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from gridtask.exceptions import ValidationError
from gridtask.node.executors.base import InvalidTaskParameters
from gridtask.node.sandbox import (
    SANDBOX_PYTHON,
    SandboxLimits,
    SandboxViolation,
    run_sandboxed,
    sandbox_available,
)
from gridtask.types import TaskErrorCode

pytestmark = pytest.mark.skipif(not sandbox_available(), reason="bubblewrap is not installed")

SMALL = SandboxLimits(wall_s=20, memory_mib=256, processes=32, output_bytes=64 * 1024, disk_mib=16)


async def _run(argv: list[str], tmp_path: Path, limits: SandboxLimits = SMALL, **kwargs: object) -> object:
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    return await run_sandboxed(argv, workdir=work, limits=limits, **kwargs)  # type: ignore[arg-type]


async def _violation(argv: list[str], tmp_path: Path, limits: SandboxLimits = SMALL) -> tuple[SandboxViolation, float]:
    started = time.monotonic()
    with pytest.raises(SandboxViolation) as caught:
        await _run(argv, tmp_path, limits)
    return caught.value, time.monotonic() - started


async def _still_works(tmp_path: Path) -> None:
    """The caller goes on: the next payload runs normally."""
    result = await _run(["sh", "-c", "echo fine"], tmp_path / "after")
    assert result.exit_code == 0 and result.stdout == b"fine\n"  # type: ignore[attr-defined]


def _python(code: str) -> list[str]:
    return [SANDBOX_PYTHON, "-c", textwrap.dedent(code)]


# ---------------------------------------------------------------------------- a good payload


async def test_payload_reads_stdin_and_its_work_dir_and_leaves_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "input.txt").write_text("from the host")
    (work / "sub").mkdir()
    (work / "sub" / "private.txt").write_text("mode 600")
    (work / "sub" / "private.txt").chmod(0o600)
    result = await run_sandboxed(
        ["sh", "-c", "cat input.txt sub/private.txt; echo; cat; pwd; echo made > out.txt; rm input.txt"],
        workdir=work, limits=SMALL, stdin=b"from stdin",
    )
    assert result.exit_code == 0
    assert result.stdout == b"from hostmode 600\nfrom stdin/work\n".replace(b"host", b"the host")
    assert (work / "out.txt").read_text() == "made\n"
    assert not (work / "input.txt").exists()  # /work's end state is the work dir's
    assert (work / "sub" / "private.txt").read_text() == "mode 600"


async def test_payload_python_imports_pydantic_and_gridtask(tmp_path: Path) -> None:
    result = await _run(_python("""
        import json, pydantic, gridtask.types
        class In(pydantic.BaseModel):
            x: int
        print(json.dumps({"x": In(x=2).x, "type": gridtask.types.TaskType.SCRIPT.name}))
    """), tmp_path)
    assert result.exit_code == 0, result.stderr  # type: ignore[attr-defined]
    assert json.loads(result.stdout) == {"x": 2, "type": "SCRIPT"}  # type: ignore[attr-defined]


async def test_non_zero_exit_is_a_result_not_a_violation(tmp_path: Path) -> None:
    result = await _run(["sh", "-c", "echo oops >&2; exit 3"], tmp_path)
    assert (result.exit_code, result.stderr) == (3, b"oops\n")  # type: ignore[attr-defined]


async def test_read_only_bind_is_readable_not_writable(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "main.sh").write_text("echo from bundle")
    result = await _run(["sh", "-c", "sh /bundle/main.sh; echo x > /bundle/new || echo refused"], tmp_path,
                        ro_binds=[(bundle, "/bundle")])
    assert result.stdout == b"from bundle\nrefused\n"  # type: ignore[attr-defined]
    assert sorted(p.name for p in bundle.iterdir()) == ["main.sh"]


async def test_bind_over_the_work_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="may not cover"):
        await _run(["true"], tmp_path, ro_binds=[(tmp_path, "/work/bundle")])


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValidationError, match="wall_s: must be a positive number"):
        SandboxLimits(wall_s=0)
    with pytest.raises(ValidationError, match="processes: at least 4"):
        SandboxLimits(processes=2)


def test_violation_is_a_task_error_with_its_code() -> None:
    violation = SandboxViolation("processes", "forked too much")
    assert isinstance(violation, InvalidTaskParameters)
    assert violation.code == TaskErrorCode.SANDBOX_PROCESSES


# ---------------------------------------------------------------------------- what it cannot see or reach


async def test_node_keys_home_and_repo_are_not_visible(tmp_path: Path) -> None:
    # Readable by anyone on the host: only the sandbox's mounts keep it out of reach.
    state = Path(tempfile.mkdtemp(prefix="gridtask-node-state-"))
    state.chmod(0o755)
    (state / "key.json").write_text("SECRET-KEY-MATERIAL")
    (state / "key.json").chmod(0o644)
    repo = Path(__file__).resolve().parents[2]
    script = f"""
        cat {state}/key.json
        ls {repo} {Path.home()} /root/.ssh
        timeout 10 grep -rs SECRET-KEY-MATERIAL / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev \
            --exclude-dir=usr --exclude-dir=opt --exclude-dir=.pyenv
        echo searched
    """
    try:
        result = await _run(["sh", "-c", script], tmp_path)
    finally:
        shutil.rmtree(state)
    out = result.stdout + result.stderr  # type: ignore[attr-defined]
    assert b"SECRET-KEY-MATERIAL" not in out
    assert b"searched" in out
    assert out.count(b"No such file or directory") >= 3


async def test_socket_to_the_host_and_out_fails(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        result = await _run(_python(f"""
            import socket
            for where in [("127.0.0.1", {port}), ("1.1.1.1", 80)]:
                try:
                    socket.create_connection(where, timeout=3)
                    print("connected", where)
                except OSError as exc:
                    print("refused", where, exc.errno)
        """), tmp_path)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever reached the host's listener
    finally:
        server.close()
    lines = result.stdout.decode().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 2 and all(line.startswith("refused") for line in lines), lines


# ---------------------------------------------------------------------------- each limit


async def test_endless_loop_is_stopped_by_time(tmp_path: Path) -> None:
    limits = SandboxLimits(wall_s=2, processes=32, disk_mib=16)
    violation, took = await _violation(["sh", "-c", "while :; do :; done"], tmp_path, limits)
    assert violation.kind == "time" and violation.code == TaskErrorCode.SANDBOX_TIME
    assert 2 <= took < 15  # killed at its limit, not left to run
    assert "ran past its 2 s" in str(violation)
    await _still_works(tmp_path)


async def test_time_kills_background_children_too(tmp_path: Path) -> None:
    """A payload that leaves a child behind: the whole pid namespace goes."""
    marker = f"gridtask-sandbox-orphan-{os.getpid()}"
    limits = SandboxLimits(wall_s=2, processes=32, disk_mib=16)
    await _violation(["sh", "-c", f"bash -c 'exec -a {marker} sleep 300' & sleep 300"], tmp_path, limits)
    deadline = time.monotonic() + 10  # the kernel reaps the namespace's processes soon after its init dies
    while (left := subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout):
        assert time.monotonic() < deadline, f"left running after the sandbox was killed: {left}"
        await asyncio.sleep(0.1)


async def test_many_processes_are_stopped_at_the_limit(tmp_path: Path) -> None:
    """Bounded first: 40 sleeping children against a limit of 16."""
    limits = SandboxLimits(wall_s=20, processes=16, disk_mib=16)
    violation, took = await _violation(["sh", "-c", "for i in $(seq 40); do sleep 30 & done; wait"], tmp_path, limits)
    assert violation.kind == "processes" and violation.code == TaskErrorCode.SANDBOX_PROCESSES
    assert took < limits.wall_s  # stopped for its processes, not at the wall limit


async def test_processes_under_the_limit_run(tmp_path: Path) -> None:
    limits = SandboxLimits(wall_s=20, processes=16, disk_mib=16)
    result = await _run(["sh", "-c", "for i in 1 2 3 4 5 6; do sleep 0.3 & done; wait; echo ok"], tmp_path, limits)
    assert result.stdout == b"ok\n"  # type: ignore[attr-defined]


PYTHON_BOMB = """
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""


@pytest.mark.parametrize("bomb", [
    ["bash", "-c", ":(){ :|:& };: ; sleep 60"],
    [SANDBOX_PYTHON, "-c", PYTHON_BOMB],
], ids=["bash", "python"])
async def test_fork_bomb_is_stopped_by_processes(tmp_path: Path, bomb: list[str]) -> None:
    violation, took = await _violation(bomb, tmp_path)
    assert violation.kind == "processes"
    assert took < SMALL.wall_s
    await _still_works(tmp_path)


async def test_filling_the_disk_is_stopped(tmp_path: Path) -> None:
    for target in ("/work/big", "/tmp/big"):
        violation, _ = await _violation(
            ["sh", "-c", f"dd if=/dev/zero of={target} bs=1M count=100 2>/dev/null; exit 0"], tmp_path
        )
        assert violation.kind == "disk" and violation.code == TaskErrorCode.SANDBOX_DISK, target
    assert not any((tmp_path / "work").iterdir())  # nothing of it reached the host
    await _still_works(tmp_path)


async def test_too_many_files_is_stopped_by_disk(tmp_path: Path) -> None:
    """Empty files take no bytes of a tmpfs, but each costs the host's kernel memory."""
    violation, took = await _violation(
        ["sh", "-c", "i=0; while :; do : > f$i; i=$((i+1)); done"], tmp_path)
    assert violation.kind == "disk" and "more than 4096 files" in str(violation)
    assert took < SMALL.wall_s
    result = await _run(["sh", "-c", "for i in $(seq 500); do : > f$i; done; ls | wc -l"], tmp_path)
    assert result.stdout == b"500\n"  # type: ignore[attr-defined]
    assert len(list((tmp_path / "work").iterdir())) == 500


async def test_work_dir_larger_than_the_disk_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "upload.bin").write_bytes(b"\0" * (17 << 20))
    with pytest.raises(SandboxViolation) as caught:
        await run_sandboxed(["true"], workdir=work, limits=SMALL)
    assert caught.value.kind == "disk"


async def test_allocating_too_much_is_stopped_by_memory(tmp_path: Path) -> None:
    violation, _ = await _violation(_python("block = bytearray(600 * 1024 * 1024)"), tmp_path)
    assert violation.kind == "memory" and violation.code == TaskErrorCode.SANDBOX_MEMORY
    result = await _run(_python("block = bytearray(64 * 1024 * 1024); print(len(block))"), tmp_path)
    assert result.stdout == b"67108864\n"  # type: ignore[attr-defined]


async def test_printing_too_much_is_stopped_by_output(tmp_path: Path) -> None:
    violation, took = await _violation(["yes"], tmp_path)
    assert violation.kind == "output" and violation.code == TaskErrorCode.SANDBOX_OUTPUT
    assert len(violation.stdout) == SMALL.output_bytes
    assert took < SMALL.wall_s
    result = await _run(["sh", "-c", "head -c 60000 /dev/zero"], tmp_path)
    assert len(result.stdout) == 60000  # type: ignore[attr-defined]


async def test_link_out_of_the_work_dir_is_left_out(tmp_path: Path) -> None:
    result = await _run(["sh", "-c", "ln -s /etc/passwd out; ln -s ../../x up; echo ok > kept"], tmp_path)
    assert result.exit_code == 0  # type: ignore[attr-defined]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["kept"]


# ---------------------------------------------------------------------------- a node run by a normal user


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
                    reason="needs root to become a normal user, and the system Python")
def test_limits_hold_for_a_normal_user() -> None:
    """The same sandbox, from a node that is not root (its own user namespace)."""
    repo = Path(__file__).resolve().parents[2]
    tmp_path = Path(tempfile.mkdtemp(prefix="gridtask-user-sandbox-"))  # pytest's own is root's only
    tmp_path.chmod(0o777)
    script = tmp_path / "as_user.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, json, os
        from pathlib import Path
        from gridtask.node.sandbox import SandboxLimits, SandboxViolation, run_sandboxed
        async def main():
            out = {{"uid": os.geteuid()}}
            work = Path({str(tmp_path)!r}) / "work"
            limits = SandboxLimits(wall_s=3, processes=16, disk_mib=16)
            for name, argv in [("ok", ["sh", "-c", "id -u; echo hi > f"]),
                               ("forks", ["sh", "-c", "for i in $(seq 40); do sleep 30 & done; wait"]),
                               ("time", ["sh", "-c", "while :; do :; done"]),
                               ("disk", ["sh", "-c", "dd if=/dev/zero of=/work/x bs=1M count=64; exit 0"])]:
                try:
                    result = await run_sandboxed(argv, workdir=work, limits=limits)
                    out[name] = [result.exit_code, result.stdout.decode()]
                except SandboxViolation as exc:
                    out[name] = exc.kind
            print(json.dumps(out))
        asyncio.run(main())
    """))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)}
    try:
        done = subprocess.run(
            ["setpriv", "--reuid=54321", "--regid=54321", "--clear-groups", "/usr/bin/python3", str(script)],
            capture_output=True, text=True, env=env, timeout=120, check=False, cwd=tmp_path,
        )
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["uid"] == 54321
    assert out["ok"] == [0, "54321\n"]
    assert (out["forks"], out["time"], out["disk"]) == ("processes", "time", "disk")


def test_missing_bubblewrap_is_the_nodes_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gridtask.node import sandbox
    from gridtask.node.executors.base import ExecutorFailure

    monkeypatch.setattr(sandbox, "_unavailable_reason", lambda: "bwrap not found: install bubblewrap")
    with pytest.raises(ExecutorFailure, match="install bubblewrap"):
        asyncio.run(run_sandboxed(["true"], workdir=tmp_path, limits=SMALL))
    assert shutil.which("bwrap")  # the real one is still there for the other tests


async def test_a_sandbox_that_does_not_start_is_the_nodes_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bwrap refusing to start (here: a bind it cannot make) is not the payload's failure."""
    from gridtask.node import sandbox
    from gridtask.node.executors.base import ExecutorFailure

    real = sandbox._bwrap_args
    monkeypatch.setattr(sandbox, "_bwrap_args", lambda *a, **k: [*real(*a, **k)[:-1], "--ro-bind",
                                                                 str(tmp_path / "gone"), "/gone", "bash"])
    with pytest.raises(ExecutorFailure, match="bubblewrap did not make the sandbox"):
        await _run(["true"], tmp_path)
