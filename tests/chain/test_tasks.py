"""Task lifecycle of TaskNetwork.vy: creation reverts, the happy path, errors, aborts,
cancels, withdrawals, matching rules, the queue, and every transition tried by the wrong party."""

from __future__ import annotations

import boa
import chain_kit as kit
import pytest
from chain_kit import (
    ABORTED,
    BUSY,
    CREATED,
    ERRORED,
    ETHER,
    IDLE,
    QUEUED,
    SCORE_READY,
    STARTED,
    SUCCESS,
    VALIDATED,
    ZERO_ADDRESS,
    b32,
    same,
)

SCORE = b"\x5c" * 32
RESULT = b"\x7e" * 32


def submit(net, node, c, score=SCORE, result=RESULT):
    with boa.env.prank(node):
        net.submitScore(c, score, result)


def validate(net, who, c):
    kit.validate(net, c, who)


def uploaded(net, who, c):
    with boa.env.prank(who):
        net.reportResultUploaded(c)


def abort(net, who, c, reason="local failure"):
    with boa.env.prank(who):
        net.abortTask(c, reason)


# ---------------------------------------------------------------- createTask reverts


def _create_raw(net, creator, *, fee=10**15, nonce=None, commitment=None, models=("llama3-8b",),
                size=1, timeout=60, raw_models=None, task_type=0, start=True):
    """createTask with raw inputs, then (start=True) startTask one block later."""
    nonce = nonce or kit.fresh_nonce()
    commitment = commitment or kit.commitment_of(b"t" * 32, nonce)
    ids = raw_models if raw_models is not None else [b32(m) for m in models]
    with boa.env.prank(creator):
        net.createTask(task_type, commitment, nonce, ids, 0, b32(None), b"\x01" * 32, size, timeout,
                       False, value=fee)
    key = kit.key_of(creator, commitment)
    if start:
        kit.mine()
        kit.start_task(net, creator, key, models)
    return key


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        (dict(fee=0), "tasks: zero fee"),
        (dict(raw_models=[]), "models: empty model list"),
        (dict(models=("a", "b", "a")), "models: duplicate model"),
        (dict(models=("a", "b", "c", "d", "e")), "models: too many models"),
        (dict(raw_models=[b32("a"), b"\0" * 32]), "models: empty model ID"),
        (dict(timeout=kit.MIN_TIMEOUT - 1), "tasks: timeout out of bounds"),
        (dict(timeout=kit.MAX_TIMEOUT + 1), "tasks: timeout out of bounds"),
        (dict(timeout=0), "tasks: timeout out of bounds"),
        (dict(size=0), "tasks: task size must be at least 1"),
    ],
    ids=["zero-fee", "empty-models", "dup-models", "5-models", "empty-model-id", "timeout-low",
         "timeout-high", "timeout-zero", "size-zero"],
)
def test_create_task_reverts(net, creator, kwargs, reason):
    with kit.reverts(reason):
        _create_raw(net, creator, **kwargs)
    assert boa.env.get_balance(net.address) == 0


def test_create_task_empty_commitment_refused(net, creator):
    """Zero is the queue's "no task" marker: a task named zero would corrupt its lists."""
    with kit.reverts("tasks: empty commitment"):
        _create_raw(net, creator, commitment=b"\x00" * 32)


def test_create_task_nonce_used_before(net, creator, other_creator):
    nonce = kit.fresh_nonce()
    _create_raw(net, creator, nonce=nonce)
    assert net.nonce_used(creator, nonce) and not net.nonce_used(other_creator, nonce)
    # the same creator, the same nonce, another commitment: refused
    with kit.reverts("tasks: nonce already used"):
        _create_raw(net, creator, nonce=nonce, commitment=b"\x33" * 32)


def test_create_task_commitment_exists(net, creator):
    commitment = b"\x44" * 32
    _create_raw(net, creator, commitment=commitment)
    with kit.reverts("tasks: commitment exists"):
        _create_raw(net, creator, commitment=commitment)  # fresh nonce, same commitment


def test_task_key_binds_the_commitment_to_its_creator(net, creator, task):
    """The key on chain is keccak(creator ‖ commitment), packed, as gridtask.crypto computes it."""
    commitment = b"\x45" * 32
    key = _create_raw(net, creator, commitment=commitment, start=False)
    (created,) = net.get_logs()
    kit.mine()
    kit.start_task(net, creator, key)
    (queued,) = net.get_logs()
    assert created.commitment == key and queued.commitment == key
    packed = kit.keccak(bytes.fromhex(str(creator)[2:]) + commitment)
    assert key == packed and task(key)["state"] == QUEUED and same(task(key)["creator"], creator)
    assert task(commitment)["creator"] == ZERO_ADDRESS  # the bare commitment names no task


