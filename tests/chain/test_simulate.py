"""The network simulation (bench/simulate.py) in its small form, and its invariants.

The real compiled contract in revm (200 nodes, 2,000 tasks at 50% then 90% load), and a
smaller run on both engines: titanoboa and revm must charge every transaction the same
gas and pick the same nodes, or the full-size figures (revm) would not be titanoboa's.
"""

from __future__ import annotations

import pytest
from eth_abi import decode, encode

pytest.importorskip("pyrevm")

from bench import simulate as sim  # noqa: E402


@pytest.fixture(scope="module")
def small() -> sim.Result:
    return sim.simulate(sim.Config(nodes=200, tasks=2_000, compute_blocks=5, seed=3))


def test_every_task_ends_and_money_is_conserved(small: sim.Result) -> None:
    assert len(small.tasks) == 2_000
    assert small.stranded == []
    assert {t.end for t in small.tasks} <= {"success", "refunded"}
    assert all(t.end for t in small.tasks), "a task the model never saw end"
    m = small.money
    assert sim.money_gap(small) == 0, m
    assert m["escrow"] == 0
    # each fee went exactly one way: to the node that ran it, or back to the creator
    assert m["owed_nodes"] == m["fees_paid"] == sum(t.req.fee for t in small.tasks if t.end == "success")
    assert m["owed_creator"] == m["refunded"]
    assert m["stakes"] == sum(s.stake for s in sim.gas.make_population(200, 3))
    assert small.node_mismatch == 0


def test_loads_are_reached_and_misses_counted(small: sim.Result) -> None:
    for i, target in enumerate((0.5, 0.9, 1.0)):  # offered 110%: every node busy, the rest waits
        s = sim.phase_stats(small, i)
        assert s["tasks"] > 200 and s["blocks"] > 5
        assert abs(s["busy"] - target) < 0.06, f"phase {i}: {s['busy']:.1%} of nodes busy, wanted {target:.0%}"
        measured = [t for t in small.tasks if t.phase == i and t.measured]
        assert s["misses"] == sum(t.missed for t in measured)
        assert s["miss_rate"] == pytest.approx(s["misses"] / len(measured))
    assert all(t.queued for t in small.tasks if t.missed), "a miss is a task that queued"
    # a miss is answered at once: the idle node's daemon claims queued work in the same block
    takes = len(small.gas_by_fn.get("takeQueuedTask", []))
    assert takes >= sum(t.missed for t in small.tasks)
    half, over = sim.phase_stats(small, 0), sim.phase_stats(small, 2)
    assert half["wait_max"] == 0, "at half load a queued task waited: no idle node took it"
    assert over["queued"] / over["tasks"] > 0.9 and over["wait_avg"] > 0.5, "overload did not queue"


def test_gas_per_task_is_every_transaction_of_the_task(small: sim.Result) -> None:
    spent = sum(sum(v) for fn, v in small.gas_by_fn.items() if fn != "join")
    assert spent == sum(t.gas for t in small.tasks) + small.unattributed_gas
    done = [t for t in small.tasks if t.end == "success"]
    # at least createTask + startTask + submitScore + validateSingleTask + reportResultUploaded
    floor = sum(min(small.gas_by_fn[fn]) for fn in
                ("createTask", "startTask", "submitScore", "validateSingleTask", "reportResultUploaded"))
    assert min(t.gas for t in done) >= floor
    rows = sim.bucket_rows(small, 2)
    assert sum(r[1] for r in rows) == sim.phase_stats(small, 2)["tasks"]
    assert [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)


def test_titanoboa_and_revm_agree_transaction_by_transaction() -> None:
    """The full-size run is on revm: its transactions, nodes and ends must be titanoboa's."""
    ag = sim.agreement(sim.Config(nodes=24, tasks=90, compute_blocks=3, seed=5))
    assert ag["txs"][0] == ag["txs"][1] >= 24 + 5 * 90
    assert ag["same_calls"] and ag["nodes_same"] and ag["ends_same"]
    boa = ag["boa"]
    assert boa.stranded == [] and sim.money_gap(boa) == 0 and boa.node_mismatch == 0
    # titanoboa's gas is bench/gas.py's metering: a createTask costs what gas.py's ceiling allows
    assert max(boa.gas_by_fn["createTask"]) <= sim.gas.CALL_CEILINGS["createTask"]


def test_fast_encoding_matches_eth_abi() -> None:
    types = ["bytes32", "uint256", "bytes32[]", "address[]", "address", "uint256[]", "bool"]
    values = (b"\x01" * 32, 5, [b"a" * 32, b"b".ljust(32, b"\0")], ["0x" + "ab" * 20], "0x" + "cd" * 20, [], True)
    assert sim.encode_args(types, values) == encode(types, values)
    out = encode(["address", "uint256", "bytes32"], ["0x" + "ef" * 20, 7, b"\x09" * 32])
    addr, n, word = sim.decode_words(["address", "uint256", "bytes32"], out)
    assert (addr, n, word) == ("0x" + "ef" * 20, *decode(["address", "uint256", "bytes32"], out)[1:])
