"""Gas ceilings and flatness of TaskNetwork.vy, measured as real transactions would be charged.

boa runs calls as bare messages: no intrinsic gas, no refund, and storage "original values"
and warm/cold access sets carried over from earlier calls. Each measured call here runs in a
fresh boa Env (no snapshots open), right after `start_transaction()` resets those as a chain
does between transactions; `tx_gas` adds 21000 + calldata and subtracts the capped refund.
Run with -s to see the numbers.
"""

from __future__ import annotations

import contextlib
import itertools
import random

import boa
import chain_kit as kit
import pytest
from chain_kit import ETHER, QUEUED, STARTED, b32

SCORE = b"\x5c" * 32
# any-of tasks, a whole lifecycle (test_any_of_task_lifecycle_gas_ceiling): measured, plus room
ANY_OF_AVG_CEILING = 450_000
ANY_OF_MAX_CEILING = 700_000
RESULT = b"\x7e" * 32


_nonce_counter = itertools.count()


def next_nonce() -> bytes:
    """Nonces (hence commitments and selection seeds) restart with every fresh chain, so the
    measured gas does not depend on which tests ran before."""
    return kit.keccak(b"gas-nonce" + next(_nonce_counter).to_bytes(32, "big"))


@contextlib.contextmanager
def fresh_chain():
    global _nonce_counter
    _nonce_counter = itertools.count()
    with boa.swap_env(boa.Env()):
        relay, creator = kit.seeded_address("gas", "relay"), kit.seeded_address("gas", "creator")
        for a in (relay, creator):
            boa.env.set_balance(a, 10**9 * ETHER)
        net = kit.deploy_fast(relay)
        yield net, relay, creator


def measured(net, who, fn, *args, **kw) -> int:
    kit.start_transaction()
    with boa.env.prank(who):
        getattr(net, fn)(*args, **kw)
    return kit.tx_gas(net)


def create(net, creator, models, fee=10**15, min_vram=0, gpu=None, size=1, timeout=600, any_model=False):
    """createTask, then startTask in the next block: the key, and the gas of both."""
    nonce = next_nonce()
    task_id = kit.keccak(b"gas" + nonce)
    c = kit.commitment_of(task_id, nonce)
    key = kit.key_of(creator, c)
    kit.OPENINGS[key] = (task_id, nonce)
    gas = measured(net, creator, "createTask", 0, c, nonce, [b32(m) for m in models], min_vram,
                   b32(gpu), b"\x01" * 32, size, timeout, any_model, value=fee)
    kit.mine()
    gas += measured(net, creator, "startTask", key, *kit.requirements(models, min_vram, gpu), [], any_model)
    return key, gas


def finish(net, relay, creator, c) -> dict:
    """Score, validate, deliver; returns the gas of each."""
    node = kit.task_view(net, c)["node"]
    return dict(
        submitScore=measured(net, node, "submitScore", c, SCORE, RESULT),
        validateSingleTask=measured(net, creator, "validateSingleTask", c, *kit.opening(c)),
        reportResultUploaded=measured(net, relay, "reportResultUploaded", c),
    )


