"""Node registry of TaskNetwork.vy: join/pause/resume/quit rules and reverts, stakes,
and weighted random selection."""

from __future__ import annotations

import boa
import chain_kit as kit
import pytest
from chain_kit import BUSY, ETHER, IDLE, PAUSED, QUEUED, STARTED, b32, same


def join_raw(net, who, *, gpu="rtx4090", vram=24576, models=("llama3-8b",), raw_models=None,
             public_key=b"\x11" * 32, version=1, stake=ETHER):
    ids = raw_models if raw_models is not None else [b32(m) for m in models]
    with boa.env.prank(who):
        net.join(b32(gpu), vram, ids, public_key, version, value=stake)


def call(net, who, fn, *args):
    with boa.env.prank(who):
        return getattr(net, fn)(*args)


# ---------------------------------------------------------------- join


def test_join_records_the_node(net, stranger, node):
    models = ("llama3-8b", "minilm-l6")
    join_raw(net, stranger, gpu="a100", vram=81920, models=models, public_key=b"\xab" * 32,
             version=7, stake=25 * ETHER)
    assert [type(e).__name__ for e in net.get_logs()] == ["NodeJoined"]
    v = node(stranger)
    assert v == dict(status=IDLE, stake=25 * ETHER, gpu=b32("a100"), vram=81920,
                     public_key=b"\xab" * 32, version=7)
    assert net.getNodeModels(stranger) == [b32(m) for m in models]
    assert net.model_node_count(b32("llama3-8b")) == 1
    assert net.model_node_count(b32("minilm-l6")) == 1
    assert net.model_node_count(b32("qwen2-7b")) == 0
    assert boa.env.get_balance(net.address) == 25 * ETHER


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        (dict(stake=ETHER - 1), "nodes: stake below minimum"),
        (dict(stake=0), "nodes: stake below minimum"),
        (dict(vram=2**32), "nodes: vram out of range"),
        (dict(public_key=b"\0" * 32), "nodes: public key required"),
        (dict(raw_models=[]), "models: empty model list"),
        (dict(models=[f"m{i}" for i in range(9)]), "models: too many models"),
        (dict(models=("a", "b", "a")), "models: duplicate model"),
        (dict(raw_models=[b"\0" * 32]), "models: empty model ID"),
    ],
    ids=["stake-low", "stake-zero", "vram-range", "no-key", "no-models", "9-models", "dup-models",
         "empty-model-id"],
)
def test_join_reverts(net, stranger, kwargs, reason):
    with kit.reverts(reason):
        join_raw(net, stranger, **kwargs)
    assert net.getNode(stranger)[0] == 0


def test_join_limits_accepted(net, stranger, node):
    join_raw(net, stranger, vram=2**32 - 1, models=[f"m{i}" for i in range(8)], stake=ETHER)
    assert node(stranger)["vram"] == 2**32 - 1 and len(net.getNodeModels(stranger)) == 8


def test_join_twice_refused(net, make_node):
    n = make_node()
    with kit.reverts("nodes: already joined"):
        join_raw(net, n.addr)
    call(net, n.addr, "pause")
    with kit.reverts("nodes: already joined"):
        join_raw(net, n.addr)


# ---------------------------------------------------------------- pause / resume


def test_pause_and_resume(net, make_node, make_task, node, task):
    n = make_node(models=("llama3-8b", "qwen2-7b"))
    call(net, n.addr, "pause")
    assert node(n.addr)["status"] == PAUSED
    assert net.model_node_count(b32("llama3-8b")) == 0 and net.model_node_count(b32("qwen2-7b")) == 0
    with kit.reverts("nodes: node is already paused"):
        call(net, n.addr, "pause")
    with kit.reverts("nodes: node is not idle"):
        call(net, n.addr, "takeQueuedTask")
    c = make_task(models=("qwen2-7b",))
    assert task(c)["state"] == QUEUED
    call(net, n.addr, "resume")  # takes the queued work at once
    assert task(c)["state"] == STARTED and same(task(c)["node"], n.addr)
    assert node(n.addr)["status"] == BUSY
    assert net.model_node_count(b32("llama3-8b")) == 1 and net.model_node_count(b32("qwen2-7b")) == 1
    with kit.reverts("nodes: node is not paused"):
        call(net, n.addr, "resume")


