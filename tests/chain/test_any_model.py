"""Any-of tasks (issue 9): a task lists models as alternatives and runs on a node that serves
any one of them; said explicitly per task (`any_model`), next to the all-of tasks of the
first issue. Selection over the union of the models' arrays is exactly stake-proportional
(chi-square, as test_selection_fairness.py), the queue and takeQueuedTask honour the flag,
and the flag is part of what startTask checks."""

from __future__ import annotations

import boa
import chain_kit as kit
import pytest
from chain_kit import BUSY, ETHER, QUEUED, STARTED, b32
from test_selection_fairness import CAP_MULTIPLE, assert_fair, capped, harness_deployer, join_all  # noqa: F401

_seeds = iter(range(7 * 10**8, 9 * 10**8, 10**6))


@pytest.fixture
def harness(harness_deployer):  # noqa: F811
    with boa.swap_env(boa.Env()):
        h = harness_deployer.deploy(ETHER, CAP_MULTIPLE)
        boa.env.evm.patch.gas_limit = 2**40
        yield h


def draw_any(h, models, min_vram=0, gpu=None, exclude=(), count=600) -> list[str]:
    return h.draw_any(next(_seeds), count, [b32(m) for m in models], min_vram, b32(gpu), list(exclude), gas=2**39)


# ------------------------------------------------------------------ fairness (the rule itself)

def test_small_union_shares_match_capped_stake_without_favouring_nodes_serving_both(harness):
    """Nodes serving A, B or both (at most MAX_PROBES entries in all: the exhaustive pass): a
    node in both arrays counts once."""
    a = join_all(harness, [ETHER, 3 * ETHER], models=("A",), tag="a")
    b = join_all(harness, [2 * ETHER, ETHER + 1], models=("B",), tag="b")
    both = join_all(harness, [ETHER, 4 * ETHER], models=("A", "B"), tag="ab")
    join_all(harness, [10 * ETHER], models=("C",), tag="c")  # serves neither: never picked
    weights = dict(zip(a + b + both, [ETHER, 3 * ETHER, 2 * ETHER, ETHER + 1, ETHER, 4 * ETHER], strict=True))
    assert_fair(draw_any(harness, ["A", "B"]), weights, "any-of A|B, 6 nodes (2 in both arrays)")


def test_large_union_shares_match_capped_stake(harness):
    """More entries than MAX_PROBES: random probes over the concatenated arrays, accepted with
    weight / (mark * arrays the node is in); a draw may find nobody (queued), which biases
    nothing."""
    stakes = [(ETHER, 2 * ETHER, 5 * ETHER, 40 * ETHER)[i % 4] for i in range(8)]
    a = join_all(harness, stakes, models=("A",), tag="la")
    b = join_all(harness, stakes[::-1], models=("B",), tag="lb")
    both = join_all(harness, stakes[:6], models=("A", "B", "C"), tag="lab")
    weights = {x: capped(s) for x, s in zip(a + b + both, stakes + stakes[::-1] + stakes[:6], strict=True)}
    assert_fair(draw_any(harness, ["A", "B", "C"], count=800), weights, "any-of A|B|C, 22 nodes", max_miss=0.1)


def test_union_filters_busy_excluded_vram_and_gpu(harness):
    fit = join_all(harness, [ETHER, 2 * ETHER], gpu="h100", vram=81920, models=("A",), tag="fa")
    fit += join_all(harness, [3 * ETHER], gpu="h100", vram=81920, models=("B",), tag="fb")
    busy = join_all(harness, [10 * ETHER], gpu="h100", vram=81920, models=("A", "B"), tag="busy")
    harness.set_status(busy[0], BUSY)
    join_all(harness, [10 * ETHER], gpu="a100", vram=81920, models=("A",), tag="gpu")
    join_all(harness, [10 * ETHER], gpu="h100", vram=1024, models=("B",), tag="vram")
    excluded = join_all(harness, [10 * ETHER], gpu="h100", vram=81920, models=("B",), tag="x")
    picks = draw_any(harness, ["A", "B"], min_vram=81920, gpu="h100", exclude=excluded)
    assert_fair(picks, dict(zip(fit, [ETHER, 2 * ETHER, 3 * ETHER], strict=True)), "any-of with filters")


# ------------------------------------------------------------------ TaskNetwork

def create_any(net, creator, models, start=True, **kw):
    return kit.create_task(net, creator, models=models, any_model=True, start=start, **kw)


def test_any_of_task_runs_on_a_node_serving_only_one_listed_model(net, creator, make_node, task):
    n = make_node(models=("B",))
    all_of = kit.create_task(net, creator, models=["A", "B"])
    assert task(all_of)["state"] == QUEUED  # the first issue's rule: every model
    c = create_any(net, creator, ["A", "B"])
    assert task(c)["state"] == STARTED and kit.same(task(c)["node"], n.addr)