@pytest.mark.parametrize("copied", ["commitment", "nonce", "both"])
def test_copying_a_pending_creation_does_not_make_it_revert(net, creator, stranger, task, copied):
    """A front-runner who sees the creator's createTask in the mempool sends its commitment
    and/or nonce first: the creator's transaction still goes through, and the two tasks are
    separate (own key, own creator, own fee, own queue entry)."""
    nonce, commitment = kit.fresh_nonce(), b"\x46" * 32
    theirs = _create_raw(net, stranger, fee=7,
                         nonce=nonce if copied != "commitment" else None,
                         commitment=commitment if copied != "nonce" else None)
    mine = _create_raw(net, creator, fee=10**15, nonce=nonce, commitment=commitment)
    assert mine != theirs
    assert mine == kit.key_of(creator, commitment)
    assert (task(mine)["fee"], task(theirs)["fee"]) == (10**15, 7)
    assert same(task(mine)["creator"], creator) and same(task(theirs)["creator"], stranger)
    assert net.queuedCount() == 2
    with boa.env.prank(creator):
        net.cancelTask(mine)
    assert task(mine)["state"] == ABORTED and task(theirs)["state"] == QUEUED
    assert net.balanceOf(creator) == 10**15 and net.balanceOf(stranger) == 0


def test_create_task_bounds_accepted(net, creator, task):
    for timeout in (kit.MIN_TIMEOUT, kit.MAX_TIMEOUT):
        c = _create_raw(net, creator, timeout=timeout, models=("a", "b", "c", "d"))
        assert task(c)["state"] == QUEUED and task(c)["timeout"] == timeout


def test_create_task_over_long_input_reverts(net, creator):
    # more than the 16 IDs the ABI decoder accepts: a bare revert, never a task
    with kit.reverts():
        _create_raw(net, creator, models=[f"m{i}" for i in range(17)])


# ---------------------------------------------------------------- happy path


def test_happy_path_started_at_once(net, creator, relay, make_node, make_task, task, node):
    n = make_node(models=("llama3-8b", "minilm-l6"))
    fee = 3 * 10**16
    t0 = boa.env.timestamp
    c = make_task(models=("minilm-l6",), fee=fee, timeout=100)
    events = [type(e).__name__ for e in net.get_logs()]
    assert events == ["TaskStarted"]  # startTask's; TaskCreated came a block before
    assert boa.env.get_balance(net.address) == fee + n.stake
    v = task(c)
    assert v["state"] == STARTED and same(v["node"], n.addr) and same(v["creator"], creator)
    assert v["fee"] == fee and v["deadline"] == t0 + 100 and v["timeout"] == 100
    assert node(n.addr)["status"] == BUSY

    boa.env.time_travel(seconds=30)
    submit(net, n.addr, c)
    v = task(c)
    assert v["state"] == SCORE_READY and v["score"] == SCORE and v["result_hash"] == RESULT
    assert v["deadline"] == boa.env.timestamp + kit.VALIDATION_WINDOW  # not the task's timeout

    validate(net, creator, c)
    assert task(c)["state"] == VALIDATED
    assert net.balanceOf(n.addr) == 0

    assert task(c)["deadline"] == boa.env.timestamp + 100

    uploaded(net, relay, c)
    v = task(c)
    # paid at delivery; the deadline of a delivered task ends its challenge window
    assert v["state"] == SUCCESS and v["deadline"] == boa.env.timestamp + kit.CHALLENGE_WINDOW
    assert net.balanceOf(n.addr) == fee
    assert net.balanceOf(creator) == 0
    assert node(n.addr)["status"] == IDLE
    # the node is selectable again
    c2 = make_task(models=("llama3-8b",))
    assert same(task(c2)["node"], n.addr)


def test_happy_path_from_queue(net, creator, relay, make_node, make_task, task, complete):
    c = make_task(models=("qwen2-7b",))
    assert task(c)["state"] == QUEUED and same(task(c)["node"], ZERO_ADDRESS)
    assert net.queuedCount() == 1
    n = make_node(models=("qwen2-7b",))
    assert task(c)["state"] == STARTED and same(task(c)["node"], n.addr)
    assert net.queuedCount() == 0
    complete(c)
    assert task(c)["state"] == SUCCESS and net.balanceOf(n.addr) == task(c)["fee"]


# ---------------------------------------------------------------- task error


