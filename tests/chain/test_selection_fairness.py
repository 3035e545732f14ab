"""Selection is proportional to capped stake, exactly (issue 7).

An audit found that when no probe accepted a node, selection fell back to the heaviest
node seen, so a node staking 1 wei more than five peers won 62% of selections (fair:
17%). These tests draw thousands of selections with the contract's own selection code
(gridtask/chain/contracts/selection.vy, run by a small harness contract that joins nodes
into the real node registry and draws many selections in one call) and check each
node's share against its capped stake's share with a chi-square test; one test goes
through TaskNetwork's startTask itself.

Every draw is seeded (keccak of a counter, as startTask's seed is a keccak), so the
tests are deterministic; the threshold is the chi-square quantile at p = 0.001, and
every expected count is at least 5 (the test's own rule of thumb).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import boa
import chain_kit as kit
import pytest
from chain_kit import ETHER, b32

HARNESS = Path(__file__).resolve().parent / "SelectionHarness.vy"
CAP_MULTIPLE = kit.CAP_MULTIPLE
CAP = ETHER * CAP_MULTIPLE
# py-evm runs ~100 selections a CPU second: enough draws to see a bias like the old
# fallback's (62% where 17% is fair) many times over, few enough to run in about a minute.
DRAWS = 600
MODEL = "llama3-8b"


def chi2_critical(df: int, p: float = 0.001) -> float:
    """The chi-square quantile with `df` degrees of freedom at upper tail p (Wilson-Hilferty;
    within 1% of the exact value for df >= 2, which is far finer than the tests need)."""
    z = {0.001: 3.090232, 0.01: 2.326348}[p]
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(counts: dict[str, int], weights: dict[str, int]) -> tuple[float, int]:
    """Pearson's statistic of `counts` against shares proportional to `weights`; and df."""
    n = sum(counts.values())
    total = sum(weights.values())
    assert min(n * w / total for w in weights.values()) >= 5, "too few draws for a chi-square test"
    stat = sum((counts.get(a, 0) - n * w / total) ** 2 / (n * w / total) for a, w in weights.items())
    return stat, len(weights) - 1


def assert_fair(picks: list[str], weights: dict[str, int], label: str, max_miss: float = 0.0) -> None:
    """Every pick is a node that may run the task; shares match capped stakes (chi-square,
    p = 0.001); the share of draws that found nobody is at most `max_miss`."""
    empty = [p for p in picks if kit.same(p, kit.ZERO_ADDRESS)]
    found = Counter(str(p).lower() for p in picks if not kit.same(p, kit.ZERO_ADDRESS))
    weights = {a.lower(): w for a, w in weights.items()}
    assert set(found) <= set(weights), f"{label}: picked a node that cannot run the task"
    stat, df = chi2(dict(found), weights)
    n = sum(found.values())
    shares = ", ".join(f"{found.get(a, 0) / n:.3f}/{w / sum(weights.values()):.3f}" for a, w in weights.items())
    print(f"\n{label}: {n} picks, {len(empty)} empty; chi2 {stat:.1f} (df {df}, "
          f"limit {chi2_critical(df):.1f}); shares seen/fair {shares}")
    assert len(empty) <= max_miss * len(picks), f"{label}: {len(empty)} of {len(picks)} draws found no node"
    assert stat <= chi2_critical(df), f"{label}: shares are not proportional to capped stake ({shares})"


@pytest.fixture(scope="module")
def harness_deployer():
    """Compiled once: the harness, with the contract's node_registry and selection modules
    (resolved from the contracts' directory)."""
    return boa.loads_partial(HARNESS.read_text(), name="SelectionHarness",
                             filename=str(kit.CONTRACTS_DIR / HARNESS.name))


@pytest.fixture
def harness(harness_deployer):
    with boa.swap_env(boa.Env()):
        h = harness_deployer.deploy(ETHER, CAP_MULTIPLE)
        boa.env.evm.patch.gas_limit = 2**40
        yield h


_seeds = iter(range(10**6, 10**9, 10**6))


def draw(h, models=(MODEL,), min_vram=0, gpu=None, exclude=(), count=DRAWS) -> list[str]:
    """`count` selections, each with a fresh seed."""
    return h.draw(next(_seeds), count, [b32(m) for m in models], min_vram, b32(gpu), list(exclude),
                  gas=2**39)


def join_all(h, stakes, gpu="rtx4090", vram=24576, models=(MODEL,), tag="n") -> list[str]:
    addrs = [kit.seeded_address(f"fair-{tag}", i) for i in range(len(stakes))]
    for a, s in zip(addrs, stakes, strict=True):
        h.join(a, s, b32(gpu), vram, [b32(m) for m in models])
    return addrs


def capped(stake: int) -> int:
    return min(stake, CAP)