def test_task_created_says_any_model(net, creator):
    nonce = kit.fresh_nonce()
    c = kit.commitment_of(kit.keccak(b"t" + nonce), nonce)
    with boa.env.prank(creator):
        net.createTask(0, c, nonce, [b32("A"), b32("B")], 0, b32(None), b"\x22" * 32, 1, 60, True, value=10**15)
        (event,) = [e for e in net.get_logs() if type(e).__name__ == "TaskCreated"]
    assert event.any_model is True


def test_the_flag_is_part_of_the_requirements(net, creator, make_node):
    make_node(models=("A",))
    key = create_any(net, creator, ["A", "B"], start=False)
    kit.mine()
    with boa.env.prank(creator), kit.reverts("tasks: requirements differ from creation"):
        net.startTask(key, [b32("A"), b32("B")], 0, b32(None), [], False)


def test_queued_any_of_task_goes_to_a_node_serving_either_model(net, creator, make_node, task, node):
    c = create_any(net, creator, ["A", "B"])
    queued = [(e.key_model, e.commitment) for e in net.get_logs() if type(e).__name__ == "TaskQueued"]
    assert task(c)["state"] == QUEUED
    assert queued == [(b32("A"), c), (b32("B"), c)]  # every node serving one of them hears of it
    assert net.queuedCount() == 1
    make_node(models=("C",))  # serves neither: looks at the any-of queue, leaves it
    assert task(c)["state"] == QUEUED
    n = make_node(gpu="a100", models=("B",))  # joining takes it
    assert task(c)["state"] == STARTED and kit.same(task(c)["node"], n.addr)
    assert net.queuedCount() == 0 and node(n.addr)["status"] == BUSY


def test_take_queued_task_and_added_models_honour_any_of(net, creator, make_node, task, complete):
    """A busy node is freed (scoring) and takes the queued any-of task; a node that adds one
    of the listed models takes another at once."""
    n = make_node(models=("B",))
    first = kit.create_task(net, creator, models=["B"])
    c = create_any(net, creator, ["A", "B"], fee=10**15)
    c2 = create_any(net, creator, ["D", "E"], fee=10**15)
    assert task(c)["state"] == QUEUED and task(c2)["state"] == QUEUED
    complete(first)
    assert task(c)["state"] == STARTED and kit.same(task(c)["node"], n.addr)
    m = make_node(gpu="a100", models=("X",))
    with boa.env.prank(m.addr):
        assert net.takeQueuedTask() is False
        net.addModels([b32("E")])
    assert task(c2)["state"] == STARTED and kit.same(task(c2)["node"], m.addr)


def test_any_of_queue_expires_and_cancels_with_refunds(net, creator, make_node, task):
    c = create_any(net, creator, ["A"], timeout=10)
    c2 = create_any(net, creator, ["A"], timeout=600)
    with boa.env.prank(creator):
        net.cancelTask(c2)
    assert task(c2)["state"] == kit.ABORTED
    kit.mine(seconds=20)
    make_node(models=("A",))  # its scan comes across the expired task and ends it
    assert task(c)["state"] == kit.ABORTED and net.queuedCount() == 0
    assert net.balanceOf(creator) == 2 * (ETHER // 100)


def test_the_any_of_queue_key_is_no_model(net, creator, stranger):
    reserved = kit.keccak(b"gridtask: the any-of queue")
    with boa.env.prank(creator), kit.reverts("models: reserved model ID"):
        net.createTask(0, b"\x01" * 32, b"\x02" * 32, [reserved], 0, b32(None), b"\x22" * 32, 1, 60, False,
                       value=10**15)
    with boa.env.prank(stranger), kit.reverts("models: reserved model ID"):
        net.join(b32("cpu"), 0, [reserved], b"\x11" * 32, 1, value=ETHER)


def test_startTask_any_of_shares_match_capped_stake(net, creator):
    """Through TaskNetwork: A-only, B-only and A+B nodes; each task starts, then its node
    aborts it so the next sees the same idle nodes."""
    stakes = [ETHER, 3 * ETHER, 2 * ETHER, ETHER, 4 * ETHER]
    models = [["A"], ["A"], ["B"], ["A", "B"], ["B", "A"]]
    specs = [kit.NodeSpec(kit.seeded_address("any-start", i), "rtx4090", 24576, m, s)
             for i, (m, s) in enumerate(zip(models, stakes, strict=True))]
    for s in specs:
        kit.join(net, s)
    picks = []
    for _ in range(110):
        key = create_any(net, creator, ["A", "B"])
        t = kit.task_view(net, key)
        assert t["state"] == STARTED
        picks.append(t["node"])
        with boa.env.prank(t["node"]):
            net.abortTask(key, "fairness test")
    assert_fair(picks, {s.addr: s.stake for s in specs}, "startTask any-of, 5 nodes")
