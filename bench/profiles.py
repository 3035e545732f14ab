"""Sampling profiles of a devnet's Python parties while tasks run (py-spy).

``py-spy record --nonblocking`` samples a process's Python stacks without stopping it.
Samples whose top frame is a wait (an event loop's ``select``, a pool thread waiting for
work, a condition) are counted apart as waiting; the rest is where each party's CPU goes:
by the *deepest project frame* (the last ``gridtask/`` function on the stack: that
function's own work plus the libraries it called, e.g. ABI decoding under an event
handler) and by *leaf* (the function on top, any module). Several processes of one party
(the nodes) are summed. When py-spy is missing or may not attach (ptrace), the section
says so and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RATE = 200  # samples per second
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
PROJECT = ("gridtask/",)
ENTRY = ("gridtask/__main__.py", "gridtask/cli.py")  # every sample of a daemon is under them
WAITS = {"EpollSelector.select selectors.py", "select selectors.py", "Condition.wait threading.py",
         "_worker concurrent/futures/thread.py", "Event.wait threading.py", "Thread._wait_for_tstate_lock threading.py",
         "Queue.get queue.py", "SimpleQueue.get queue.py"}


def py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    """Collapsed stacks of one party: samples, and each function's self / inclusive count."""

    party: str
    samples: int = 0  # on CPU
    waiting: int = 0
    leaf: Counter[str] = field(default_factory=Counter)
    project: Counter[str] = field(default_factory=Counter)  # by deepest project frame

    def add_collapsed(self, text: str) -> None:
        for line in text.splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [f for f in (_name(f) for f in stack.split(";")) if f]
            if not frames:
                continue
            if frames[-1] in WAITS:
                self.waiting += n
                continue
            self.samples += n
            self.leaf[frames[-1]] += n
            ours = [f for f in frames if f.split(" ")[-1].startswith(PROJECT) and not f.endswith(ENTRY)]
            self.project[ours[-1] if ours else "(no project frame)"] += n

    def top(self, k: int = 6) -> dict[str, list[tuple[str, float]]]:
        s = self.samples or 1
        return {"deepest project frame": [(f, n / s) for f, n in self.project.most_common(k)],
                "leaf": [(f, n / s) for f, n in self.leaf.most_common(k)]}


def _name(frame: str) -> str:
    """``func (path/to/gridtask/x.py:12)`` -> ``func gridtask/x.py`` (site-packages paths cut)."""
    frame = frame.strip()
    m = FRAME.match(frame)
    if not m:
        return "" if frame.startswith("process ") or frame.startswith("thread ") else frame
    path = m["file"]
    for marker in ("site-packages/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("/lib"):
                path = path.split("/", 1)[-1]
    for root in PROJECT:
        i = path.rfind("/" + root)
        if i >= 0:
            path = path[i + 1:]
    return f"{m['func']} {path}"


class Recorder:
    """``async with Recorder({"relay": [pid], "nodes": [...], "app": [os.getpid()]}):`` samples
    every pid while the block runs; then ``profiles`` holds one Profile per party."""

    def __init__(self, parties: dict[str, list[int]]) -> None:
        self.parties = parties
        self.profiles: dict[str, Profile] = {}
        self.error: str | None = None
        self._procs: list[tuple[str, asyncio.subprocess.Process, Path]] = []
        self._dir = Path(tempfile.mkdtemp(prefix="gridtask-bench-pyspy-"))

    async def __aenter__(self) -> Recorder:
        exe = py_spy()
        if exe is None:
            self.error = "py-spy is not installed (pip install py-spy==0.4.3)"
            return self
        for party, pids in self.parties.items():
            for pid in pids:
                out = self._dir / f"{party}-{pid}.txt"
                proc = await asyncio.create_subprocess_exec(
                    exe, "record", "--pid", str(pid), "--rate", str(RATE), "--nonblocking", "--format", "raw",
                    "--full-filenames", "--output", str(out), stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE)
                self._procs.append((party, proc, out))
        await asyncio.sleep(1.0)  # py-spy attaches
        return self

    async def __aexit__(self, *exc: object) -> None:
        errors = []
        for party, proc, out in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(2)  # SIGINT: py-spy writes what it has and exits
            try:
                _, err = await asyncio.wait_for(proc.communicate(), 30)
            except TimeoutError:
                proc.kill()
                err = b"timed out"
            prof = self.profiles.setdefault(party, Profile(party))
            if out.exists():
                prof.add_collapsed(out.read_text())
            elif err:
                errors.append(f"{party}: {err.decode(errors='replace').strip()[-200:]}")
        if errors and not any(p.samples for p in self.profiles.values()):
            self.error = "; ".join(errors[:3])
        shutil.rmtree(self._dir, ignore_errors=True)

    def summary(self, k: int = 6) -> dict[str, Any]:
        return {party: dict(samples=p.samples, waiting=p.waiting, **p.top(k)) for party, p in self.profiles.items()}


def rows(summary: dict[str, Any], k: int = 5) -> list[list[str]]:
    """Table rows: party (its on-CPU samples), kind, function, share of them."""
    out = []
    for party, s in summary.items():
        for kind, n in (("deepest project frame", k), ("leaf", 3)):
            for func, share in s[kind][:n]:
                out.append([f"{party} ({s['samples']:,})", kind, func, f"{share:.0%}"])
    return out
