"""Sampling profiles of a devnet's Python parties while tasks run (py-spy).

``py-spy record --nonblocking`` samples a process's on-CPU Python stacks without stopping
it, so a profile says where each party's CPU goes: a function's *inclusive* share is the
fraction of samples with it anywhere on the stack, its *self* share the fraction with it
on top. Several processes of one party (the nodes) are summed. When py-spy is missing or
may not attach (ptrace), the section says so and goes on.
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
PROJECT = ("gridtask/", "bench/")


def py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    """Collapsed stacks of one party: samples, and each function's self / inclusive count."""

    party: str
    samples: int = 0
    self_: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    project_inclusive: Counter[str] = field(default_factory=Counter)

    def add_collapsed(self, text: str) -> None:
        for line in text.splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [_name(f) for f in stack.split(";")]
            frames = [f for f in frames if f]
            if not frames:
                continue
            self.samples += n
            self.self_[frames[-1]] += n
            seen = set(frames)
            for f in seen:
                self.inclusive[f] += n
                if f.split(" ")[-1].startswith(PROJECT):
                    self.project_inclusive[f] += n

    def top(self, k: int = 6) -> dict[str, list[tuple[str, float]]]:
        if not self.samples:
            return {"self": [], "project (inclusive)": []}
        s = self.samples
        return {
            "self": [(f, n / s) for f, n in self.self_.most_common(k)],
            # the project's functions, outermost wrappers left out (every sample is under them)
            "project (inclusive)": [(f, n / s) for f, n in self.project_inclusive.most_common(k + 4)
                                    if n < 0.97 * s][:k],
        }


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
        return {party: dict(samples=p.samples, **p.top(k)) for party, p in self.profiles.items()}


def rows(summary: dict[str, Any], k: int = 5) -> list[list[str]]:
    """Table rows: party, kind, function, share of that party's samples."""
    out = []
    for party, s in summary.items():
        for kind in ("project (inclusive)", "self"):
            for func, share in s[kind][:k]:
                out.append([party, kind, func, f"{share:.0%}"])
    return out
