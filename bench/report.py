"""Checks (target vs measured), statistics and the rich tables every section prints."""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass
class Check:
    """One target: ``measured <op> limit``. ``passed`` is None when nothing was measured."""

    section: str
    name: str
    target: str
    measured: str
    value: float | None
    limit: float | None
    passed: bool | None
    note: str = ""


@dataclass
class Section:
    """What one module measured: its checks, its detail tables and its raw numbers."""

    name: str
    checks: list[Check] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def check(self, name: str, value: float | None, op: str, limit: float, fmt: str = "{:,.0f}",
              note: str = "", target: str | None = None) -> Check:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            passed, measured = None, "n/a"
        else:
            passed = value <= limit if op == "<=" else value >= limit
            measured = fmt.format(value)
        c = Check(self.name, name, target or f"{op} {fmt.format(limit)}", measured, value, limit, passed, note)
        self.checks.append(c)
        return c

    def info(self, name: str, measured: str, value: float | None = None, note: str = "") -> Check:
        c = Check(self.name, name, "-", measured, value, None, None, note)
        self.checks.append(c)
        return c

    def to_json(self) -> dict[str, Any]:
        return {"checks": [asdict(c) for c in self.checks], "data": self.data, "errors": self.errors}


def verdict(passed: bool | None, target: str) -> str:
    if target == "-":
        return "[dim]info[/]"
    if passed is None:
        return "[yellow]n/a[/]"
    return "[green]PASS[/]" if passed else "[red bold]FAIL[/]"


def checks_table(title: str, checks: list[Check], section: bool = False) -> Table:
    """One row per check; `section` adds a column naming each row's section (the summary)."""
    t = Table(title=title, title_justify="left", show_lines=False)
    if section:
        t.add_column("section")
    t.add_column("measurement")
    t.add_column("target", justify="right")
    t.add_column("measured", justify="right")
    t.add_column("result", justify="center")
    t.add_column("note", overflow="fold", max_width=90)
    for c in checks:
        t.add_row(*([c.section] if section else []), c.name, c.target, c.measured, verdict(c.passed, c.target),
                  c.note)
    return t


def table(title: str, columns: list[str], rows: list[list[Any]], right_from: int = 1) -> Table:
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="right" if i >= right_from else "left")
    for row in rows:
        t.add_row(*[str(x) for x in row])
    return t


# ---------------------------------------------------------------- statistics


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def ms(seconds: float) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:,.0f} ms"
