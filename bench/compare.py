"""``python -m bench.compare BEFORE.json[,MORE.json] AFTER.json``: two runs' targets and the CPU a task
costs each party, side by side, as Markdown (the tables of bench/RESULTS.md).

Rows are matched by name; a target one run lacks shows as "–". CPU per party comes from
the end-to-end section's sequential tasks (``/proc``, ms per task).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.cpu import PARTIES


def load(paths: str) -> dict[str, Any]:
    """One run, or several joined (``a.json,b.json``: sections of later files win), e.g. an
    old commit's e2e and embed sections measured separately."""
    run: dict[str, Any] = {"sections": {}}
    for path in paths.split(","):
        run["sections"].update(json.loads(Path(path).read_text())["sections"])
    return run


def checks(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for s in run["sections"].values() for c in s["checks"]}


def targets_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    b, a = checks(before), checks(after)
    out = ["| measurement | target | before | after | result |", "| --- | --- | --- | --- | --- |"]
    for name, c in a.items():
        if c["target"] == "-":
            continue
        old = b.get(name, {}).get("measured", "–")
        result = "n/a" if c["passed"] is None else ("pass" if c["passed"] else "**miss**")
        out.append(f"| {name} | {c['target']} | {old} | {c['measured']} | {result} |")
    return out


def _latency(run: dict[str, Any]) -> dict[str, Any] | None:
    e2e = run["sections"].get("end to end", {}).get("data", {})
    return e2e.get("latency")


def cpu_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """ms of CPU per sequential echo task, by party; the nodes split into the one that ran
    the task and each idle one."""
    rows: dict[str, list[str]] = {}
    for run in (before, after):
        lat = _latency(run)
        if lat is None:
            for k in rows:
                rows[k].append("–")
            continue
        n = lat["tasks"]
        cpu = lat["cpu_task"]
        ran = sum(lat["ran_node_cpu_s"]) / max(len(lat["ran_node_cpu_s"]), 1)
        idle = sum(lat["idle_node_cpu_s"]) / max(len(lat["idle_node_cpu_s"]), 1)
        values = {
            "nodes, all 8": cpu.get("nodes", 0) / n,
            "  the node that ran it": ran,
            "  each idle node": idle,
            **{p: cpu.get(p, 0) / n for p in PARTIES if p != "nodes"},
            "all parties": sum(cpu.get(p, 0) for p in PARTIES) / n,
            "for comparison: 4 bare transactions (all parties)": sum(lat["cpu_bare"].get(p, 0) for p in PARTIES) / n,
        }
        for k, v in values.items():
            rows.setdefault(k, []).append(f"{v * 1000:,.1f}")
    out = ["| party (ms of CPU per sequential echo task) | before | after |", "| --- | --- | --- |"]
    out += [f"| {k} | {' | '.join(v)} |" for k, v in rows.items()]
    return out


def rpc_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out = ["| party (JSON-RPC calls per echo task) | before | after |", "| --- | --- | --- |"]
    runs = [run["sections"].get("end to end", {}).get("data", {}).get("rpc", {}) for run in (before, after)]
    for party in ("app", "relay", "nodes"):
        cells = []
        for r in runs:
            c = r.get(party)
            cells.append("–" if c is None else f"{c['total']:.1f} (" + ", ".join(
                f"{k.removeprefix('eth_')} {v:.1f}" for k, v in c["per_task"].items()) + ")")
        out.append(f"| {party} | {' | '.join(cells)} |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("before", help="a --json file of python -m bench, or several joined by commas")
    parser.add_argument("after", help="the same, for the other run")
    args = parser.parse_args(argv)
    before, after = load(args.before), load(args.after)
    for title, lines in (("Targets", targets_table(before, after)), ("CPU per party", cpu_table(before, after)),
                         ("JSON-RPC per party", rpc_table(before, after))):
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