def test_pause_refused_when_not_a_node_and_resume_when_not_paused(net, stranger, make_node, make_task):
    n = make_node()
    make_task()
    with kit.reverts("nodes: not a node"):
        call(net, stranger, "pause")
    with kit.reverts("nodes: node is not paused"):
        call(net, stranger, "resume")
    with kit.reverts("nodes: node is not paused"):
        call(net, n.addr, "resume")
    with kit.reverts("nodes: node is not idle"):
        call(net, stranger, "takeQueuedTask")
    with kit.reverts("nodes: node is not idle"):
        call(net, n.addr, "takeQueuedTask")


def test_take_queued_task_when_nothing_waits(net, make_node):
    n = make_node()
    assert call(net, n.addr, "takeQueuedTask") is False


# ---------------------------------------------------------------- quit


@pytest.mark.parametrize("paused", [False, True])
def test_quit_returns_stake(net, make_node, node, paused):
    n = make_node(models=("llama3-8b", "phi3-mini"), stake=4 * ETHER)
    keep = make_node(models=("phi3-mini",))
    if paused:
        call(net, n.addr, "pause")
    call(net, n.addr, "quit")
    (quit_event,) = net.get_logs()
    release = boa.env.timestamp + kit.UNSTAKE_DELAY
    assert (type(quit_event).__name__, quit_event.stake, quit_event.release_at) == ("NodeQuit", 4 * ETHER, release)
    # out of selection at once, the stake still held (slashable) until the unstake delay
    assert node(n.addr)["status"] == kit.LEAVING and node(n.addr)["stake"] == 4 * ETHER
    assert net.release_at(n.addr) == release
    assert net.model_node_count(b32("llama3-8b")) == 0
    assert net.model_node_count(b32("phi3-mini")) == 1
    assert node(keep.addr)["status"] == IDLE
    with kit.reverts("nodes: node is already leaving"):
        call(net, n.addr, "quit")
    with kit.reverts("nodes: already joined"):
        join_raw(net, n.addr, models=("mistral-7b",), stake=2 * ETHER)
    boa.env.time_travel(seconds=kit.UNSTAKE_DELAY - 1)
    with kit.reverts("funds: nothing to withdraw"):  # one second early
        call(net, n.addr, "withdraw")
    boa.env.time_travel(seconds=1)
    before = boa.env.get_balance(n.addr)
    call(net, n.addr, "withdraw")
    assert boa.env.get_balance(n.addr) - before == 4 * ETHER
    assert boa.env.get_balance(net.address) == keep.stake
    assert node(n.addr)["status"] == 0 and node(n.addr)["stake"] == 0
    assert net.getNodeModels(n.addr) == []
    # may join again
    join_raw(net, n.addr, models=("mistral-7b",), stake=2 * ETHER)
    assert node(n.addr)["status"] == IDLE and node(n.addr)["stake"] == 2 * ETHER
    assert net.getNodeModels(n.addr) == [b32("mistral-7b")]


def test_a_busy_node_may_quit_and_finishes_its_task(net, stranger, make_node, make_task, complete,
                                                     node, task):
    """Nobody locks a node: quit works while busy; the task in hand goes on to its end."""
    n = make_node()
    c = make_task()
    waiting = make_task()
    with kit.reverts("nodes: not a node"):
        call(net, stranger, "quit")
    call(net, n.addr, "quit")
    assert node(n.addr)["status"] == kit.LEAVING and net.model_node_count(b32("llama3-8b")) == 0
    complete(c)  # still its node: it scores and is paid
    assert task(c)["state"] == kit.SUCCESS and net.balanceOf(n.addr) == task(c)["fee"]
    assert node(n.addr)["status"] == kit.LEAVING and task(waiting)["state"] == QUEUED  # takes no more
    boa.env.time_travel(seconds=kit.UNSTAKE_DELAY)
    before = boa.env.get_balance(n.addr)
    call(net, n.addr, "withdraw")
    assert boa.env.get_balance(n.addr) - before == n.stake + task(c)["fee"]
    with kit.reverts("nodes: not a node"):
        call(net, n.addr, "quit")