@pytest.mark.parametrize("stakes", [
    pytest.param([ETHER] * 6, id="equal"),
    pytest.param([ETHER + 1] + [ETHER] * 5, id="one-node-1-wei-more"),
    pytest.param([ETHER, 2 * ETHER, 5 * ETHER, 10 * ETHER, 15 * ETHER, 100 * ETHER], id="unequal-and-above-cap"),
])
def test_small_array_shares_match_capped_stake(harness, stakes):
    """At most MAX_PROBES nodes serve the model: every one is looked at (one pass)."""
    addrs = join_all(harness, stakes)
    assert_fair(draw(harness), {a: capped(s) for a, s in zip(addrs, stakes, strict=True)}, f"6 nodes {stakes}")


def test_small_array_half_busy_only_idle_nodes_share(harness):
    stakes = [ETHER + 1, ETHER, 3 * ETHER, ETHER, 20 * ETHER, 2 * ETHER, ETHER, 7 * ETHER]
    addrs = join_all(harness, stakes)
    for a in addrs[::2]:
        harness.set_status(a, kit.BUSY)
    idle = {a: capped(s) for a, s in list(zip(addrs, stakes, strict=True))[1::2]}
    assert_fair(draw(harness), idle, "8 nodes, half busy")


@pytest.mark.parametrize("busy", [False, True], ids=["all-idle", "half-busy"])
def test_large_array_shares_match_capped_stake(harness, busy):
    """More nodes than MAX_PROBES: independent probes with rejection; a draw may find
    nobody (the task queues), which biases nothing."""
    n = kit.MAX_PROBES + 8
    stakes = [ETHER + 1] + [(ETHER, 2 * ETHER, 5 * ETHER, 40 * ETHER)[i % 4] for i in range(1, n)]
    addrs = join_all(harness, stakes)
    pool = list(zip(addrs, stakes, strict=True))
    if busy:
        for a, _ in pool[::2]:
            harness.set_status(a, kit.BUSY)
        pool = pool[1::2]
    assert_fair(draw(harness, count=800), {a: capped(s) for a, s in pool},
                f"{n} nodes, {'half busy' if busy else 'all idle'}", max_miss=0.05)


def test_large_array_equal_stakes_never_miss(harness):
    """The acceptance is weight / the array's high-water mark, not / the global cap: equal
    stakes accept at the first idle probe, so an idle network never queues."""
    addrs = join_all(harness, [2 * ETHER] * (kit.MAX_PROBES + 8))
    assert_fair(draw(harness), {a: 2 * ETHER for a in addrs}, "24 equal nodes", max_miss=0.0)


def test_requirements_filter_and_the_rest_share_fairly(harness):
    """Nodes without the GPU, the VRAM or the second model, and excluded nodes, are never
    picked; the others share by capped stake."""
    fit = join_all(harness, [ETHER + 1, 3 * ETHER, ETHER], gpu="h100", vram=81920, models=(MODEL, "m2"), tag="fit")
    join_all(harness, [10 * ETHER] * 3, gpu="a100", vram=81920, models=(MODEL, "m2"), tag="gpu")
    join_all(harness, [10 * ETHER] * 3, gpu="h100", vram=40960, models=(MODEL, "m2"), tag="vram")
    join_all(harness, [10 * ETHER] * 3, gpu="h100", vram=81920, models=(MODEL,), tag="model")
    excluded = join_all(harness, [10 * ETHER] * 2, gpu="h100", vram=81920, models=(MODEL, "m2"), tag="x")
    picks = draw(harness, models=(MODEL, "m2"), min_vram=81920, gpu="h100", exclude=excluded)
    assert_fair(picks, {a: capped(s) for a, s in zip(fit, [ETHER + 1, 3 * ETHER, ETHER], strict=True)},
                "3 fitting of 14", max_miss=0.0)


def test_stake_raised_by_top_up_keeps_shares_exact(harness):
    """A top-up above the array's mark raises the mark (weight / mark stays a probability)."""
    n = kit.MAX_PROBES + 4
    addrs = join_all(harness, [ETHER] * n)
    harness.set_stake(addrs[0], 8 * ETHER)
    weights = {a: ETHER for a in addrs} | {addrs[0]: 8 * ETHER}
    assert_fair(draw(harness), weights, f"{n} nodes, one topped up to 8x", max_miss=0.05)


def test_startTask_shares_match_capped_stake(net, creator):
    """The same through TaskNetwork: six nodes, one staking 1 wei more (the audit's case,
    where the old fallback gave it 62%); each task starts, then its node aborts it (it is
    free again) so the next task sees the same six idle nodes."""
    specs = [kit.NodeSpec(kit.seeded_address("fair-start", i), "rtx4090", 24576, [MODEL],
                          ETHER + (1 if i == 0 else 0)) for i in range(6)]
    for s in specs:
        kit.join(net, s)
    picks = []
    for _ in range(100):
        key = kit.create_task(net, creator, models=(MODEL,))
        node = kit.task_view(net, key)["node"]
        assert kit.task_view(net, key)["state"] == kit.STARTED
        picks.append(node)
        with boa.env.prank(node):
            net.abortTask(key, "fairness test")
    assert_fair(picks, {s.addr: s.stake for s in specs}, "startTask, 6 nodes, one +1 wei")