def test_report_task_error_refunds(net, creator, make_node, make_task, task, node):
    n = make_node()
    other = make_node()
    c = make_task(fee=777)
    runner = n.addr if same(task(c)["node"], n.addr) else other.addr
    idle = other.addr if runner == n.addr else n.addr
    with boa.env.prank(idle), kit.reverts("tasks: only the task's node may do this"):
        net.reportTaskError(c, 3)
    with boa.env.prank(creator), kit.reverts("tasks: only the task's node may do this"):
        net.reportTaskError(c, 3)
    with boa.env.prank(runner):
        net.reportTaskError(c, 3)
    assert task(c)["state"] == ERRORED
    assert net.balanceOf(creator) == 777 and net.balanceOf(runner) == 0
    assert node(runner)["status"] == IDLE
    with boa.env.prank(runner), kit.reverts("tasks: task not started"):
        net.reportTaskError(c, 3)


def test_report_task_error_only_when_started(net, make_node, make_task):
    n = make_node()
    c = make_task()
    submit(net, n.addr, c)
    with boa.env.prank(n.addr), kit.reverts("tasks: task not started"):
        net.reportTaskError(c, 1)


# ---------------------------------------------------------------- abort rules


def test_node_aborts_before_scoring(net, creator, make_node, make_task, task, node):
    n = make_node()
    c = make_task(fee=500)
    abort(net, n.addr, c, "out of memory")
    aborted = [e for e in net.get_logs() if type(e).__name__ == "TaskAborted"]
    assert len(aborted) == 1 and aborted[0].reason == "out of memory"
    assert task(c)["state"] == ABORTED
    assert net.balanceOf(creator) == 500 and node(n.addr)["status"] == IDLE


def test_nobody_aborts_a_scored_task(net, creator, make_node, make_task, task):
    """A scored task is validated, or its node claims the fee after the validation window:
    a creator who could abort it past the window would lock the node for a refund."""
    n = make_node()
    c = make_task(timeout=50)
    submit(net, n.addr, c)
    boa.env.time_travel(seconds=kit.VALIDATION_WINDOW + 1000)
    for who in (n.addr, creator):
        with kit.reverts("tasks: scored: validate it, or its node claims it later"):
            abort(net, who, c)
    assert task(c)["state"] == SCORE_READY


def test_node_may_not_abort_validated_before_deadline(net, creator, make_node, make_task, task):
    n = make_node()
    c = make_task(timeout=50)
    submit(net, n.addr, c)
    validate(net, creator, c)
    with kit.reverts("tasks: scored: wait for deadline"):
        abort(net, n.addr, c)
    boa.env.time_travel(seconds=51)
    abort(net, n.addr, c)
    assert task(c)["state"] == ABORTED and net.balanceOf(creator) == task(c)["fee"]


@pytest.mark.parametrize("stage", [STARTED, VALIDATED], ids=["started", "validated"])
def test_creator_aborts_only_after_deadline_and_the_late_node_is_paused(
        net, creator, make_node, make_task, task, node, stage):
    """The node's own stages: a task aborted past their deadline pauses the node (it loses
    its turn), so sitting on a task is not free."""
    n = make_node()
    c = make_task(fee=900, timeout=20)
    if stage == VALIDATED:
        submit(net, n.addr, c)
        validate(net, creator, c)
    boa.env.time_travel(seconds=20)
    with kit.reverts("tasks: deadline not passed"):
        abort(net, creator, c)
    boa.env.time_travel(seconds=1)
    abort(net, creator, c, "too slow")
    assert [type(e).__name__ for e in net.get_logs()] == ["TaskAborted", "NodePaused"]
    assert task(c)["state"] == ABORTED
    assert net.balanceOf(creator) == 900 and net.balanceOf(n.addr) == 0
    assert node(n.addr)["status"] == kit.PAUSED
    with boa.env.prank(n.addr):  # it comes back by itself
        net.resume()
    assert node(n.addr)["status"] == IDLE


def test_a_node_that_aborts_in_time_is_not_paused(net, creator, make_node, make_task, task, node):
    n = make_node()
    c = make_task(timeout=20)
    boa.env.time_travel(seconds=20)  # at the deadline: still in time
    abort(net, n.addr, c, "parameters never came")
    assert task(c)["state"] == ABORTED and node(n.addr)["status"] == IDLE


def test_a_node_that_aborts_late_pauses_itself(net, creator, make_node, make_task, task, node):
    n = make_node()
    c = make_task(timeout=20)
    boa.env.time_travel(seconds=21)
    abort(net, n.addr, c, "late")
    assert task(c)["state"] == ABORTED and node(n.addr)["status"] == kit.PAUSED