def task_specs(specs, count, seed):
    """Tasks that some node of `specs` can run: 1-2 of its models, VRAM it has, sometimes its GPU."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        s = rng.choice(specs)
        models = rng.sample(s.models, min(len(s.models), rng.choice([1, 1, 2])))
        min_vram = rng.choice([v for v in (0, 8192, 24576) if v <= s.vram] or [0])
        gpu = s.gpu if rng.random() < 0.15 else None
        out.append(dict(models=models, min_vram=min_vram, gpu=gpu))
    return out


def run_tasks(n_nodes, tasks, seed=1):
    """Create each task on a population of n_nodes and complete it before the next."""
    with fresh_chain() as (net, relay, creator):
        kit.build_population(net, n_nodes, seed)
        creates, totals, queued = [], [], 0
        for spec in tasks:
            c, g = create(net, creator, **spec)
            if kit.task_view(net, c)["state"] == QUEUED:
                # the bounded search missed: an idle node that matches polls, as its daemon would
                queued += 1
                match = next(s for s in kit.make_population(n_nodes, seed)
                             if s.matches(spec["models"], spec["min_vram"], spec["gpu"])
                             and kit.node_view(net, s.addr)["status"] == kit.IDLE)
                with boa.env.prank(match.addr):
                    net.takeQueuedTask()
            assert kit.task_view(net, c)["state"] == STARTED
            rest = finish(net, relay, creator, c)
            creates.append(g)
            totals.append(g + sum(rest.values()))
        return creates, totals, queued


def avg(xs):
    return sum(xs) / len(xs)


def test_single_task_lifecycle_gas_ceiling():
    specs = kit.make_population(100, seed=1)
    tasks = task_specs(specs, 50, seed=5)
    creates, totals, queued = run_tasks(100, tasks)
    print(f"\nlifecycle gas (100 nodes, 50 tasks): createTask avg {avg(creates):,.0f}, "
          f"all 4 txs avg {avg(totals):,.0f} max {max(totals):,} (queued first: {queued})")
    assert avg(totals) <= 400_000
    # the worst is a task the bounded selection missed: queued (its requirements stored),
    # then claimed by an idle node's takeQueuedTask
    # (which of the 50 the bounded search misses depends on the block hashes: none, here)
    assert max(totals) <= 640_000


def test_any_of_task_lifecycle_gas_ceiling():
    """Any-of tasks (2 to 4 alternatives of the pool, some VRAM floors) on 100 nodes: the
    union's counts and marks, and per probe the node's other listed models, cost more than an
    all-of start; each is completed (a missed one claimed by a matching idle node first)."""
    rng = random.Random(11)
    tasks = [dict(models=rng.sample(kit.MODEL_POOL, rng.randint(2, 4)), min_vram=rng.choice([0, 0, 8192]))
             for _ in range(30)]
    with fresh_chain() as (net, relay, creator):
        specs = kit.build_population(net, 100, 1)
        starts, totals, queued = [], [], 0
        for spec in tasks:
            c, g = create(net, creator, any_model=True, **spec)
            if kit.task_view(net, c)["state"] == QUEUED:
                queued += 1
                match = next(s for s in specs if set(s.models) & set(spec["models"]) and s.vram >= spec["min_vram"]
                             and kit.node_view(net, s.addr)["status"] == kit.IDLE)
                with boa.env.prank(match.addr):
                    net.takeQueuedTask()
            assert kit.task_view(net, c)["state"] == STARTED
            starts.append(g)
            totals.append(g + sum(finish(net, relay, creator, c).values()))
    print(f"\nany-of lifecycle gas (100 nodes, 30 tasks): createTask + startTask avg {avg(starts):,.0f} "
          f"max {max(starts):,}; all 4 txs avg {avg(totals):,.0f} max {max(totals):,} (queued first: {queued})")
    assert avg(totals) <= ANY_OF_AVG_CEILING
    assert max(totals) <= ANY_OF_MAX_CEILING


@pytest.fixture(scope="module")
def bench_runs():
    """The gas benchmark's own scenario (bench/gas.py `run`, seed 1): its population at 10 and
    1,000 nodes, its 100 tasks, each completed before the next."""
    from bench import gas as bench_gas

    tasks = bench_gas.make_tasks(bench_gas.make_population(10, 1), 100, 6)
    return bench_gas, {n: bench_gas.lifecycle(n, tasks, 1) for n in (10, 1000)}


def test_gas_ceilings_per_call_on_the_benchmarks_population(bench_runs):
    bench_gas, runs = bench_runs
    # (a call the run never made, e.g. a queued startTask when nothing missed, has no maximum)
    seen = {name: [g for r in runs.values() for g in r.gas.get(name, [])] for name in bench_gas.CALL_CEILINGS}
    maxima = {name: max(gs) for name, gs in seen.items() if gs}
    print("\nper call, max: " + ", ".join(f"{k} {v:,} (<= {bench_gas.CALL_CEILINGS[k]:,})"
                                          for k, v in maxima.items()))
    assert {k: v for k, v in maxima.items() if v > bench_gas.CALL_CEILINGS[k]} == {}


def test_gas_ceiling_of_the_worst_task_on_the_benchmarks_population(bench_runs):
    bench_gas, runs = bench_runs
    for n, r in runs.items():
        print(f"\n{n} nodes: per task avg {avg(r.per_task):,.0f}, worst {max(r.per_task):,}", end="")
        assert max(r.per_task) <= bench_gas.TASK_CEILING_WORST
        assert avg(r.per_task) <= bench_gas.TASK_CEILING_AVG
    # no task of the benchmark's misses at 1,000 idle nodes since issue 7 (a miss would cost
    # ~800k: queued, then claimed); the worst is a started task with many probes
    assert runs[1000].misses == 0
    # issue 3's single-task path, startTask's transaction included, with exact selection
    # (bench/gas.py SINGLE_TASK_AVG_10 says why it is above issue 3's 344,467)
    assert avg(runs[10].per_task) <= bench_gas.SINGLE_TASK_AVG_10


def test_claim_after_a_missed_look_gas_ceiling():
    """takeQueuedTask by an idle node whose own look (when freed) did not reach the task:
    it looks at the first window and a sweep window, then starts the task."""
    with fresh_chain() as (net, relay, creator):
        worker = kit.NodeSpec(kit.seeded_address("gas", "claimer"), "rtx4090", 24576, ["claim-model"], ETHER)
        kit.join(net, worker)
        current, _ = create(net, creator, ["claim-model"])
        for _ in range(kit.QUEUE_SCAN + kit.SWEEP_SCAN):
            create(net, creator, ["claim-model"], fee=2**60, gpu="h100")
        victim, queued_gas = create(net, creator, ["claim-model"], fee=10**15)
        with boa.env.prank(worker.addr):
            net.submitScore(current, SCORE, RESULT)
        kit.validate(net, current)
        freed = measured(net, relay, "reportResultUploaded", current)
        assert kit.task_view(net, victim)["state"] == QUEUED
        claim = measured(net, worker.addr, "takeQueuedTask")
        assert kit.task_view(net, victim)["state"] == STARTED
        print(f"\ncreateTask + startTask (queued) {queued_gas:,}; reportResultUploaded whose look misses "
              f"{freed:,}; takeQueuedTask that finds it {claim:,}")
        # queued_gas is createTask + a startTask that queues (two transactions since issue 8)
        assert queued_gas <= 360_000 and freed <= 310_000 and claim <= 200_000


def test_lifecycle_breakdown():
    with fresh_chain() as (net, relay, creator):
        kit.build_population(net, 10, seed=2)
        c, g_create = create(net, creator, ["llama3-8b"])
        if kit.task_view(net, c)["state"] != STARTED:
            pytest.skip("no node of seed 2 serves llama3-8b")
        rest = finish(net, relay, creator, c)
        node = kit.task_view(net, c)["node"]
        g_withdraw = measured(net, node, "withdraw")
        print(f"\nbreakdown: createTask {g_create:,}, " + ", ".join(f"{k} {v:,}" for k, v in rest.items())
              + f", withdraw {g_withdraw:,}, total {g_create + sum(rest.values()):,}")
        assert g_create + sum(rest.values()) <= 400_000


def _selection_ratio(tasks, label):
    seed = 1
    c10, _, q10 = run_tasks(10, tasks, seed)
    c1000, _, q1000 = run_tasks(1000, tasks, seed)
    ratio = avg(c1000) / avg(c10)
    print(f"\ncreateTask gas, {label}, {len(tasks)} tasks: 10 nodes avg {avg(c10):,.0f} "
          f"(queued {q10}), 1000 nodes avg {avg(c1000):,.0f} (queued {q1000}), ratio {ratio:.4f}")
    return ratio


def test_selection_gas_flat_in_network_size():
    """Tasks any node serving the model can run (one model, no VRAM or GPU requirement)."""
    small = kit.make_population(10, 1)  # also the first 10 nodes of the 1000
    rng = random.Random(9)
    tasks = [dict(models=[rng.choice(rng.choice(small).models)], min_vram=0, gpu=None)
             for _ in range(60)]
    assert _selection_ratio(tasks, "plain tasks") <= 1.05


def test_selection_gas_flat_with_selective_requirements():
    """Tasks drawn from the nodes' capabilities: 1-2 models, VRAM floors, sometimes a GPU.
    (createTask + startTask. The bounded probing can still miss at 1,000 nodes, which queues a
    task next to idle matches, ~+200k gas, claimed by a daemon: it happens to none of these 60
    with these block hashes; under issue 3's prevrandao seeds 2 of 60 missed, ratio 1.13.)"""
    small = kit.make_population(10, 1)
    tasks = task_specs(small, 60, seed=9)
    assert _selection_ratio(tasks, "mixed requirements") <= 1.05


def test_queue_gas_flat_in_queue_length():
    """One busy node serves the model; tasks for it queue. Enqueue = createTask + a startTask
    that queues, dequeue = the submitScore that frees the node (a node is busy only while it
    computes), which then starts the head task."""
    rounds = 10

    def measure(backlog: int):
        with fresh_chain() as (net, relay, creator):
            kit.build_population(net, 10, seed=4)
            worker = kit.NodeSpec(kit.seeded_address("gas", "worker"), "rtx4090", 24576, ["queue-model"], ETHER)
            kit.join(net, worker)
            current, _ = create(net, creator, ["queue-model"])
            assert kit.task_view(net, current)["state"] == STARTED
            rng = random.Random(17)
            for _ in range(backlog):  # fees per unit across many buckets
                kit.create_task(net, creator, models=["queue-model"], fee=rng.randint(1, 2**62),
                                size=rng.randint(1, 1000), timeout=3600, nonce=next_nonce())
            assert net.queuedCount() == backlog
            enq, deq = [], []
            for _ in range(rounds):
                # enqueue with `backlog` tasks waiting
                c, g = create(net, creator, ["queue-model"], fee=10**15, timeout=3600)
                assert kit.task_view(net, c)["state"] == QUEUED
                enq.append(g)
                # dequeue with `backlog` + 1 waiting: the node is freed and starts the head
                node = kit.task_view(net, current)["node"]
                deq.append(measured(net, node, "submitScore", current, SCORE, RESULT))
                started = [e.commitment for e in net.get_logs() if type(e).__name__ == "TaskStarted"]
                assert len(started) == 1
                current = started[0]
                assert net.queuedCount() == backlog
            return avg(enq), avg(deq)

    e0, d0 = measure(0)
    _, d10 = measure(10)
    e1000, d1000 = measure(1000)
    print(f"\nqueue gas: enqueue avg {e0:,.0f} at 0 queued, {e1000:,.0f} at 1000 queued "
          f"(ratio {e1000 / e0:.4f}); dequeue avg {d0:,.0f} with only the dequeued task waiting, "
          f"{d10:,.0f} with 10 more, {d1000:,.0f} with 1000 more (ratios {d1000 / d0:.4f}, {d1000 / d10:.4f})")
    assert e1000 / e0 <= 1.05
    # Emptying the queue refunds its list slots, so "only the dequeued task" is cheaper for
    # storage pricing, not for work done; growth is measured against a non-empty queue.
    assert d1000 / d10 <= 1.05
    assert d1000 / d0 <= 1.08


@pytest.mark.parametrize("kind", ["expired", "unrunnable"])
def test_worst_case_queue_scan_fits_the_clients_gas_limit(kind):
    """A freed node with the most models looks at QUEUE_SCAN + SWEEP_SCAN tasks of each, every
    one of them expired (ended and refunded) or not runnable by it: the most a scan can cost.
    The chain client gives calls that scan SCANNING_GAS_LIMIT; this proves the room is enough."""
    from gridtask.chain.client import SCANNING_GAS_LIMIT

    models = [f"m{i}" for i in range(kit.MAX_NODE_MODELS)]
    with fresh_chain() as (net, relay, creator):
        worker = kit.NodeSpec(kit.seeded_address("gas", "scan"), "cpu", 0, models, ETHER)
        kit.join(net, worker)
        current, _ = create(net, creator, [models[0]])
        for m in models:  # more tasks per model than a scan looks at, each in its worst state
            for _ in range(kit.QUEUE_SCAN + kit.SWEEP_SCAN + 1):
                if kind == "expired":
                    create(net, creator, [m], timeout=5)
                else:
                    create(net, creator, [m], gpu="h100", min_vram=81920, timeout=3600)
        if kind == "expired":
            boa.env.time_travel(seconds=10)
        gas = measured(net, worker.addr, "submitScore", current, SCORE, RESULT)  # scored: it looks
        print(f"\nworst-case queue scan ({kind}): submitScore {gas:,} gas")
        assert gas < SCANNING_GAS_LIMIT


@pytest.fixture(scope="module")
def validation_runs():
    """The benchmark's issue-8 scenario (bench/gas.py `validation`, quick: 40 tasks three
    nodes can run, 10 nodes): never validated, the default 10% rate, and always validated."""
    from bench import gas as bench_gas

    return bench_gas, bench_gas.validation(True, 1)


def test_a_validated_group_of_three_costs_at_most_1_2_million_gas(validation_runs):
    bench_gas, v = validation_runs
    groups = v["always"].groups + v["default"].groups
    print(f"\nvalidated group of three, all transactions: avg {avg(groups):,.0f}, max {max(groups):,} "
          f"({len(groups)} groups); validateTaskGroup avg {avg(v['always'].validate_group):,.0f}")
    assert len(groups) >= 10 and max(groups) <= bench_gas.GROUP_CEILING


def test_the_sampling_check_costs_at_most_100k_gas(validation_runs):
    bench_gas, v = validation_runs
    print(f"\nvalidateSingleTask (opening + sampling check): max {max(v['never'].sampling):,}")
    assert max(v["never"].sampling) <= bench_gas.SAMPLING_CEILING


def test_validation_at_the_default_rate_costs_at_most_a_quarter_more_per_task(validation_runs):
    bench_gas, v = validation_runs
    print(f"\nper task: never validated {avg(v['never'].per_task):,.0f}, default rate "
          f"{avg(v['default'].per_task):,.0f} ({v['default'].sampled} of {v['tasks']} sampled), "
          f"ratio {v['overhead']:.4f}")
    assert v["default"].sampled >= 1 and v["overhead"] <= bench_gas.VALIDATION_OVERHEAD_CEILING