def test_quit_keeps_the_model_arrays_consistent(net, make_node, make_task, task):
    """Swap-and-pop: after nodes leave from the middle, every remaining node is still selectable."""
    nodes = [make_node(models=("llama3-8b",)) for _ in range(6)]
    for i in (0, 2, 5):
        call(net, nodes[i].addr, "quit")
    left = {nodes[i].addr.lower() for i in (1, 3, 4)}
    assert net.model_node_count(b32("llama3-8b")) == 3
    picked = set()
    for _ in range(3):
        c = make_task()
        assert task(c)["state"] == STARTED
        picked.add(task(c)["node"].lower())
    assert picked == left
    assert task(make_task())["state"] == QUEUED


# ---------------------------------------------------------------- selection


def test_paused_node_is_never_selected(net, creator, make_node, make_task, task):
    heavy = make_node(models=("llama3-8b",), stake=10 * ETHER)
    light = make_node(models=("llama3-8b",), stake=ETHER)
    call(net, heavy.addr, "pause")
    for _ in range(30):
        c = make_task()
        assert same(task(c)["node"], light.addr)
        with boa.env.prank(light.addr):
            net.reportTaskError(c, 0)
    call(net, light.addr, "pause")
    c = make_task()
    assert task(c)["state"] == QUEUED
    with kit.reverts("nodes: node is not idle"):
        call(net, heavy.addr, "takeQueuedTask")
    assert task(c)["state"] == QUEUED


def test_paused_nodes_never_selected_in_a_population(net, population, make_task, task):
    """Every task has an idle node that can run it, so each one starts, and never on a paused
    node; the same tasks with every node paused all queue."""
    specs = population(30, seed=3)
    paused = {s.addr.lower() for s in specs[::2]}
    for s in specs[::2]:
        call(net, s.addr, "pause")
    active = [s for s in specs if s.addr.lower() not in paused]
    models = sorted({m for s in active for m in s.models})
    assert len(models) >= 4
    picked = set()
    for i in range(40):
        c = make_task(models=(models[i % len(models)],))
        v = task(c)
        assert v["state"] == STARTED, (i, v)
        assert v["node"].lower() not in paused
        picked.add(v["node"].lower())
        with boa.env.prank(v["node"]):
            net.reportTaskError(c, 0)
    assert len(picked) >= 5
    for s in active:
        call(net, s.addr, "pause")
    for m in models:
        assert task(make_task(models=(m,)))["state"] == QUEUED


# ---------------------------------------------------------------- pause while busy


def test_busy_node_pauses_when_its_task_ends_and_takes_no_queued_work(
        net, creator, make_node, make_task, node, task, complete):
    n = make_node(models=("llama3-8b",))
    current = make_task(models=("llama3-8b",))
    waiting = make_task(models=("llama3-8b",))
    assert task(waiting)["state"] == QUEUED
    call(net, n.addr, "pause")
    assert [type(e).__name__ for e in net.get_logs()] == ["NodePauseRequested"]
    assert node(n.addr)["status"] == BUSY and net.pauseRequested(n.addr)
    with kit.reverts("nodes: pause already requested"):
        call(net, n.addr, "pause")
    complete(current)
    assert node(n.addr)["status"] == PAUSED and not net.pauseRequested(n.addr)
    assert task(waiting)["state"] == QUEUED  # not handed the queued task
    assert net.model_node_count(b32("llama3-8b")) == 0
    assert net.balanceOf(n.addr) == task(current)["fee"]
    call(net, n.addr, "quit")  # and now it leaves
    assert node(n.addr)["status"] == kit.LEAVING