def test_stranger_may_not_abort(net, stranger, other_creator, make_node, make_task):
    n = make_node()
    other = make_node()
    c = make_task(timeout=10)
    boa.env.time_travel(seconds=100)
    idle = other.addr if same(kit.task_view(net, c)["node"], n.addr) else n.addr
    for who in (stranger, other_creator, idle):
        with kit.reverts("tasks: only the creator or the task's node may abort"):
            abort(net, who, c)


def test_abort_ended_or_unknown(net, creator, relay, make_node, make_task, complete):
    make_node()
    c = make_task()
    complete(c)
    boa.env.time_travel(seconds=1000)
    with kit.reverts("tasks: task already ended"):
        abort(net, creator, c)
    with kit.reverts("tasks: unknown task"):
        abort(net, creator, b"\x99" * 32)


# ---------------------------------------------------------------- cancel


def test_cancel_while_queued(net, creator, stranger, make_task, task, make_node):
    c = make_task(models=("phi3-mini",), fee=1234)
    with boa.env.prank(stranger), kit.reverts("tasks: only the creator may cancel"):
        net.cancelTask(c)
    with boa.env.prank(creator):
        net.cancelTask(c)
    assert task(c)["state"] == ABORTED and net.balanceOf(creator) == 1234
    assert net.queuedCount() == 0
    with boa.env.prank(creator), kit.reverts("tasks: task not queued"):
        net.cancelTask(c)
    # a node serving the model now joins: the cancelled task is not started
    n = make_node(models=("phi3-mini",))
    assert task(c)["state"] == ABORTED and kit.node_view(net, n.addr)["status"] == IDLE


def test_cancel_refused_after_start(net, creator, make_node, make_task):
    make_node()
    c = make_task()
    with boa.env.prank(creator), kit.reverts("tasks: task not queued"):
        net.cancelTask(c)
    with boa.env.prank(creator), kit.reverts("tasks: unknown task"):
        net.cancelTask(b"\x42" * 32)


# ---------------------------------------------------------------- withdraw


def test_withdraw_pulls_exact_amounts(net, creator, relay, make_node, make_task, complete):
    n = make_node(stake=3 * ETHER)
    fees = [10**15, 2 * 10**16, 7]
    for fee in fees:
        complete(make_task(fee=fee))
    c = make_task(fee=5 * 10**15)
    with boa.env.prank(n.addr):
        net.reportTaskError(c, 1)
    with boa.env.prank(n.addr):
        net.quit()
    assert net.balanceOf(n.addr) == sum(fees)  # the stake is released after the unstake delay
    boa.env.time_travel(seconds=kit.UNSTAKE_DELAY)
    assert net.balanceOf(creator) == 5 * 10**15
    held = boa.env.get_balance(net.address)
    assert held == sum(fees) + 3 * ETHER + 5 * 10**15

    for who, amount in ((n.addr, sum(fees) + 3 * ETHER), (creator, 5 * 10**15)):
        before = boa.env.get_balance(who)
        with boa.env.prank(who):
            net.withdraw()
        assert boa.env.get_balance(who) - before == amount
        assert net.balanceOf(who) == 0
        with boa.env.prank(who), kit.reverts("funds: nothing to withdraw"):
            net.withdraw()
    assert boa.env.get_balance(net.address) == 0


# ---------------------------------------------------------------- matching


def test_cpu_node_never_gets_gpu_tasks(net, creator, make_node, make_task, task):
    cpu = make_node(gpu="cpu", vram=0, models=("minilm-l6",))
    c1 = make_task(models=("minilm-l6",), min_vram=1)
    c2 = make_task(models=("minilm-l6",), gpu="rtx4090")
    c3 = make_task(models=("minilm-l6",), min_vram=8192, gpu="a100")
    for c in (c1, c2, c3):
        assert task(c)["state"] == QUEUED
    with boa.env.prank(cpu.addr):
        assert net.takeQueuedTask() is False
    assert kit.node_view(net, cpu.addr)["status"] == IDLE
    # a CPU task goes to the CPU node, even with the GPU tasks waiting
    c4 = make_task(models=("minilm-l6",))
    assert same(task(c4)["node"], cpu.addr)
    # a matching GPU node takes the GPU tasks it can run
    gpu = make_node(gpu="rtx4090", vram=24576, models=("minilm-l6",))
    started = [c for c in (c1, c2, c3) if task(c)["state"] == STARTED]
    assert len(started) == 1 and started[0] in (c1, c2)
    assert same(task(started[0])["node"], gpu.addr)
    assert task(c3)["state"] == QUEUED  # a100 required


