"""Child processes that never outlive their parent, and the pid file that finds what an
older parent left behind: real processes, real signals, real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gridtask.children import PidFile, alive, die_with_parent, end_processes, pids_listening_on

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def wait_gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


@linux_only
def test_a_child_dies_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    """A parent starts a child with ``die_with_parent`` and is SIGKILLed: the child goes too."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        from gridtask.children import die_with_parent
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 preexec_fn=die_with_parent(), start_new_session=True)
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """)])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert alive(child)
        parent.kill()
        parent.wait()
        assert wait_gone(child), "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()


def test_die_with_parent_is_not_asked_for_off_the_main_thread() -> None:
    """Linux sends the signal when the forking *thread* ends: from a worker thread the child
    would die with that thread, so no hook is given there."""
    import threading

    found: list[object] = []
    worker = threading.Thread(target=lambda: found.append(die_with_parent()))
    worker.start()
    worker.join()
    assert found == [None]


def test_a_listening_port_names_its_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert pids_listening_on(port) == []  # bound, not listening
        s.listen()
        if sys.platform.startswith("linux"):
            assert pids_listening_on(port) == [os.getpid()]


def test_pid_file_finds_leftovers_but_leaves_reused_pids_and_live_owners_alone(tmp_path: Path) -> None:
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "gridtask-node"])
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a reused PID, say
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        pid_file = PidFile(tmp_path / "devnet.pid")
        pid_file.write({"node0": ours.pid, "node1": stranger.pid, "relay": dead.pid})
        # Written by this process, which is alive: it is not "another" owner.
        owner, left = pid_file.leftovers()
        assert owner is None
        assert left == {"node0": ours.pid}
        assert end_processes(list(left.values())) == []
        assert ours.wait(5) == -signal.SIGKILL
        assert stranger.poll() is None  # never touched

        # An owner that still runs is reported, so a second devnet refuses to share the home.
        data = pid_file.path.read_text().replace(f'"owner": {os.getpid()}', f'"owner": {stranger.pid}')
        pid_file.path.write_text(data)
        assert pid_file.leftovers()[0] == stranger.pid
    finally:
        for proc in (ours, stranger):
            proc.kill()
            proc.wait()


def test_a_damaged_pid_file_is_no_leftover(tmp_path: Path) -> None:
    path = tmp_path / "devnet.pid"
    path.write_text("{not json")
    assert PidFile(path).leftovers() == (None, {})
