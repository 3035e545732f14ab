"""A joined node adds and drops models (addModels / removeModels): selection, the queue and
the views follow at once, NodeModelsChanged says what changed, and bad requests revert with
their reason. The stateful test (test_invariants.py) checks arrays and money after random
sequences of joins, adds, removes and quits."""

from __future__ import annotations

import boa
import chain_kit as kit
import pytest
from chain_kit import BUSY, ETHER, IDLE, PAUSED, QUEUED, STARTED, b32


def models_of(net, addr) -> list[str]:
    return [kit.from_b32(m) for m in net.getNodeModels(addr)]


def changed(net) -> list[tuple[list[str], list[str]]]:
    return [([kit.from_b32(m) for m in e.added], [kit.from_b32(m) for m in e.removed])
            for e in net.get_logs() if type(e).__name__ == "NodeModelsChanged"]


def test_added_model_gets_tasks_and_the_event_says_so(net, make_node, make_task, task):
    n = make_node(models=("llama3-8b",))
    with boa.env.prank(n.addr):
        net.addModels([b32("src:abc"), b32("vm")])
        assert changed(net) == [(["src:abc", "vm"], [])]
    assert models_of(net, n.addr) == ["llama3-8b", "src:abc", "vm"]
    assert net.model_node_count(b32("vm")) == 1
    c = make_task(models=["vm", "llama3-8b"])
    assert task(c)["state"] == STARTED and kit.same(task(c)["node"], n.addr)


def test_idle_node_takes_queued_work_of_an_added_model_at_once(net, make_node, make_task, task, node):
    n = make_node(models=("llama3-8b",))
    c = make_task(models=["src:abc"])
    assert task(c)["state"] == QUEUED
    with boa.env.prank(n.addr):
        net.addModels([b32("src:abc")])
    assert task(c)["state"] == STARTED and kit.same(task(c)["node"], n.addr)
    assert node(n.addr)["status"] == BUSY


def test_busy_node_that_added_a_model_claims_its_queue_when_freed(net, make_node, make_task, task, complete):
    n = make_node(models=("llama3-8b",))
    first = make_task(models=["llama3-8b"])
    queued = make_task(models=["vm"])
    assert task(queued)["state"] == QUEUED
    with boa.env.prank(n.addr):
        net.addModels([b32("vm")])  # busy: nothing taken yet
    assert task(queued)["state"] == QUEUED
    complete(first)  # scoring frees the node: it takes the queued task of its new model
    assert task(queued)["state"] == STARTED and kit.same(task(queued)["node"], n.addr)


def test_paused_node_adds_a_model_and_resume_takes_its_queued_task(net, make_node, make_task, task):
    """A paused node stays out of the arrays while it adds a model; resume puts it in every
    array of its models and takes the queued task of the new one."""
    n = make_node(models=("llama3-8b",))
    with boa.env.prank(n.addr):
        net.pause()
        net.addModels([b32("vm")])
    assert net.model_node_count(b32("vm")) == 0
    c = make_task(models=["vm"])
    assert task(c)["state"] == QUEUED
    with boa.env.prank(n.addr):
        net.resume()
    assert net.model_node_count(b32("vm")) == 1
    assert task(c)["state"] == STARTED and kit.same(task(c)["node"], n.addr)


def test_removed_model_gets_no_more_tasks(net, make_node, make_task, task):
    n = make_node(models=("llama3-8b", "vm"))
    with boa.env.prank(n.addr):
        net.removeModels([b32("vm")])
        assert changed(net) == [([], ["vm"])]
    assert models_of(net, n.addr) == ["llama3-8b"]
    assert net.model_node_count(b32("vm")) == 0
    c = make_task(models=["vm"])
    assert task(c)["state"] == QUEUED
    with boa.env.prank(n.addr):
        assert net.takeQueuedTask() is False
    assert task(c)["state"] == QUEUED
    c2 = make_task(models=["llama3-8b"])
    assert kit.same(task(c2)["node"], n.addr)


def test_a_busy_node_keeps_its_task_when_it_drops_the_model(net, make_node, make_task, task, complete, node):
    n = make_node(models=("llama3-8b", "vm"))
    c = make_task(models=["vm"])
    with boa.env.prank(n.addr):
        net.removeModels([b32("vm")])
    assert task(c)["state"] == STARTED and node(n.addr)["status"] == BUSY
    complete(c)
    assert node(n.addr)["status"] == IDLE


@pytest.mark.parametrize("start, call, models, reason", [
    (("a",), "addModels", [], "models: empty model list"),
    (("a",), "addModels", ["b", "b"], "models: duplicate model"),
    (("a",), "addModels", ["b", ""], "models: empty model ID"),
    (("a",), "addModels", ["b", "a"], "nodes: model already served"),
    (tuple("abcdef"), "addModels", ["g", "h", "i"], "nodes: a node serves at most 8 models"),
    (("a", "b"), "removeModels", ["c"], "nodes: model not served"),
    (("a", "b"), "removeModels", ["a", "b"], "nodes: a node must keep at least one model"),
    (("a", "b"), "removeModels", ["a", "a"], "models: duplicate model"),
])
def test_bad_requests_revert(net, make_node, start, call, models, reason):
    n = make_node(models=start)
    with boa.env.prank(n.addr), kit.reverts(reason):
        getattr(net, call)([b32(m) if m else bytes(32) for m in models])
    assert models_of(net, n.addr) == list(start)


def test_strangers_and_leaving_nodes_are_refused(net, make_node, stranger):
    with boa.env.prank(stranger), kit.reverts("nodes: not a node"):
        net.addModels([b32("a")])
    n = make_node(models=("a", "b"))
    with boa.env.prank(n.addr):
        net.quit()
        with kit.reverts("nodes: node is leaving"):
            net.addModels([b32("c")])
        with kit.reverts("nodes: node is leaving"):
            net.removeModels([b32("a")])


def test_selection_over_a_changed_array_stays_stake_proportional(net, make_node, creator):
    """Two nodes: a (stake 1) served `m` from the start, b (stake 3) added it later and dropped
    and re-added it: b's entry is as good as a joiner's, so b gets ~3/4 of the tasks."""
    a = make_node(models=("m",), stake=ETHER)
    b = make_node(gpu="a100", models=("x",), stake=3 * ETHER)
    with boa.env.prank(b.addr):
        net.addModels([b32("m")])
        net.removeModels([b32("m")])
        net.addModels([b32("m")])
    wins = {a.addr.lower(): 0, b.addr.lower(): 0}
    for _ in range(200):
        c = kit.create_task(net, creator, models=["m"], fee=10**15)
        t = kit.task_view(net, c)
        wins[str(t["node"]).lower()] += 1
        with boa.env.prank(t["node"]):
            net.abortTask(c, "free")
    assert 0.65 < wins[b.addr.lower()] / 200 < 0.85, wins
    assert kit.node_view(net, a.addr)["status"] == IDLE and PAUSED != IDLE