def test_selection_respects_requirements_on_mixed_population(net, creator, population, make_task, task, relay):
    specs = {s.addr.lower(): s for s in population(40, seed=7)}
    import random

    rng = random.Random(11)
    seen = 0
    for _i in range(60):
        models = rng.sample(kit.MODEL_POOL, rng.randint(1, 2))
        min_vram = rng.choice([0, 0, 1, 8192, 24576, 81920])
        gpu = rng.choice([None, None, None, "rtx4090", "a100", "h100", "cpu"])
        c = make_task(models=models, min_vram=min_vram, gpu=gpu)
        v = task(c)
        if v["state"] == STARTED:
            seen += 1
            s = specs[v["node"].lower()]
            assert s.matches(models, min_vram, gpu), (s, models, min_vram, gpu)
            if min_vram > 0 or (gpu and gpu != "cpu"):
                assert s.gpu != "cpu"
            with boa.env.prank(s.addr):
                net.reportTaskError(c, 0)
        else:
            assert v["state"] == QUEUED
            with boa.env.prank(creator):
                net.cancelTask(c)
    assert seen > 20


def test_unserved_model_queued_then_started_on_join(net, creator, make_node, make_task, task):
    c = make_task(models=("sdxl-turbo", "llama3-8b"), min_vram=8192)
    assert [type(e).__name__ for e in net.get_logs()] == ["TaskQueued"]
    assert task(c)["state"] == QUEUED
    make_node(gpu="cpu", vram=0, models=("sdxl-turbo", "llama3-8b"))  # too little VRAM
    make_node(gpu="a100", vram=81920, models=("sdxl-turbo",))  # lacks a model
    assert task(c)["state"] == QUEUED
    n = make_node(gpu="rtx3070", vram=8192, models=("mistral-7b", "llama3-8b", "sdxl-turbo"))
    assert task(c)["state"] == STARTED and same(task(c)["node"], n.addr)
    assert net.queuedCount() == 0


def test_freed_node_takes_best_paying_task(net, creator, make_node, make_task, task, complete):
    n = make_node(models=("llama3-8b", "qwen2-7b"))
    busy = make_task(models=("llama3-8b",))
    assert same(task(busy)["node"], n.addr)
    # fee per unit: low 2^40, best 2^52 (on the other model), middle 2^48 (big fee, big size)
    low = make_task(models=("llama3-8b",), fee=2**40)
    mid = make_task(models=("llama3-8b",), fee=2**48 * 64, size=64)
    best = make_task(models=("qwen2-7b",), fee=2**52 * 3, size=3)
    other = make_task(models=("llama3-8b",), fee=2**60, min_vram=10**6)  # pays most, cannot run
    assert all(task(c)["state"] == QUEUED for c in (low, mid, best, other))
    complete(busy)
    assert task(best)["state"] == STARTED and same(task(best)["node"], n.addr)
    complete(best)
    assert task(mid)["state"] == STARTED
    complete(mid)
    assert task(low)["state"] == STARTED
    assert task(other)["state"] == QUEUED


def test_expired_queued_task_can_be_aborted_by_its_creator(net, creator, make_task, task):
    old = make_task(models=("llama3-8b",), fee=2**60, timeout=10)
    with kit.reverts("tasks: deadline not passed"):
        abort(net, creator, old)
    boa.env.time_travel(seconds=10)  # at the deadline: not late yet
    with kit.reverts("tasks: deadline not passed"):
        abort(net, creator, old)
    boa.env.time_travel(seconds=1)
    abort(net, creator, old, "expired in queue")
    assert task(old)["state"] == ABORTED and net.balanceOf(creator) == 2**60
    assert net.queuedCount() == 0


def test_expired_queued_task_is_skipped_by_the_dequeue(net, creator, make_node, make_task, task, complete):
    n = make_node(models=("llama3-8b",))
    busy = make_task(models=("llama3-8b",), timeout=3600)
    old = make_task(models=("llama3-8b",), fee=2**60, timeout=10)  # pays best, expires first
    boa.env.time_travel(seconds=11)
    fresh = make_task(models=("llama3-8b",), fee=2**30, timeout=60)
    assert net.queuedCount() == 2
    complete(busy)
    assert task(fresh)["state"] == STARTED and same(task(fresh)["node"], n.addr)
    # the dequeue does not start the expired task; it ends it and refunds its creator
    assert task(old)["state"] == ABORTED and net.balanceOf(creator) == 2**60
    assert net.queuedCount() == 0
    with kit.reverts("tasks: task already ended"):
        abort(net, creator, old)
    complete(fresh)
    with boa.env.prank(n.addr):
        assert net.takeQueuedTask() is False


