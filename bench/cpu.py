"""Where the CPU goes: per-process CPU seconds of each party of a devnet, from ``/proc``.

The parties are the chain (anvil), the relay, every node (one group per node, so the node
that ran a task can be told from the idle ones) and the applications (this process: the
bench's clients run in it). A party is its process and all of its descendants. Counters
are cumulative (clock ticks of user + system time), so summing the deltas of consecutive
intervals loses nothing to the 10 ms tick.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

PARTIES = ("nodes", "app", "relay", "anvil")
"""The columns of every CPU table, in this order."""

APP = "app"
NODE_PREFIX = "node:"


def proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds) of every process we can read."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def vm_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


class Usage(dict[str, float]):
    """CPU seconds by party over an interval (``Usage.between``), plus ``wall`` seconds and
    the whole machine's ``busy`` share. ``+`` adds intervals; ``node:<address>`` keys are
    the nodes one by one (``nodes`` is their sum)."""

    def __add__(self, other: dict[str, float]) -> Usage:  # type: ignore[override]
        out = Usage({k: self.get(k, 0.0) + other.get(k, 0.0) for k in {*self, *other}})
        wall = out.get("wall", 0.0)
        if wall:  # a wall-weighted mean, not a sum
            weighted = self.get("busy", 0) * self.get("wall", 0) + other.get("busy", 0) * other.get("wall", 0)
            out["busy"] = weighted / wall
        return out

    @property
    def parties(self) -> float:
        return sum(self.get(p, 0.0) for p in PARTIES)

    def per_node(self) -> dict[str, float]:
        return {k[len(NODE_PREFIX):]: v for k, v in self.items() if k.startswith(NODE_PREFIX)}


class CpuMeter:
    """Snapshots of the CPU seconds of a devnet's parties (see the module's docstring)."""

    def __init__(self, net: Any) -> None:
        self.roots: dict[str, list[int]] = defaultdict(list)
        self.roots["anvil"].append(net.chain.proc.pid)
        self.roots[APP].append(os.getpid())
        node_address = {f"node{i}": ident.address.lower() for i, ident in enumerate(net.node_identities)}
        for name, proc in net.processes.items():
            if name == "relay":
                self.roots["relay"].append(proc.pid)
            elif name in node_address:
                self.roots[NODE_PREFIX + node_address[name]].append(proc.pid)
        self.cores = os.cpu_count() or 1

    def snapshot(self) -> dict[str, float]:
        table = proc_table()
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (ppid, _) in table.items():
            children[ppid].append(pid)
        out: dict[str, float] = defaultdict(float)
        for group, roots in self.roots.items():
            total, stack = 0.0, list(roots)
            while stack:
                pid = stack.pop()
                if pid in table:
                    total += table[pid][1]
                    if group != APP:  # this process's children are the devnet's own parties
                        stack.extend(children.get(pid, []))
            out[group] = total
            if group.startswith(NODE_PREFIX):
                out["nodes"] += total
        out["_busy"], out["_total"] = machine_busy()
        out["_wall"] = time.perf_counter()
        return dict(out)

    @staticmethod
    def between(a: dict[str, float], b: dict[str, float]) -> Usage:
        d = Usage({k: b[k] - a[k] for k in a if not k.startswith("_")})
        d["wall"] = b["_wall"] - a["_wall"]
        total = b["_total"] - a["_total"]
        d["busy"] = (b["_busy"] - a["_busy"]) / total if total else float("nan")
        return d


CPU_COLUMNS = ["run", *PARTIES, "all parties", "cores used", "machine busy (all users)"]


def cpu_row(label: str, d: Usage, tasks: int) -> list[str]:
    """ms per task of each party, their sum, cores they used, and the machine's load."""
    cores = os.cpu_count() or 1
    per = [f"{d.get(p, 0.0) / tasks * 1000:,.1f}" for p in PARTIES]
    return [label, *per, f"{d.parties / tasks * 1000:,.1f}", f"{d.parties / d['wall']:.2f} of {cores}",
            f"{d['busy']:.0%}"]