@pytest.mark.parametrize("end", ["abort", "error"])
def test_node_that_asked_to_pause_is_not_handed_work_when_it_gives_up_a_task(
        net, creator, make_node, make_task, node, task, end):
    """The audit's case: a node that aborts is handed the next queued task in the same
    transaction, so it could never leave; once it asked to pause, it pauses instead."""
    n = make_node(models=("llama3-8b",))
    current = make_task(models=("llama3-8b",))
    waiting = [make_task(models=("llama3-8b",)) for _ in range(3)]
    call(net, n.addr, "pause")
    if end == "abort":
        with boa.env.prank(n.addr):
            net.abortTask(current, "leaving")
    else:
        call(net, n.addr, "reportTaskError", current, 2)
    ended = "TaskAborted" if end == "abort" else "TaskErrorReported"
    assert [type(e).__name__ for e in net.get_logs()] == [ended, "NodePaused"]  # no TaskStarted
    assert node(n.addr)["status"] == PAUSED
    assert all(task(c)["state"] == QUEUED for c in waiting)


def test_resume_withdraws_a_pause_request(net, make_node, make_task, node, task, complete):
    n = make_node(models=("llama3-8b",))
    current = make_task(models=("llama3-8b",))
    waiting = make_task(models=("llama3-8b",))
    call(net, n.addr, "pause")
    call(net, n.addr, "resume")
    assert node(n.addr)["status"] == BUSY and not net.pauseRequested(n.addr)
    complete(current)  # freed as usual: takes the queued task
    assert task(waiting)["state"] == STARTED and same(task(waiting)["node"], n.addr)


def _pick_counts(net, make_task, task, rounds, models=("llama3-8b",)):
    counts = {}
    for _ in range(rounds):
        c = make_task(models=models)
        v = task(c)
        assert v["state"] == STARTED
        counts[v["node"].lower()] = counts.get(v["node"].lower(), 0) + 1
        with boa.env.prank(v["node"]):
            net.reportTaskError(c, 0)
    return counts


def test_weighted_selection_two_nodes(net, make_node, make_task, task):
    light = make_node(models=("llama3-8b",), stake=ETHER)
    heavy = make_node(models=("llama3-8b",), stake=10 * ETHER)
    rounds = 200
    counts = _pick_counts(net, make_task, task, rounds)
    h, lt = counts.get(heavy.addr.lower(), 0), counts.get(light.addr.lower(), 0)
    print(f"\nweighted selection, 2 nodes: 10-ether {h}, 1-ether {lt} of {rounds}")
    assert h + lt == rounds
    assert h > 3 * lt
    assert h >= 0.7 * rounds


def test_weighted_selection_large_array(net, make_node, make_task, task):
    """More nodes than MAX_PROBES on the model: the random-probe path."""
    light = [make_node(models=("llama3-8b",), stake=ETHER) for _ in range(10)]
    heavy = [make_node(models=("llama3-8b",), stake=10 * ETHER) for _ in range(10)]
    rounds = 300
    counts = _pick_counts(net, make_task, task, rounds)
    h = sum(counts.get(n.addr.lower(), 0) for n in heavy)
    lt = sum(counts.get(n.addr.lower(), 0) for n in light)
    print(f"\nweighted selection, 20 nodes: 10-ether nodes {h}, 1-ether nodes {lt} of {rounds}")
    assert h + lt == rounds
    assert h > 3 * lt


def test_stake_above_cap_adds_no_weight(net, make_node, make_task, task):
    capped = make_node(models=("llama3-8b",), stake=10 * ETHER)
    over = make_node(models=("llama3-8b",), stake=100 * ETHER)
    counts = _pick_counts(net, make_task, task, 200)
    a, b = counts.get(capped.addr.lower(), 0), counts.get(over.addr.lower(), 0)
    print(f"\ncap: 10-ether {a}, 100-ether {b}")
    assert a + b == 200 and 0.3 * 200 < a < 0.7 * 200