def test_expired_queued_tasks_do_not_hide_later_ones(net, creator, make_node, make_task, task, complete):
    n = make_node(models=("llama3-8b",))
    busy = make_task(models=("llama3-8b",), timeout=3600)
    expired = [make_task(models=("llama3-8b",), fee=2**60, timeout=5) for _ in range(6)]
    boa.env.time_travel(seconds=6)
    victim = make_task(models=("llama3-8b",), fee=2**20, timeout=600)
    complete(busy)
    for _ in range(3):  # the daemon polls again while tasks wait
        if task(victim)["state"] == STARTED:
            break
        with boa.env.prank(n.addr):
            net.takeQueuedTask()
    assert task(victim)["state"] == STARTED and same(task(victim)["node"], n.addr)
    assert all(task(c)["state"] == ABORTED for c in expired)
    assert net.balanceOf(creator) == 6 * 2**60


def test_unrunnable_tasks_in_the_same_bucket_only_delay(net, creator, make_node, make_task, task, complete):
    """Tasks the node cannot run move to the tail of their bucket: a runnable one behind
    them in the same bucket is reached at the next look."""
    n = make_node(gpu="cpu", vram=0, models=("llama3-8b",))
    busy = make_task(models=("llama3-8b",))
    blockers = [make_task(models=("llama3-8b",), fee=2**50, gpu="tpu-v9") for _ in range(4)]
    victim = make_task(models=("llama3-8b",), fee=2**50 + 1)  # same bucket, queued last
    complete(busy)
    for _ in range(3):
        if task(victim)["state"] == STARTED:
            break
        with boa.env.prank(n.addr):
            net.takeQueuedTask()
    assert task(victim)["state"] == STARTED
    assert all(task(c)["state"] == QUEUED for c in blockers)


# ---------------------------------------------------------------- wrong parties


@pytest.fixture
def two_nodes_one_task(net, make_node, make_task, task):
    a = make_node(models=("llama3-8b",))
    b = make_node(models=("llama3-8b", "mistral-7b"))
    c = make_task(models=("llama3-8b",))
    runner = a.addr if same(task(c)["node"], a.addr) else b.addr
    other = b.addr if runner == a.addr else a.addr
    return c, runner, other


def test_other_node_may_not_submit_score(net, two_nodes_one_task, task):
    c, runner, other = two_nodes_one_task
    with boa.env.prank(other), kit.reverts("tasks: only the task's node may do this"):
        net.submitScore(c, SCORE, RESULT)
    assert task(c)["state"] == STARTED


def test_node_may_not_score_another_nodes_task(net, make_node, make_task, task):
    a = make_node(models=("llama3-8b",))
    ca = make_task(models=("llama3-8b",))
    b = make_node(models=("mistral-7b",))
    cb = make_task(models=("mistral-7b",))
    assert same(task(ca)["node"], a.addr) and same(task(cb)["node"], b.addr)
    with boa.env.prank(b.addr), kit.reverts("tasks: only the task's node may do this"):
        net.submitScore(ca, SCORE, RESULT)
    with boa.env.prank(a.addr), kit.reverts("tasks: only the task's node may do this"):
        net.submitScore(cb, SCORE, RESULT)


def test_stranger_and_creator_may_not_submit_score(net, creator, stranger, two_nodes_one_task):
    c, _, _ = two_nodes_one_task
    for who in (creator, stranger):
        with boa.env.prank(who), kit.reverts("tasks: only the task's node may do this"):
            net.submitScore(c, SCORE, RESULT)


def test_non_creator_may_not_validate(net, creator, other_creator, relay, two_nodes_one_task, task):
    c, runner, other = two_nodes_one_task
    submit(net, runner, c)
    for who in (runner, other, other_creator, relay):
        with boa.env.prank(who), kit.reverts("tasks: only the creator may validate"):
            net.validateSingleTask(c, *kit.opening(c))
    assert task(c)["state"] == SCORE_READY


def test_non_relay_may_not_report_delivery(net, creator, stranger, relay, two_nodes_one_task, task):
    c, runner, _ = two_nodes_one_task
    submit(net, runner, c)
    validate(net, creator, c)
    for who in (runner, creator, stranger):
        with boa.env.prank(who), kit.reverts("tasks: only the relay may report delivery"):
            net.reportResultUploaded(c)
    assert task(c)["state"] == VALIDATED and net.balanceOf(runner) == 0


