"""Child processes that never outlive the process that started them.

The devnet and the end-to-end tests start anvil, the relay and nodes as child
processes. However the parent ends (Ctrl-C, SIGTERM, SIGKILL, a crash), its children
must end too, or they keep ports and files busy and act on a chain that is gone. On
Linux the kernel does it: each child asks for ``PR_SET_PDEATHSIG`` between fork and
exec, so it gets SIGKILL the moment its parent dies. SIGKILL, not SIGTERM: a child
keeps on disk, before each step, what it needs later, and SIGKILL cannot be ignored
or delayed by a child that is stuck.

Elsewhere (and as a second line on Linux) a parent records its children's PIDs in a
file (``PidFile``); the next parent that uses the same state directory ends whatever
is left of them before it starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1
REAP_TIMEOUT_S = 3.0


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # looked up once, in the parent: the child only calls it


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies
    (``None`` where the platform has no such thing).

    Linux ties the signal to the *thread* that forks, so only the main thread (which
    lives as long as the process) asks for it; children started elsewhere rely on the
    ``PidFile`` alone."""
    if _PRCTL is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl, parent = _PRCTL, os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def command_line(pid: int) -> str:
    """The process's command line, or ``""`` when it cannot be read."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pids_listening_on(port: int) -> list[int]:
    """The PIDs of this user's processes listening on TCP ``port`` (Linux; ``[]`` elsewhere)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                    inodes.add(fields[9])
    if not inodes:
        return []
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    pids.append(int(proc.name))
                    break
    return sorted(pids)


def end_processes(pids: list[int], timeout: float = REAP_TIMEOUT_S) -> list[int]:
    """SIGKILL each process and wait until it is gone; returns those still alive after."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


class PidFile:
    """``{"owner": pid, "children": {name: pid}}`` in a state directory: who is using it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> tuple[int | None, dict[str, int]]:
        try:
            data = json.loads(self.path.read_text())
            return int(data["owner"]), {str(k): int(v) for k, v in data["children"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None, {}

    def write(self, children: dict[str, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"owner": os.getpid(), "children": children}))
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def leftovers(self) -> tuple[int | None, dict[str, int]]:
        """The owner, if it still runs, and those of its children that still run and are
        still what they were (a PID reused by an unrelated program is left alone)."""
        owner, children = self.read()
        live_owner = owner if owner is not None and owner != os.getpid() and alive(owner) else None
        ours = {name: pid for name, pid in children.items() if alive(pid) and _looks_like_ours(pid)}
        return live_owner, ours


def _looks_like_ours(pid: int) -> bool:
    line = command_line(pid)
    return not line or "gridtask" in line or "anvil" in line
