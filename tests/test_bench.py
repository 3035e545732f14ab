"""The bench's own arithmetic: profiles, CPU intervals, the before/after comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.compare import cpu_table, load, targets_table
from bench.cpu import Usage
from bench.profiles import Profile

ENTRY = "<module> (/w/gridtask/__main__.py:3);main (/w/gridtask/cli.py:5)"
STACKS = "\n".join([
    f"{ENTRY};EventFollower.handle (/w/gridtask/chain/events.py:10);"
    "decode (/v/lib/python3.11/site-packages/eth_abi/decoding.py:4) 7",
    "<module> (/w/gridtask/__main__.py:3);run_forever (/r/lib/python3.11/asyncio/base_events.py:1);"
    "EpollSelector.select (/r/lib/python3.11/selectors.py:468) 50",
    f"{ENTRY};loads (/r/lib/python3.11/json/decoder.py:4) 3",
])


def test_a_profile_sets_waits_apart_and_charges_the_deepest_project_frame() -> None:
    p = Profile("nodes")
    p.add_collapsed(STACKS)
    assert (p.samples, p.waiting) == (10, 50)  # the event loop's select is a wait, not CPU
    top = p.top()
    # eth_abi's decoding is charged to the gridtask function that called it; the CLI entry is no owner
    assert top["deepest project frame"] == [("EventFollower.handle gridtask/chain/events.py", 0.7),
                                            ("(no project frame)", 0.3)]
    assert top["leaf"][0] == ("decode eth_abi/decoding.py", 0.7)


def test_cpu_intervals_add_and_the_machine_load_is_a_wall_weighted_mean() -> None:
    a = Usage({"nodes": 1.0, "node:0xa": 1.0, "app": 0.5, "wall": 1.0, "busy": 1.0})
    b = Usage({"nodes": 3.0, "node:0xa": 2.0, "node:0xb": 1.0, "relay": 1.0, "wall": 3.0, "busy": 0.2})
    s = a + b
    assert s["nodes"] == 4.0 and s["app"] == 0.5 and s["relay"] == 1.0 and s["wall"] == 4.0
    assert s["busy"] == pytest.approx((1.0 * 1 + 0.2 * 3) / 4)
    assert s.per_node() == {"0xa": 3.0, "0xb": 1.0}
    assert s.parties == pytest.approx(5.5)


def _run(path: Path, section: str, checks: list[dict], data: dict | None = None) -> str:
    path.write_text(json.dumps({"sections": {section: {"checks": checks, "data": data or {}}}}))
    return str(path)


def _check(name: str, measured: str, passed: bool | None, target: str = "<= 1") -> dict:
    return dict(section="s", name=name, target=target, measured=measured, value=None, limit=None, passed=passed)


def test_compare_joins_the_before_files_and_matches_targets_by_name(tmp_path: Path) -> None:
    lat = dict(tasks=2, cpu_task={"nodes": 0.2, "app": 0.1, "relay": 0.04, "anvil": 0.02},
               cpu_bare={"app": 0.02}, ran_node_cpu_s=[0.05, 0.07], idle_node_cpu_s=[0.01, 0.03])
    e2e = _run(tmp_path / "e2e.json", "end to end", [_check("latency", "7×", False)], {"latency": lat})
    embed = _run(tmp_path / "embed.json", "embed", [_check("embed", "1.2×", True)])
    after = _run(tmp_path / "after.json", "end to end",
                 [_check("latency", "2×", True), _check("new row", "5", False), _check("info", "x", None, "-")],
                 {"latency": lat})
    before = load(f"{e2e},{embed}")
    assert set(before["sections"]) == {"end to end", "embed"}
    rows = targets_table(before, load(after))
    assert "| latency | <= 1 | 7× | 2× | pass |" in rows
    assert "| new row | <= 1 | – | 5 | **miss** |" in rows
    assert not any(r.startswith("| info ") for r in rows)  # info rows have no target
    cpu = cpu_table(before, load(after))
    assert "|   the node that ran it | 60.0 | 60.0 |" in cpu
    assert "| all parties | 180.0 | 180.0 |" in cpu


def test_embedding_texts_are_split_evenly_into_a_multiple_of_the_node_count() -> None:
    from bench.embed import split, texts

    batch = texts(1000)
    chunks = split(batch, 256, 3)
    assert [len(c) for c in chunks] == [167, 167, 167, 167, 166, 166]
    assert [t for c in chunks for t in c] == batch  # every text once, in order
    assert [len(c) for c in split(batch, 256, 1)] == [250] * 4