def test_transitions_out_of_order(net, creator, relay, two_nodes_one_task, task):
    c, runner, _ = two_nodes_one_task
    with boa.env.prank(creator), kit.reverts("tasks: score not ready"):
        net.validateSingleTask(c, *kit.opening(c))
    with boa.env.prank(relay), kit.reverts("tasks: task not validated"):
        net.reportResultUploaded(c)
    submit(net, runner, c)
    with boa.env.prank(runner), kit.reverts("tasks: task not started"):
        net.submitScore(c, SCORE, RESULT)
    with boa.env.prank(relay), kit.reverts("tasks: task not validated"):
        net.reportResultUploaded(c)
    validate(net, creator, c)
    with boa.env.prank(creator), kit.reverts("tasks: score not ready"):
        net.validateSingleTask(c, *kit.opening(c))
    uploaded(net, relay, c)
    with boa.env.prank(relay), kit.reverts("tasks: task not validated"):
        net.reportResultUploaded(c)
    assert task(c)["state"] == SUCCESS


def test_unknown_task_reverts(net, creator, relay, make_node):
    n = make_node()
    ghost = b"\x13" * 32
    with boa.env.prank(n.addr), kit.reverts("tasks: unknown task"):
        net.submitScore(ghost, SCORE, RESULT)
    with boa.env.prank(n.addr), kit.reverts("tasks: unknown task"):
        net.reportTaskError(ghost, 1)
    with boa.env.prank(creator), kit.reverts("tasks: unknown task"):
        net.validateSingleTask(ghost, kit.EMPTY32, kit.EMPTY32)
    with boa.env.prank(relay), kit.reverts("tasks: unknown task"):
        net.reportResultUploaded(ghost)


# ---------------------------------------------------------------- the queue hides no runnable task


def test_runnable_task_not_stranded_behind_unrunnable_ones(net, creator, make_node, make_task, task, complete):
    n = make_node(gpu="cpu", vram=0, models=("llama3-8b",))
    busy = make_task(models=("llama3-8b",))
    # two better-paying tasks on the same model that no node can run (an unknown GPU)
    for _ in range(2):
        make_task(models=("llama3-8b",), fee=2**60, gpu="tpu-v9")
    victim = make_task(models=("llama3-8b",), fee=2**20)
    complete(busy)  # frees the node: it should take the victim
    for _ in range(5):  # however often the daemon polls
        if task(victim)["state"] == STARTED:
            break
        with boa.env.prank(n.addr):
            net.takeQueuedTask()
    assert task(victim)["state"] == STARTED


def test_one_unrunnable_task_does_not_hide_a_lower_bucket(net, creator, make_node, make_task, task, complete):
    n = make_node(gpu="cpu", vram=0, models=("llama3-8b",))
    busy = make_task(models=("llama3-8b",))
    make_task(models=("llama3-8b",), fee=2**60, gpu="tpu-v9")
    victim = make_task(models=("llama3-8b",), fee=2**20)
    complete(busy)
    assert task(victim)["state"] == STARTED and same(task(victim)["node"], n.addr)


