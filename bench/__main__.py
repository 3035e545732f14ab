"""``python -m bench``: run the sections, print their tables, optionally write JSON."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.report import Section, checks_table, console

SECTIONS = ("gas", "e2e", "embed", "memory", "sim", "fragments")


def run_section(name: str, quick: bool, seed: int, alone: bool = False) -> Section:
    if name == "gas":
        from bench import gas

        # issue 7's table has the 10,000-node selection row: every full run measures it
        return gas.run(quick=quick, seed=seed, full=not quick)
    if name == "e2e":
        from bench import latency

        return latency.run(quick=quick)
    if name == "embed":
        from bench import embed

        return embed.run(quick=quick)
    if name == "fragments":  # Golem fragments per second beside the per-task floor (bench/fragments.py)
        from bench import fragments

        return fragments.run(quick=quick)
    if name == "sim":
        from bench import simulate

        # the full 10,000 x 100,000 network when asked for alone (`--only sim`)
        return simulate.run(quick=quick, seed=seed, full=alone and not quick)
    from bench import memory

    return memory.run(quick=quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer tasks: a smoke run (~3 minutes)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write every number to PATH")
    parser.add_argument("--only", metavar="SECTIONS", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--seed", type=int, default=1, help="seed of the gas section's population and tasks")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {SECTIONS}")

    started = time.perf_counter()
    console.rule(f"gridtask bench{' --quick' if args.quick else ''}")
    sections: list[Section] = []
    for name in wanted:
        t = time.perf_counter()
        with console.status(f"{name}..."):
            try:
                sec = run_section(name, args.quick, args.seed, alone=len(wanted) == 1)
            except Exception as exc:
                sec = Section(name)
                sec.errors.append(f"{type(exc).__name__}: {exc}")
                sec.data["traceback"] = traceback.format_exc()
                console.print(f"[red]{name} failed:[/]\n{sec.data['traceback']}")
        sec.data["section_seconds"] = time.perf_counter() - t
        sections.append(sec)
        for tbl in sec.tables:
            console.print(tbl)
        if sec.checks:
            console.print(checks_table(f"{sec.name}: targets ({sec.data['section_seconds']:.0f}s)", sec.checks))
        for err in sec.errors:
            console.print(f"[yellow]{sec.name}: {err}[/]")

    checks = [c for s in sections for c in s.checks if c.target != "-"]
    if len(sections) > 1 and checks:
        console.print(checks_table("every target of this run", checks, section=True))
    missed = [c for c in checks if c.passed is False]
    unmeasured = [c for c in checks if c.passed is None]
    crashed = [s.name for s in sections if s.errors and not s.checks]
    elapsed = time.perf_counter() - started
    console.rule()
    console.print(f"{len(checks) - len(missed) - len(unmeasured)}/{len(checks)} targets met"
                  + (f"; missed: {', '.join(c.name for c in missed)}" if missed else "")
                  + (f"; not measured: {len(unmeasured)}" if unmeasured else "")
                  + (f"; sections that failed: {', '.join(crashed)}" if crashed else "")
                  + f"  ({elapsed:.0f}s)")
    if args.json:
        out: dict[str, Any] = dict(
            quick=args.quick, seed=args.seed, seconds=elapsed, python=platform.python_version(),
            machine=platform.machine(), time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            sections={s.name: s.to_json() for s in sections},
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        console.print(f"wrote {args.json}")
    if crashed:
        return 1
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