@pytest.mark.parametrize("blockers", [kit.QUEUE_SCAN, 3 * kit.QUEUE_SCAN + 1])
def test_unrunnable_tasks_in_a_higher_bucket_do_not_starve_a_lower_one(
        net, creator, make_node, make_task, task, complete, blockers):
    """The audit's starvation: tasks nobody can run (an H100 floor no node has) fill a
    better-paying bucket; a runnable task in a lower bucket is still reached by an idle
    matching node within the polls the queue's sweep needs, and the blockers stay queued."""
    n = make_node(gpu="rtx4090", vram=24576, models=("llama3-8b",))
    busy = make_task(models=("llama3-8b",))
    blocking = [make_task(models=("llama3-8b",), fee=2**52, gpu="h100", min_vram=81920)
                for _ in range(blockers)]
    victim = make_task(models=("llama3-8b",), fee=2**30)
    complete(busy)  # the freed node's own look is the first poll
    polls = 1
    # each look sees the first QUEUE_SCAN tasks, and SWEEP_SCAN more from the sweep cursor
    bound = max(1, -(-(blockers + 1 - kit.QUEUE_SCAN) // kit.SWEEP_SCAN))
    while task(victim)["state"] == QUEUED and polls < 50:
        with boa.env.prank(n.addr):
            net.takeQueuedTask()
        polls += 1
    assert task(victim)["state"] == STARTED and same(task(victim)["node"], n.addr)
    assert polls <= bound, (polls, bound)
    assert all(task(c)["state"] == QUEUED for c in blocking)


def test_the_sweep_keeps_its_place_when_the_task_at_its_cursor_leaves(
        net, creator, make_node, make_task, task, complete):
    """The sweep cursor sits on the next task to look at; when that task leaves the queue
    (here: cancelled) the cursor moves on to the one after it. A cursor left on a task that
    is gone would end that task a second time and refund it twice."""
    n = make_node(gpu="rtx4090", vram=24576, models=("llama3-8b",))
    busy = make_task(models=("llama3-8b",))
    blocking = [make_task(models=("llama3-8b",), fee=2**52, gpu="h100") for _ in range(
        kit.QUEUE_SCAN + kit.SWEEP_SCAN + 2)]
    victim = make_task(models=("llama3-8b",), fee=2**30)
    complete(busy)  # looks at the first window and one sweep window: the cursor is on the next
    at_cursor = blocking[kit.QUEUE_SCAN + kit.SWEEP_SCAN]
    assert task(victim)["state"] == QUEUED
    with boa.env.prank(creator):
        net.cancelTask(at_cursor)
    with boa.env.prank(n.addr):
        assert net.takeQueuedTask() is True
    assert task(victim)["state"] == STARTED and same(task(victim)["node"], n.addr)
    assert net.balanceOf(creator) == 2**52  # the cancelled task, refunded once
    assert net.queuedCount() == len(blocking) - 1
    owed = net.balanceOf(creator) + net.balanceOf(n.addr)
    assert boa.env.get_balance(net.address) == n.stake + owed + len(blocking) * 2**52 - 2**52 + 2**30


# ---------------------------------------------------------------- withdrawTo

CONTRACT_CREATOR = """
# pragma version 0.4.3
interface TaskNetwork:
    def createTask(task_type: uint256, commitment: bytes32, nonce: bytes32,
                   model_ids: DynArray[bytes32, 16], min_vram: uint256, required_gpu: bytes32,
                   params_hash: bytes32, task_size: uint256, timeout: uint256, any_model: bool): payable
    def cancelTask(key: bytes32): nonpayable
    def withdraw(): nonpayable
    def withdrawTo(recipient: address): nonpayable

net: TaskNetwork

@deploy
@payable
def __init__(net: address):
    self.net = TaskNetwork(net)

@external
def create(commitment: bytes32, nonce: bytes32, model: bytes32, fee: uint256):
    extcall self.net.createTask(0, commitment, nonce, [model], 0, empty(bytes32),
                                keccak256(nonce), 1, 60, False, value=fee)

@external
def cancel(key: bytes32):
    extcall self.net.cancelTask(key)

@external
def withdraw():
    extcall self.net.withdraw()

@external
def withdraw_to(recipient: address):
    extcall self.net.withdrawTo(recipient)
"""  # no __default__: this contract cannot receive ether


def test_withdraw_to_moves_a_contract_creators_refund(net, creator, stranger):
    """A creator that is a contract without a payable fallback cannot take its refund with
    `withdraw` (the payment to it reverts); `withdrawTo` pays it to another account."""
    with boa.env.prank(creator):
        app = boa.loads(CONTRACT_CREATOR, net.address, value=ETHER)
    commitment, nonce = b"\x51" * 32, kit.fresh_nonce()
    app.create(commitment, nonce, b32("whisper-xl"), 10**15)
    key = kit.key_of(app.address, commitment)
    assert kit.task_view(net, key)["state"] == CREATED  # cancelled before it starts
    app.cancel(key)
    assert net.balanceOf(app.address) == 10**15
    with kit.reverts():
        app.withdraw()  # the ether cannot land on the app: the whole call reverts
    assert net.balanceOf(app.address) == 10**15
    before = boa.env.get_balance(stranger)
    app.withdraw_to(stranger)
    assert boa.env.get_balance(stranger) - before == 10**15
    assert net.balanceOf(app.address) == 0 and boa.env.get_balance(net.address) == 0
    with kit.reverts("funds: nothing to withdraw"):
        app.withdraw_to(stranger)


def test_withdraw_to_refusals_and_event(net, creator, stranger, make_task):
    with boa.env.prank(creator), kit.reverts("funds: nothing to withdraw"):
        net.withdrawTo(creator)
    c = make_task(models=("whisper-xl",), fee=999)
    with boa.env.prank(creator):
        net.cancelTask(c)
    with boa.env.prank(creator), kit.reverts("funds: empty recipient"):
        net.withdrawTo(ZERO_ADDRESS)
    assert net.balanceOf(creator) == 999
    with boa.env.prank(creator):
        net.withdrawTo(stranger)
    (withdrawal,) = net.get_logs()
    assert same(withdrawal.account, creator) and same(withdrawal.recipient, stranger)
    assert withdrawal.amount == 999 and net.balanceOf(creator) == 0
