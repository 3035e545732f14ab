"""Stateful property test of TaskNetwork.vy over a mixed node population.

A Python model of the network follows every call, groups of three (sampled at a 50% rate or
not), slashes, disputes both ways, claims, top-ups and leaving nodes included. Checked after
every step:
  (a) money: the contract's ether == fees of unfinished tasks + stakes + sum of balanceOf;
  (b) every task's state, node, fee and deadline match the model (each task is in one state);
  (c) every transition is first tried by a wrong party and must revert with its exact reason;
  (d) once the idle nodes have claimed queued work (each node's daemon calls
      `takeQueuedTask` while a task it can run is queued), no unexpired queued task sits
      next to an idle node that can run it, read from the contract's storage. Each node
      gets there within the polls the queue's sweep needs (a bound from QUEUE_SCAN and
      SWEEP_SCAN, asserted), however many tasks it cannot run stand before.
The population puts more nodes on one model than the contract probes per selection
(MAX_PROBES), so random probing and its misses happen, and the daemon-side claim is what
puts the missed tasks on a node. Which queued task a node takes is predicted exactly (the
first QUEUE_SCAN tasks of each model it serves, best bucket first, then SWEEP_SCAN from the
model's sweep cursor; unexpired and matching; best fee per unit across its models).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import boa
import chain_kit as kit
import pytest
from chain_kit import (
    ABORTED,
    BUSY,
    CREATED,
    ERRORED,
    IDLE,
    INVALIDATED,
    LEAVING,
    LIVE_STATES,
    MAX_PROBES,
    PAUSED,
    QUEUE_SCAN,
    QUEUED,
    SCORE_READY,
    STARTED,
    SUCCESS,
    SWEEP_SCAN,
    VALIDATED,
    ZERO_ADDRESS,
    b32,
)
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

TASK_MODELS = kit.MODEL_POOL + kit.UNSERVED_MODELS
ANY = "(any-of queue)"  # the key of the contract's any-of queue (ANY_QUEUE), in the model's terms
COMMON_MODEL = kit.MODEL_POOL[0]
NO_TASKS_MODEL = "no-tasks-model"  # served by no node and asked by no task: for refusals
# More nodes serve COMMON_MODEL than selection probes: the random-probe path, and its misses.
POOL_SIZE = MAX_PROBES + 8
SCORE = b"\x5c" * 32
RESULT = b"\x7e" * 32


@dataclass
class TaskModel:
    creator: str
    fee: int
    models: list
    min_vram: int
    gpu: str | None
    size: int
    timeout: int
    state: int
    node: str | None
    deadline: int
    key: str
    seq: int
    in_queue: bool = False
    exclude: tuple = ()
    any_model: bool = False  # the models are alternatives: it waits in the any-of queue (key ANY)
    score: bytes = SCORE
    result_hash: bytes = RESULT
    grouped: bool = False

    @property
    def fpu(self) -> int:
        return self.fee // self.size

    @property
    def bucket(self) -> int:
        return kit.msb(self.fpu)


def lower(a) -> str:
    return str(a).lower()


def now() -> int:
    return boa.env.timestamp


def population(seed) -> list[kit.NodeSpec]:
    """The seeded mixed population, every node also serving COMMON_MODEL (at most 4 models)."""
    specs = kit.make_population(POOL_SIZE, seed)
    for s in specs:
        if COMMON_MODEL not in s.models:
            s.models = [COMMON_MODEL, *s.models[:3]]
    return specs


def sweep_bound(queue_length: int) -> int:
    """Polls of one node that reach every task of a queue this long: the first window, then
    sweep windows from wherever the cursor is, once round."""
    return 1 + math.ceil(max(0, queue_length - QUEUE_SCAN) / SWEEP_SCAN)


class NetworkMachine(RuleBasedStateMachine):
    # ------------------------------------------------------------ setup

    @initialize(data=st.data(), seed=st.integers(0, 10_000),
                n_initial=st.one_of(st.integers(0, 9), st.integers(MAX_PROBES + 1, POOL_SIZE)),
                n_tasks=st.integers(0, 8))
    def setup(self, data, seed, n_initial, n_tasks):
        self.relay = lower(kit.seeded_address("sm-relay", seed))
        self.stranger = lower(kit.seeded_address("sm-stranger", seed))
        self.creators = [lower(kit.seeded_address("sm-creator", f"{seed}:{i}")) for i in range(3)]
        for a in (self.relay, self.stranger, *self.creators):
            boa.env.set_balance(a, 10**30)
        # half the tasks sampled: single validation is refused for those, groups settle both ways
        self.net = kit.deploy_fast(self.relay, validation_rate_bps=5000)
        self.rd = kit.StorageReader(self.net)
        self.pool = {lower(s.addr): s for s in population(seed)}
        self.status: dict[str, int] = {}  # registered nodes -> IDLE/BUSY/PAUSED/LEAVING
        self.stakes: dict[str, int] = {}  # registered nodes -> stake held (slashable)
        self.release: dict[str, int] = {}  # leaving nodes -> when the stake is released
        self.pausing: set[str] = set()  # busy nodes that asked to pause
        self.tasks: dict[bytes, TaskModel] = {}
        self.balances: dict[str, int] = defaultdict(int)
        self.nonces: list[tuple[bytes, str]] = []  # (nonce, the creator that used it)
        self.nonce_prefix = f"sm-nonce:{seed}:".encode()  # commitments must not depend on other examples
        self.seq = 0
        self.cursor: dict[str, bytes | None] = {}  # model -> where its next sweep starts
        self.settled = False  # the idle nodes have claimed queued work since the last change
        for addr in list(self.pool)[:n_initial]:
            self._join(addr)
        for _ in range(n_tasks):  # some work from the start, most of it runnable
            model = data.draw(st.sampled_from(TASK_MODELS[:-1]))
            self.create_task(data, [model], data.draw(st.integers(1, 10**17)),
                             data.draw(st.integers(1, 100)), 0, None, data.draw(st.sampled_from([30, 3600])))

    # ------------------------------------------------------------ model helpers

    def accounts(self):
        return [*self.pool, *self.creators, self.relay, self.stranger]

    def spec(self, addr):
        return self.pool[addr]

    def active_count(self, model: str) -> int:
        """Nodes in the model's array: idle or busy (paused and leaving ones are out)."""
        return sum(1 for a, s in self.status.items() if s in (IDLE, BUSY) and model in self.spec(a).models)

    def matches(self, addr, t: TaskModel) -> bool:
        return addr not in t.exclude and self.fits(self.spec(addr), t.models, t.min_vram, t.gpu, t.any_model)

    @staticmethod
    def fits(spec, models, min_vram, gpu, any_model) -> bool:
        """All-of: every model; any-of: one of them (and VRAM, GPU either way)."""
        if any_model:
            return any(m in spec.models for m in models) and spec.matches([], min_vram, gpu)
        return spec.matches(models, min_vram, gpu)

    def queue_order(self, model: str) -> list[bytes]:
        q = [(c, t) for c, t in self.tasks.items() if t.in_queue and t.key == model]
        return [c for c, _ in sorted(q, key=lambda ct: (-ct[1].bucket, ct[1].seq))]

    def after(self, c: bytes) -> bytes | None:
        order = self.queue_order(self.tasks[c].key)
        i = order.index(c)
        return order[i + 1] if i + 1 < len(order) else None

    def unqueue(self, c: bytes):
        """task_queue.remove: a sweep cursor on the task moves on to the one after it."""
        t = self.tasks[c]
        if self.cursor.get(t.key) == c:
            self.cursor[t.key] = self.after(c)
        t.in_queue = False

    def runnable(self, addr, c: bytes) -> bool:
        t = self.tasks[c]
        if now() > t.deadline:
            self.end(c, ABORTED)
            event("queue: expired task ended by a scan")
            return False
        return self.matches(addr, t)

    def scan(self, addr, m: str) -> bytes | None:
        """Mirror of TaskNetwork._scan: the first QUEUE_SCAN tasks of m's queue, then
        SWEEP_SCAN from m's cursor (or on from the first window when it met the cursor)."""
        cursor = self.cursor.get(m)
        met = cursor is None
        order = self.queue_order(m)
        candidate = order[0] if order else None
        for _ in range(QUEUE_SCAN):
            if candidate is None:
                return None
            if candidate == cursor:
                met = True
            following = self.after(candidate)
            if self.runnable(addr, candidate):
                return candidate
            candidate = following
        if not met:
            candidate = cursor
            event("queue: sweep resumed at its cursor")
        for _ in range(SWEEP_SCAN):
            if candidate is None:
                break
            following = self.after(candidate)
            if self.runnable(addr, candidate):
                self.cursor[m] = candidate
                event("queue: found by the sweep")
                return candidate
            candidate = following
        self.cursor[m] = candidate
        return None

    def take_queued(self, addr):
        """Mirror of _take_queued on an idle node: the best fee per unit among what `scan`
        finds in each model it serves (the first found wins a tie)."""
        if not any(t.in_queue for t in self.tasks.values()):
            return None
        best = None
        queues = list(self.spec(addr).models)
        if any(t.in_queue and t.key == ANY for t in self.tasks.values()):
            queues.append(ANY)  # the contract looks at the any-of queue when it holds something
        for m in queues:
            found = self.scan(addr, m)
            if found is not None and (best is None or self.tasks[found].fpu > self.tasks[best].fpu):
                best = found
        if best is not None:
            self.start(best, addr)
        return best

    def start(self, c, addr):
        t = self.tasks[c]
        if t.in_queue:
            self.unqueue(c)
        t.state, t.node, t.deadline = STARTED, addr, now() + t.timeout
        self.status[addr] = BUSY

    def took_queued(self, addr):
        """The contract just ran _take_queued(addr) on an idle node: mirror it."""
        return self.take_queued(addr)

    def end(self, c, state, pause=False, paid_to_node=False):
        """The task ends: SUCCESS (or a claim) pays the node, anything else refunds. A node
        is busy only while it computes: only a task that ends before it scored frees its
        node (it pauses if it asked to or must: `pause`, it let the deadline pass)."""
        t = self.tasks[c]
        was = t.state
        if t.in_queue:
            self.unqueue(c)
        t.state, t.deadline = state, (now() + kit.CHALLENGE_WINDOW if state == SUCCESS else 0)
        if state == SUCCESS or paid_to_node:
            self.balances[t.node] += t.fee
        else:
            self.balances[t.creator] += t.fee
        if was == STARTED:
            self.free(t.node, pause)
        elif was == VALIDATED and pause:
            self.pause_late(t.node)

    def pause_late(self, node):
        """A validated task's node let its deadline pass: paused now if idle, else when its
        current task ends."""
        if self.status.get(node) == IDLE:
            self.status[node] = PAUSED
            event("late on a validated task: paused")
        elif self.status.get(node) == BUSY:
            self.pausing.add(node)
            event("late on a validated task: pause requested")

    def free(self, node, pause=False):
        if node is not None and self.status.get(node) == BUSY:
            if pause:
                self.pausing.discard(node)
                self.status[node] = PAUSED
                event("node paused: it let its stage's deadline pass")
            elif node in self.pausing:  # it asked to pause: it pauses, takes nothing
                self.pausing.discard(node)
                self.status[node] = PAUSED
                event("node paused after its task")
            else:
                self.status[node] = IDLE
                self.took_queued(node)

    def tasks_in(self, *states):
        return sorted(c for c, t in self.tasks.items() if t.state in states)

    def nodes_in(self, *states):
        return sorted(a for a, s in self.status.items() if s in states)

    def stranded(self):
        """(idle node, queued unexpired task it can run) pairs, by the model."""
        return [(a, c) for c in self.tasks_in(QUEUED) if now() <= self.tasks[c].deadline
                for a in self.nodes_in(IDLE) if self.matches(a, self.tasks[c])]

    def wrong_parties(self, right: set[str]):
        return [a for a in (*self.creators, self.relay, self.stranger, *sorted(self.status)) if a not in right]

    def tx(self, who, fn, *args, **kw):
        with boa.env.prank(who):
            return getattr(self.net, fn)(*args, **kw)

    def refused(self, reason, who, fn, *args, **kw):
        with kit.reverts(reason):
            self.tx(who, fn, *args, **kw)

    def check_view(self, c):
        """The touched task, through the public view (the invariants read storage directly)."""
        t = self.tasks[c]
        creator, node, fee, state, deadline, timeout, score, result_hash = self.net.getTask(c)
        assert (lower(creator), lower(node), fee, state, deadline, timeout) == (
            t.creator, t.node or ZERO_ADDRESS, t.fee, t.state, t.deadline, t.timeout), c.hex()
        if t.state in (SCORE_READY, VALIDATED, SUCCESS):
            assert (score, result_hash) == (t.score, t.result_hash)
        elif t.state in (CREATED, QUEUED, STARTED):
            assert score == kit.EMPTY32  # the requirements' hash in that slot is not shown

    def poll(self, addr) -> bool:
        got = self.tx(addr, "takeQueuedTask")
        expected = self.take_queued(addr)
        assert got == (expected is not None), (addr, expected)
        return got

    def _join(self, addr):
        kit.join(self.net, self.spec(addr))
        self.status[addr] = IDLE
        self.stakes[addr] = self.spec(addr).stake
        self.took_queued(addr)

    # ------------------------------------------------------------ node rules

    @precondition(lambda self: len(self.status) < len(self.pool))
    @rule(data=st.data())
    def join(self, data):
        """A node joins (again, after its stake was released and withdrawn)."""
        addr = data.draw(st.sampled_from(sorted(set(self.pool) - set(self.status))))
        self._join(addr)
        self.settled = False

    @precondition(lambda self: self.status)
    @rule(data=st.data())
    def join_twice(self, data):
        addr = data.draw(st.sampled_from(sorted(self.status)))
        with kit.reverts("nodes: already joined"):
            kit.join(self.net, self.spec(addr))

    @precondition(lambda self: self.status)
    @rule(data=st.data())
    def pause(self, data):
        """Idle: pauses at once. Busy: asks to pause after its task."""
        addr = data.draw(st.sampled_from(sorted(self.status)))
        self.refused("nodes: not a node", self.stranger, "pause")
        if self.status[addr] == PAUSED:
            self.refused("nodes: node is already paused", addr, "pause")
            return
        if self.status[addr] == LEAVING:
            self.refused("nodes: node is leaving", addr, "pause")
            return
        if addr in self.pausing:
            self.refused("nodes: pause already requested", addr, "pause")
            return
        self.tx(addr, "pause")
        if self.status[addr] == BUSY:
            self.pausing.add(addr)
            event("pause requested while busy")
        else:
            self.status[addr] = PAUSED
        self.settled = False

    @precondition(lambda self: self.status)
    @rule(data=st.data())
    def resume(self, data):
        """Paused: idle again, takes queued work. Busy and pausing: the request is withdrawn."""
        addr = data.draw(st.sampled_from(sorted(self.status)))
        self.refused("nodes: node is not paused", self.stranger, "resume")
        if (addr in self.pausing or self.status[addr] == PAUSED) and self.stakes[addr] < kit.MIN_STAKE:
            self.refused("nodes: stake below minimum: top up first", addr, "resume")
            return
        if addr in self.pausing:
            self.tx(addr, "resume")
            self.pausing.discard(addr)
            event("pause request withdrawn")
        elif self.status[addr] == PAUSED:
            self.tx(addr, "resume")
            self.status[addr] = IDLE
            self.took_queued(addr)
        else:
            self.refused("nodes: node is not paused", addr, "resume")
            return
        self.settled = False

    @precondition(lambda self: self.status)
    @rule(data=st.data())
    def quit(self, data):
        """Idle, busy or paused: out of selection at once (a task in hand goes on); the stake
        stays held, slashable, until the unstake delay passed."""
        addr = data.draw(st.sampled_from(sorted(self.status)))
        self.refused("nodes: not a node", self.stranger, "quit")
        if self.status[addr] == LEAVING:
            self.refused("nodes: node is already leaving", addr, "quit")
            return
        self.tx(addr, "quit")
        event(f"quit from status {self.status[addr]}")
        self.status[addr] = LEAVING
        self.pausing.discard(addr)
        self.release[addr] = now() + kit.UNSTAKE_DELAY
        self.settled = False

    @precondition(lambda self: self.status)
    @rule(data=st.data())
    def add_models(self, data):
        """A joined node serves more models (any of the pool, or one nobody served, whose
        tasks wait in the queue): its arrays follow at once and an idle node takes queued
        work it can now run. Refused: a stranger, a leaving node, a model already served,
        more than MAX_NODE_MODELS in all."""
        addr = data.draw(st.sampled_from(sorted(self.status)))
        spec = self.spec(addr)
        new = [m for m in TASK_MODELS if m not in spec.models]
        probe = new[0] if new else NO_TASKS_MODEL
        self.refused("nodes: not a node", self.stranger, "addModels", [b32(probe)])
        if self.status[addr] == LEAVING:
            self.refused("nodes: node is leaving", addr, "addModels", [b32(probe)])
            return
        room = kit.MAX_NODE_MODELS - len(spec.models)
        if room == 0:
            self.refused("nodes: a node serves at most 8 models", addr, "addModels", [b32(probe)])
            return
        if len(new) > room and data.draw(st.booleans()):
            self.refused("nodes: a node serves at most 8 models", addr, "addModels", [b32(m) for m in new[:room + 1]])
        else:
            self.refused("nodes: model already served", addr, "addModels", [b32(spec.models[0])])
        if not new:
            return
        picked = data.draw(st.lists(st.sampled_from(new), min_size=1, max_size=min(room, len(new)), unique=True))
        self.tx(addr, "addModels", [b32(m) for m in picked])
        spec.models = [*spec.models, *picked]
        assert [kit.from_b32(m) for m in self.net.getNodeModels(addr)] == spec.models
        event(f"models added while {self.status[addr]}")
        if self.status[addr] == IDLE:
            self.took_queued(addr)
        self.settled = False

    @precondition(lambda self: self.status)
    @rule(data=st.data())
    def remove_models(self, data):
        """A joined node drops models (one must stay): no new task of theirs reaches it. An
        idle node then looks at the queue like any model change (_models_changed): its scan
        moves the sweep cursors and ends the expired tasks it passes (and starts what it can
        run, if the daemons had not claimed it yet)."""
        addr = data.draw(st.sampled_from(sorted(self.status)))
        spec = self.spec(addr)
        if self.status[addr] == LEAVING:
            self.refused("nodes: node is leaving", addr, "removeModels", [b32(spec.models[0])])
            return
        if len(spec.models) == 1 or data.draw(st.booleans()):
            self.refused("nodes: a node must keep at least one model", addr, "removeModels",
                         [b32(m) for m in spec.models])
        else:
            unserved = next((m for m in TASK_MODELS if m not in spec.models), NO_TASKS_MODEL)
            self.refused("nodes: model not served", addr, "removeModels", [b32(spec.models[0]), b32(unserved)])
        if len(spec.models) == 1:
            return
        picked = data.draw(st.lists(st.sampled_from(spec.models), min_size=1, max_size=len(spec.models) - 1,
                                    unique=True))
        self.tx(addr, "removeModels", [b32(m) for m in picked])
        spec.models = [m for m in spec.models if m not in picked]
        assert [kit.from_b32(m) for m in self.net.getNodeModels(addr)] == spec.models
        event(f"models removed while {self.status[addr]}")
        if self.status[addr] == IDLE:
            self.took_queued(addr)
        self.settled = False

    @rule(everyone=st.booleans())
    def poll_idle_nodes(self, everyone=True):
        """The daemons' claim: (if `everyone`) every idle node polls once, as on a TaskQueued
        event; then each node that can run a queued task keeps polling while one is queued.
        Each such run of polls ends within the bound of the queue's sweep."""
        for addr in self.nodes_in(IDLE) if everyone else []:
            if self.status[addr] == IDLE:
                self.poll(addr)
        while pairs := self.stranded():
            addr = pairs[0][0]
            bound = sweep_bound(max(len(self.queue_order(m)) for m in self.spec(addr).models))
            polls = 0
            while any(a == addr for a, _ in self.stranded()):
                polls += 1
                assert polls <= bound, ("no task found within the sweep's bound", addr, bound)
                if self.poll(addr):
                    break
            event(f"claim: {polls} poll(s)")
        self.settled = True

    @rule(seconds=st.sampled_from([10, 60, 600, 4000]))
    def later_poll(self, seconds):
        """Time passes (queued tasks expire), then the daemons poll."""
        boa.env.time_travel(seconds=seconds)
        self.poll_idle_nodes()

    @precondition(lambda self: self.nodes_in(BUSY, PAUSED))
    @rule(data=st.data())
    def take_queued_when_not_idle(self, data):
        addr = data.draw(st.sampled_from(self.nodes_in(BUSY, PAUSED)))
        self.refused("nodes: node is not idle", addr, "takeQueuedTask")

    # ------------------------------------------------------------ task rules

    @rule(
        data=st.data(),
        models=st.one_of(
            st.lists(st.sampled_from(kit.MODEL_POOL), min_size=1, max_size=1),
            st.lists(st.sampled_from(TASK_MODELS), min_size=1, max_size=kit.MAX_TASK_MODELS, unique=True),
        ),
        fee=st.one_of(st.integers(1, 1000), st.integers(1, 10**18)),
        size=st.one_of(st.just(1), st.integers(1, 10_000)),
        min_vram=st.sampled_from([0, 0, 0, 0, 1, 8192, 24576, 81920, 81921]),
        gpu=st.sampled_from([None] * 6 + ["cpu", "rtx3070", "rtx4090", "a100", "h100"]),
        timeout=st.sampled_from([kit.MIN_TIMEOUT, 30, 300, kit.MAX_TIMEOUT]),
    )
    def create_task(self, data, models, fee, size, min_vram, gpu, timeout):
        creator = data.draw(st.sampled_from(self.creators))
        if fee < kit.MIN_FEE_PER_UNIT * size:
            with kit.reverts("tasks: fee below the minimum for its size"):
                kit.create_task(self.net, creator, models=models, fee=fee, size=size, nonce=self.fresh_nonce())
            event("create: fee below the minimum")
            return
        self._create(creator, self.fresh_nonce(), models, fee, size, min_vram, gpu, timeout)

    @precondition(lambda self: self.nodes_in(IDLE))
    @rule(data=st.data(), fee=st.integers(1, 10**12))
    def create_task_few_can_run(self, data, fee):
        """A task only an idle node's like can run (its GPU, VRAM and models): with more nodes
        on the model than selection probes, the probes often miss, and the daemons' claim has
        to put it on a node."""
        s = self.spec(data.draw(st.sampled_from(self.nodes_in(IDLE))))
        models = data.draw(st.lists(st.sampled_from(s.models), min_size=1, max_size=2, unique=True))
        creator = data.draw(st.sampled_from(self.creators))
        self._create(creator, self.fresh_nonce(), models, fee, 1, s.vram, s.gpu, 300)

    @rule(data=st.data(), fee=st.integers(1, 10**12), n=st.integers(1, 3))
    def create_any_of_task(self, data, fee, n):
        """An any-of task (issue 9): `n` alternative models, one of them perhaps served by no
        node; any node serving one of them may run it, and the any-of queue holds it."""
        models = data.draw(st.lists(st.sampled_from(TASK_MODELS), min_size=n, max_size=n, unique=True))
        gpu, vram = data.draw(st.sampled_from([(None, 0), *kit.GPU_KINDS[1:3]]))
        creator = data.draw(st.sampled_from(self.creators))
        self._create(creator, self.fresh_nonce(), models, fee, 1, vram, gpu, data.draw(st.sampled_from([30, 600])),
                     any_model=True)
        event("create: any-of")

    @rule(data=st.data(), count=st.integers(QUEUE_SCAN, QUEUE_SCAN + 2 * SWEEP_SCAN))
    def block_the_queue(self, data, count):
        """The audit's starvation: well-paid tasks nobody can run (a GPU no node has) on the
        model every node serves, ahead of everything else in its queue."""
        creator = data.draw(st.sampled_from(self.creators))
        for _ in range(count):
            self._create(creator, self.fresh_nonce(), [COMMON_MODEL], 2**60, 1, 0, "tpu-v9", 3600)

    @precondition(lambda self: [c for c in self.tasks_in(STARTED) if self.tasks[c].node not in self.pausing])
    @rule(data=st.data(), count=st.integers(QUEUE_SCAN + SWEEP_SCAN, QUEUE_SCAN + 3 * SWEEP_SCAN))
    def strand_a_task_behind_blockers(self, data, count):
        """A busy node's like is wanted by a poorly paid task queued behind `count` blockers
        on the model every node serves; then the node gives its task up. Its own look at the
        queue cannot reach the task: the daemons' claim has to, poll after poll."""
        c = data.draw(st.sampled_from(
            [c for c in self.tasks_in(STARTED) if self.tasks[c].node not in self.pausing]))
        s = self.spec(self.tasks[c].node)
        self.block_the_queue(data, count)
        creator = data.draw(st.sampled_from(self.creators))
        self._create(creator, self.fresh_nonce(), [COMMON_MODEL], 1, 1, s.vram, s.gpu, 600)
        self.do_report_error(data, c)
        self.poll_idle_nodes(everyone=False)

    def fresh_nonce(self) -> bytes:
        return kit.keccak(self.nonce_prefix + str(len(self.nonces)).encode())

    def _create(self, creator, nonce, models, fee, size, min_vram, gpu, timeout, task_id=None, exclude=(),
                any_model=False):
        key = ANY if any_model else min(models, key=self.active_count)  # first of the least-served models
        entries = sum(self.active_count(m) for m in models) if any_model else self.active_count(key)
        if not any_model:
            assert self.net.model_node_count(b32(key)) == self.active_count(key)
        idle_matches = [a for a in self.nodes_in(IDLE)
                        if a not in exclude and self.fits(self.spec(a), models, min_vram, gpu, any_model)]
        c = kit.create_task(self.net, creator, models=models, fee=fee, min_vram=min_vram, gpu=gpu,
                            size=size, timeout=timeout, nonce=nonce, task_id=task_id, exclude=exclude,
                            any_model=any_model)
        assert c not in self.tasks
        self.nonces.append((nonce, creator))
        self.seq += 1
        t = TaskModel(creator, fee, list(models), min_vram, gpu, size, timeout, QUEUED, None,
                      now() + timeout, key, self.seq, exclude=tuple(exclude), any_model=any_model)
        self.tasks[c] = t
        _, node, *_ = self.net.getTask(c)
        node = lower(node)
        if node != ZERO_ADDRESS:
            assert node in idle_matches, ("selected a node that is not idle or does not match", node)
            self.start(c, node)
            event("create: started at once")
        else:
            t.in_queue = True
            if entries <= MAX_PROBES:
                # selection probes every entry of a short array (or union): it cannot miss
                assert not idle_matches, ("queued next to idle matching nodes", idle_matches)
            elif idle_matches:
                event("create: bounded search missed")
            event("create: queued")
        self.check_view(c)
        self.settled = False
        return c

    @precondition(lambda self: self.nonces)
    @rule(data=st.data())
    def reuse_a_nonce(self, data):
        """The creator that used a nonce cannot use it again; another creator copying it (and
        the commitment derived from it, as a front-runner would) gets a task of its own."""
        nonce, first = data.draw(st.sampled_from(self.nonces))
        with kit.reverts("tasks: nonce already used"):
            kit.create_task(self.net, first, nonce=nonce)
        other = data.draw(st.sampled_from([c for c in self.creators if c != first]))
        if (nonce, other) in self.nonces:
            return
        c = self._create(other, nonce, [COMMON_MODEL], 10**15, 1, 0, None, 300)
        event("nonce copied by another creator")
        assert c == kit.key_of(other, kit.commitment_of(kit.keccak(b"task" + nonce), nonce))

    # each transition: first by a wrong party (exact revert), then by the right one

    def do_submit_score(self, data, c):
        t = self.tasks[c]
        wrong = data.draw(st.sampled_from(self.wrong_parties({t.node})))
        self.refused("tasks: only the task's node may do this", wrong, "submitScore", c, SCORE, RESULT)
        self.tx(t.node, "submitScore", c, SCORE, RESULT)
        t.state, t.deadline = SCORE_READY, now() + kit.VALIDATION_WINDOW
        self.free(t.node)  # scored: the node takes the next task
        self.check_view(c)
        self.settled = False
        event("submitScore")

    def do_report_error(self, data, c):
        t = self.tasks[c]
        code = data.draw(st.integers(0, 2**16))
        wrong = data.draw(st.sampled_from(self.wrong_parties({t.node})))
        self.refused("tasks: only the task's node may do this", wrong, "reportTaskError", c, code)
        self.tx(t.node, "reportTaskError", c, code)
        self.end(c, ERRORED)
        self.check_view(c)
        self.settled = False
        event("reportTaskError")

    def do_validate(self, data, c):
        t = self.tasks[c]
        wrong = data.draw(st.sampled_from(self.wrong_parties({t.creator})))
        self.refused("tasks: only the creator may validate", wrong, "validateSingleTask", c, *kit.opening(c))
        if self.net.isSampled(c, *kit.opening(c)):
            self.refused("tasks: task was sampled: validate it as a group of three", t.creator,
                         "validateSingleTask", c, *kit.opening(c))
            event("validateSingleTask refused: sampled")
            return
        self.tx(t.creator, "validateSingleTask", c, *kit.opening(c))
        t.state, t.deadline = VALIDATED, now() + t.timeout
        self.check_view(c)
        event("validateSingleTask")

    def do_report_uploaded(self, data, c):
        wrong = data.draw(st.sampled_from(self.wrong_parties({self.relay})))
        self.refused("tasks: only the relay may report delivery", wrong, "reportResultUploaded", c)
        self.tx(self.relay, "reportResultUploaded", c)
        self.end(c, SUCCESS)
        self.check_view(c)
        self.settled = False
        event("reportResultUploaded")

    @precondition(lambda self: self.tasks_in(STARTED))
    @rule(data=st.data())
    def submit_score(self, data):
        self.do_submit_score(data, data.draw(st.sampled_from(self.tasks_in(STARTED))))

    @precondition(lambda self: self.tasks_in(STARTED))
    @rule(data=st.data())
    def report_error(self, data):
        self.do_report_error(data, data.draw(st.sampled_from(self.tasks_in(STARTED))))

    @precondition(lambda self: self.tasks_in(SCORE_READY))
    @rule(data=st.data())
    def validate(self, data):
        self.do_validate(data, data.draw(st.sampled_from(self.tasks_in(SCORE_READY))))

    @precondition(lambda self: self.tasks_in(VALIDATED))
    @rule(data=st.data())
    def report_uploaded(self, data):
        self.do_report_uploaded(data, data.draw(st.sampled_from(self.tasks_in(VALIDATED))))

    @rule(data=st.data(), model=st.sampled_from(kit.MODEL_POOL), steps=st.integers(1, 4))
    def busy_day(self, data, model, steps):
        """A plain task, then a few live tasks moved one step on (hypothesis's swarm testing
        turns whole rules off per example; this keeps the lifecycle going in most examples)."""
        self.create_task(data, [model], 10**15, 1, 0, None, 300)
        for _ in range(steps):
            live = self.tasks_in(STARTED, SCORE_READY, VALIDATED)
            if not live:
                break
            c = data.draw(st.sampled_from(live))
            state = self.tasks[c].state
            if state == STARTED:
                if data.draw(st.integers(0, 4)) == 0:
                    self.do_report_error(data, c)
                else:
                    self.do_submit_score(data, c)
            elif state == SCORE_READY:
                self.do_validate(data, c)
            else:
                self.do_report_uploaded(data, c)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def wrong_state(self, data):
        """Each transition tried in a state it does not apply to, by the right party."""
        c = data.draw(st.sampled_from(sorted(self.tasks)))
        t = self.tasks[c]
        if t.state != STARTED and t.node is not None:
            self.refused("tasks: task not started", t.node, "submitScore", c, SCORE, RESULT)
            self.refused("tasks: task not started", t.node, "reportTaskError", c, 1)
        if t.state != SCORE_READY:
            self.refused("tasks: score not ready", t.creator, "validateSingleTask", c, *kit.opening(c))
        if t.state != VALIDATED:
            self.refused("tasks: task not validated", self.relay, "reportResultUploaded", c)
        if t.state not in (CREATED, QUEUED):
            self.refused("tasks: task not queued", t.creator, "cancelTask", c)
        if t.state != SCORE_READY and t.node is not None:
            self.refused("tasks: score not ready", t.node, "claimUnvalidated", c)
        if t.state not in LIVE_STATES:
            self.refused("tasks: task already ended", t.creator, "abortTask", c, "late")

    @precondition(lambda self: self.tasks_in(*LIVE_STATES))
    @rule(data=st.data(), late=st.booleans())
    def abort(self, data, late):
        c = data.draw(st.sampled_from(self.tasks_in(*LIVE_STATES)))
        t = self.tasks[c]
        if late and now() <= t.deadline:
            boa.env.time_travel(seconds=t.deadline - now() + 1)
        parties = [t.creator] + ([t.node] if t.node else [])
        who = data.draw(st.sampled_from(parties))
        if t.state == SCORE_READY:  # validated, or claimed by its node: never aborted
            self.refused("tasks: scored: validate it, or its node claims it later", who, "abortTask", c, "x")
            return
        # a party that is neither the creator nor the task's node
        wrong = data.draw(st.sampled_from(self.wrong_parties({t.creator, t.node})))
        self.refused("tasks: only the creator or the task's node may abort", wrong, "abortTask", c, "x")
        is_late = now() > t.deadline
        if who == t.node and not (t.state == STARTED or is_late):
            self.refused("tasks: scored: wait for deadline", who,
                         "abortTask", c, "x")
            return
        if who != t.node and not is_late:
            self.refused("tasks: deadline not passed", who, "abortTask", c, "x")
            return
        self.tx(who, "abortTask", c, "by rule")
        event(f"abort ok from state {t.state} by {'node' if who == t.node else 'creator'}")
        self.end(c, ABORTED, pause=is_late)  # a node past its own stage's deadline pauses
        self.check_view(c)
        self.settled = False

    @precondition(lambda self: self.tasks_in(SCORE_READY))
    @rule(data=st.data(), late=st.booleans())
    def claim_unvalidated(self, data, late):
        """The creator stays silent: past the validation window the node takes its fee."""
        c = data.draw(st.sampled_from(self.tasks_in(SCORE_READY)))
        t = self.tasks[c]
        wrong = data.draw(st.sampled_from(self.wrong_parties({t.node})))
        self.refused("tasks: only the task's node may do this", wrong, "claimUnvalidated", c)
        if not late:
            if now() <= t.deadline:
                self.refused("tasks: validation window not passed", t.node, "claimUnvalidated", c)
            return
        if now() <= t.deadline:
            boa.env.time_travel(seconds=t.deadline - now() + 1)
        self.tx(t.node, "claimUnvalidated", c)
        self.end(c, ABORTED, paid_to_node=True)
        self.check_view(c)
        self.settled = False
        event("claimUnvalidated")

    @precondition(lambda self: self.tasks_in(CREATED, QUEUED))
    @rule(data=st.data())
    def cancel(self, data):
        c = data.draw(st.sampled_from(self.tasks_in(CREATED, QUEUED)))
        t = self.tasks[c]
        wrong = data.draw(st.sampled_from(self.wrong_parties({t.creator})))
        self.refused("tasks: only the creator may cancel", wrong, "cancelTask", c)
        self.tx(t.creator, "cancelTask", c)
        self.end(c, ABORTED)
        self.check_view(c)
        self.settled = False

    @rule(seconds=st.sampled_from([1, 5, 30, 300, 1000, 4000]))
    def time_passes(self, seconds):
        boa.env.time_travel(seconds=seconds)

    def released(self, who) -> bool:
        return self.status.get(who) == LEAVING and now() >= self.release[who]

    def paid_out(self, who) -> int:
        """What a withdrawal pays `who`: its balance, and a leaving node's released stake
        (the node's record goes with it)."""
        amount = self.balances[who]
        self.balances[who] = 0
        if self.released(who):
            amount += self.stakes.pop(who)
            del self.status[who], self.release[who]
            event("released stake withdrawn")
        return amount

    @rule(data=st.data(), wait=st.booleans())
    def withdraw(self, data, wait):
        owed = sorted({a for a, v in self.balances.items() if v > 0} | set(self.release))
        who = data.draw(st.sampled_from(owed or self.accounts()))
        if wait and who in self.release and now() < self.release[who]:
            boa.env.time_travel(seconds=self.release[who] - now())
        if self.balances[who] == 0 and not self.released(who):
            self.refused("funds: nothing to withdraw", who, "withdraw")
            return
        before = boa.env.get_balance(who)
        self.tx(who, "withdraw")
        assert boa.env.get_balance(who) - before == self.paid_out(who)

    @rule(data=st.data(), fresh=st.booleans())
    def withdraw_to(self, data, fresh):
        """Paid to another account (one of the network's, or one that never appeared)."""
        owed = sorted(a for a, v in self.balances.items() if v > 0)
        who = data.draw(st.sampled_from(owed or self.accounts()))
        recipient = (lower(kit.seeded_address("sm-recipient", len(self.tasks))) if fresh
                     else data.draw(st.sampled_from(self.accounts())))
        self.refused("funds: empty recipient", who, "withdrawTo", ZERO_ADDRESS)
        if self.balances[who] == 0 and not self.released(who):
            self.refused("funds: nothing to withdraw", who, "withdrawTo", recipient)
            return
        before = boa.env.get_balance(recipient)
        self.tx(who, "withdrawTo", recipient)
        if recipient != who:
            assert boa.env.get_balance(recipient) - before == self.paid_out(who)
        else:
            self.paid_out(who)
        event("withdrawTo")

    # ------------------------------------------------------------ stakes, groups, disputes

    def slash(self, node) -> int:
        """Mirror of _slash: half the stake (SLASH_BPS); below the minimum an idle node pauses
        now, a busy one when its task ends."""
        stake = self.stakes.get(node, 0)
        amount = stake * kit.SLASH_BPS // 10_000
        self.set_stake(node, stake - amount)
        return amount

    def set_stake(self, node, stake):
        if node not in self.stakes:
            return  # gone: nothing left to take
        self.stakes[node] = stake
        if stake < kit.MIN_STAKE:
            if self.status[node] == IDLE:
                self.status[node] = PAUSED
                event("slashed below the minimum: paused")
            elif self.status[node] == BUSY:
                self.pausing.add(node)

    @precondition(lambda self: self.status)
    @rule(data=st.data(), amount=st.sampled_from([1, kit.MIN_STAKE // 2, kit.MIN_STAKE]))
    def top_up(self, data, amount):
        addr = data.draw(st.sampled_from(sorted(self.status)))
        self.refused("nodes: not a node", self.stranger, "topUp", value=amount)
        if self.status[addr] == LEAVING:
            self.refused("nodes: node is leaving", addr, "topUp", value=amount)
            return
        boa.env.set_balance(addr, boa.env.get_balance(addr) + amount)
        self.tx(addr, "topUp", value=amount)
        self.stakes[addr] += amount
        event("topUp")

    @precondition(lambda self: len(self.nodes_in(IDLE)) >= 3)
    @rule(data=st.data())
    def validation_group(self, data):
        """Three tasks with one task ID on three nodes (each started with the others' nodes
        excluded); each scores one of two answers, reports an error, or is cancelled/aborted;
        then the creator validates the group. The model settles it: who agrees, who is paid
        what, who is slashed, who pauses, what the creator gets back."""
        creator = data.draw(st.sampled_from(self.creators))
        task_id = kit.keccak(self.nonce_prefix + b"group" + str(self.seq).encode())
        keys = []
        for _ in range(3):
            exclude = [self.tasks[k].node for k in keys if self.tasks[k].node][-2:]
            keys.append(self._create(creator, self.fresh_nonce(), [COMMON_MODEL],
                                     data.draw(st.integers(1, 10**15)), 1, 0, None, 3600,
                                     task_id=task_id, exclude=exclude))
        for c in keys:
            t = self.tasks[c]
            choice = data.draw(st.sampled_from(["A", "A", "B", "error", "end"]))
            if t.state == STARTED and choice in ("A", "B"):
                t.score = (b"\xaa" if choice == "A" else b"\xbb") * 32
                self.tx(t.node, "submitScore", c, t.score, RESULT)
                t.state, t.deadline = SCORE_READY, now() + kit.VALIDATION_WINDOW
                self.free(t.node)
            elif t.state == STARTED and choice == "error":
                self.tx(t.node, "reportTaskError", c, 1)
                self.end(c, ERRORED)
            elif t.state == STARTED:
                self.tx(t.node, "abortTask", c, "gives up")  # in time: no pause
                self.end(c, ABORTED)
            elif t.state in (CREATED, QUEUED):
                self.tx(creator, "cancelTask", c)
                self.end(c, ABORTED)
        nodes = [self.tasks[c].node for c in keys]
        if len({n for n in nodes if n}) < len([n for n in nodes if n]):
            self.refused("group: two tasks ran on the same node", creator, "validateTaskGroup",
                         kit.task_id_hash(task_id), [kit.OPENINGS[c][1] for c in keys])
            return
        self.settle_group(creator, task_id, keys)

    def settle_group(self, creator, task_id, keys):
        ts = [self.tasks[c] for c in keys]
        voting = [t.state == SCORE_READY for t in ts]
        agreeing = 0
        for i in range(3):
            for j in range(i):
                if voting[i] and voting[j] and ts[i].score == ts[j].score:
                    agreeing |= (1 << i) | (1 << j)
        count = bin(agreeing).count("1")
        if count < 2:
            agreeing, count = 0, 0
        outcome = kit.AGREED if count else (kit.NO_MAJORITY if sum(voting) >= 2 else kit.TOO_FEW)
        sampled = self.net.isSampled(keys[0], *kit.opening(keys[0]))
        self.tx(creator, "validateTaskGroup", kit.task_id_hash(task_id), [kit.OPENINGS[c][1] for c in keys])
        ev = [e for e in self.net.get_logs() if type(e).__name__ == "TaskGroupValidated"][-1]
        assert (ev.outcome, ev.agreeing, ev.sampled) == (outcome, agreeing, sampled)
        event(f"group outcome {outcome}{' sampled' if sampled else ''}")
        pot = ts[0].fee if sampled and count and ts[0].state == SCORE_READY else 0
        held = paid = slashed = 0
        for i, t in enumerate(ts):
            t.grouped = True
            if t.state == ERRORED and count:
                slashed += self.slash(t.node)
                event("group: errored member slashed")
            if t.state != SCORE_READY:
                continue
            held += t.fee
            if agreeing >> i & 1:
                pay = t.fee
                if pot:
                    pay = pot // count + (pot % count if paid == 0 else 0)
                paid += pay
                t.fee = pay
                t.state, t.deadline = VALIDATED, now() + t.timeout
                continue
            if count:
                t.state, t.deadline = INVALIDATED, 0
                slashed += self.slash(t.node)
                event("group: disagreeing member slashed")
            else:
                t.state, t.deadline = ABORTED, 0
        self.balances[creator] += held - paid
        credited = 0
        for i in range(3):
            if agreeing >> i & 1:
                amount = slashed // count + (slashed % count if credited == 0 else 0)
                credited += amount
                self.balances[ts[i].node] += amount
        for c in keys:
            self.check_view(c)
        self.settled = False

    @precondition(lambda self: self.nodes_in(IDLE))
    @rule(data=st.data(), honest=st.booleans())
    def dispute(self, data, honest):
        """A delivered result disputed by its creator with the real ciphertext: the honest
        node wins (the dispute reverts); a node that delivered another result than it scored
        gives the fee back (from its balance first, then its stake) and is slashed, both to
        the creator."""
        from gridtask.crypto import encrypt_result, result_digest, result_key

        creator = data.draw(st.sampled_from(self.creators))
        c = self._create(creator, self.fresh_nonce(), [COMMON_MODEL], data.draw(st.integers(1, 10**16)),
                         1, 0, None, 3600)
        t = self.tasks[c]
        if t.state != STARTED or self.net.isSampled(c, *kit.opening(c)):
            return
        task_id, nonce = kit.OPENINGS[c]
        plain = data.draw(st.binary(max_size=100))
        cipher = encrypt_result(result_key(task_id, nonce), plain if honest else plain + b"!")
        t.score, t.result_hash = result_digest(plain), kit.keccak(cipher)
        self.tx(t.node, "submitScore", c, t.score, t.result_hash)
        t.state, t.deadline = SCORE_READY, now() + kit.VALIDATION_WINDOW
        self.free(t.node)
        self.do_validate(data, c)
        self.do_report_uploaded(data, c)
        if honest:
            self.refused("dispute: the result matches the score", creator, "disputeResult", c, task_id, nonce, cipher)
            event("dispute: honest node not framed")
            return
        self.tx(creator, "disputeResult", c, task_id, nonce, cipher)
        node = t.node
        from_balance = min(self.balances[node], t.fee)
        self.balances[node] -= from_balance
        from_stake = min(t.fee - from_balance, self.stakes.get(node, 0))
        if from_stake:
            self.set_stake(node, self.stakes[node] - from_stake)
        t.state, t.deadline = INVALIDATED, 0
        self.balances[creator] += from_balance + from_stake + self.slash(node)
        self.check_view(c)
        self.settled = False
        event("dispute: lying node slashed")

    # ------------------------------------------------------------ invariants

    @invariant()
    def money_is_conserved(self):
        """(a) ether held == fees of unfinished tasks + stakes + everything owed."""
        escrow = sum(t.fee for t in self.tasks.values() if t.state in LIVE_STATES)
        stakes = sum(self.stakes.values())
        owed = 0
        for a in self.accounts():
            on_chain = self.rd.balance_of(a)
            assert on_chain == self.balances[a], ("balanceOf", a, on_chain, self.balances[a])
            owed += on_chain
        assert boa.env.get_balance(self.net.address) == escrow + stakes + owed

    @invariant()
    def tasks_match_model(self):
        """(b) each task is in exactly the state (and with the node and deadline) the model says."""
        for c, t in self.tasks.items():
            v = self.rd.task(c)
            assert v["state"] == t.state, (c.hex(), v["state"], t.state)
            assert v["node"] == (t.node or ZERO_ADDRESS), (c.hex(), v["node"], t.node)
            assert (v["creator"], v["fee"], v["deadline"], v["timeout"]) == (
                t.creator, t.fee, t.deadline, t.timeout), c.hex()
        assert self.rd.queued_count() == len(self.tasks_in(QUEUED))

    @invariant()
    def nodes_match_model(self):
        for a in self.pool:
            status, stake = self.rd.node(a)
            assert status == self.status.get(a, 0), (a, status, self.status.get(a))
            assert stake == self.stakes.get(a, 0), (a, stake, self.stakes.get(a))
            assert self.rd.pause_requested(a) == (a in self.pausing), a
        for m in TASK_MODELS:
            assert self.rd.model_node_count(m) == self.active_count(m), m

    @invariant()
    def model_arrays_are_exact(self):
        """Each model's array holds exactly the active nodes that serve it, each once, at the
        position node_model_pos records, its entry's filter that of every model it serves
        now (added and removed models included): what keeps selection stake-proportional."""
        for m in TASK_MODELS:
            entries = self.rd.model_entries(m)
            members = [a for a, _, _ in entries]
            want = {a for a, s in self.status.items() if s in (IDLE, BUSY) and m in self.spec(a).models}
            assert len(members) == len(set(members)) and set(members) == want, (m, members, want)
            for i, (a, pos, folded) in enumerate(entries, 1):
                assert pos == i, (m, a, pos, i)
                assert folded == kit.folded_filter(self.spec(a).models), (m, a)
        for a in self.status:
            assert self.rd.model_filter(a) == kit.model_filter(self.spec(a).models), a

    @invariant()
    def no_task_stranded_next_to_an_idle_node(self):
        """(d) Once the idle nodes have claimed: no queued, unexpired task (by the contract's
        storage) that an idle node (by the contract's storage) can run. Strict: no window,
        no exception."""
        if not self.settled:
            return
        idle = [a for a in self.pool if self.rd.node(a)[0] == IDLE]
        for c, t in self.tasks.items():
            v = self.rd.task(c)
            if v["state"] != QUEUED or now() > v["deadline"]:
                continue
            stranded = [a for a in idle if self.matches(a, t)]
            assert not stranded, ("queued next to idle matching nodes", c.hex(), stranded)


TestNetworkStateMachine = NetworkMachine.TestCase
# 30 examples of 40 steps take ~2-4 CPU minutes; on a loaded 2-core machine the wall clock
# runs far past the suite's 300 s default, which then kills a run that was passing
TestNetworkStateMachine.pytestmark = [pytest.mark.timeout(1500)]
TestNetworkStateMachine.settings = settings(
    max_examples=30,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_storage_reader_agrees_with_views(net, creator, relay, population, make_task, complete):
    """The invariants read storage directly; here that reading is checked against the views."""
    specs = population(12, seed=5)
    rd = kit.StorageReader(net)
    cs = [make_task(models=[m], fee=10**15 + i, timeout=30 + i) for i, m in enumerate(TASK_MODELS)]
    complete(next(c for c in cs if rd.task(c)["state"] == STARTED))
    idle = [s for s in specs if kit.node_view(net, s.addr)["status"] == IDLE]
    with boa.env.prank(idle[0].addr):
        net.pause()
    with boa.env.prank(idle[1].addr):
        net.quit()
    for c in cs:
        v = kit.task_view(net, c)
        assert rd.task(c) == dict(creator=lower(v["creator"]), node=lower(v["node"]), fee=v["fee"],
                                  state=v["state"], deadline=v["deadline"], timeout=v["timeout"])
    states = set()
    for s in specs:
        status, stake, *_ = net.getNode(s.addr)
        assert rd.node(s.addr) == (status, stake)
        assert rd.balance_of(s.addr) == net.balanceOf(s.addr)
        states.add(status)
    assert states >= {IDLE, BUSY, PAUSED, LEAVING}
    for m in TASK_MODELS:
        assert rd.model_node_count(m) == net.model_node_count(b32(m))
    assert rd.queued_count() == net.queuedCount() > 0
    assert any(rd.balance_of(s.addr) > 0 for s in specs)


def test_remove_models_scan_moves_the_sweep_like_any_idle_look(net, creator, make_node, task):
    """The stateful test's counterexample, pinned (found once create_any_of_task became a rule):
    an idle node's removeModels looks at the queue (_models_changed runs _take_queued), so its
    sweep moves the cursor past a queued task L. L then expires, and the next freed node's scan
    (first window, then the sweep from the moved cursor) does not reach it: L stays QUEUED past
    its deadline. The old model skipped that look and expected L ended by the freed node. Money
    is not stuck either way: the creator can cancel L, and the sweep's next turn ends it."""
    busy = make_node(models=("llama3-8b",))
    running = kit.create_task(net, creator, models=["llama3-8b"])
    assert kit.same(task(running)["node"], busy.addr)
    idle = make_node(models=("llama3-8b", "mistral-7b"))
    # blockers nobody can run fill the first window and the sweep's first turn up to L
    blockers = [kit.create_task(net, creator, models=["llama3-8b"], fee=2**60, gpu="tpu-v9", timeout=3600)
                for _ in range(QUEUE_SCAN + SWEEP_SCAN - 1)]
    late = kit.create_task(net, creator, models=["llama3-8b"], fee=2, gpu="a100", timeout=30)
    behind = kit.create_task(net, creator, models=["llama3-8b"], fee=1, gpu="a100", timeout=3600)
    anyof = kit.create_task(net, creator, models=["whisper-xl", "gpt-oss-120b"], any_model=True, timeout=3600)
    assert all(task(c)["state"] == QUEUED for c in [*blockers, late, behind, anyof])
    with boa.env.prank(idle.addr):
        net.removeModels([b32("mistral-7b")])  # its look: b1..b4, then the sweep b5..b7, L; cursor -> behind
    assert task(late)["state"] == QUEUED
    boa.env.time_travel(seconds=60)  # L expires
    with boa.env.prank(busy.addr):
        net.reportTaskError(running, 1)  # the freed node: b1..b4, then the sweep from `behind`
    assert task(running)["state"] == ERRORED and kit.node_view(net, busy.addr)["status"] == IDLE
    assert task(late)["state"] == QUEUED and boa.env.timestamp > task(late)["deadline"]
    refunded = net.balanceOf(creator)
    with boa.env.prank(busy.addr):
        assert net.takeQueuedTask() is False  # the sweep's next turn: b5..b7, L ended, refunded
    assert task(late)["state"] == ABORTED
    assert net.balanceOf(creator) - refunded == 2
    assert net.queuedCount() == len(blockers) + 2  # the blockers, `behind`, the any-of task
    assert all(task(c)["state"] == QUEUED for c in [*blockers, behind, anyof])
    with boa.env.prank(creator):
        for c in [*blockers, behind, anyof]:
            net.cancelTask(c)  # nothing that waits is stuck: each is refunded
    assert net.queuedCount() == 0
    assert boa.env.get_balance(net.address) == net.balanceOf(creator) + busy.stake + idle.stake


def test_an_expired_queued_task_the_sweep_passed_by_is_still_cancellable(net, creator, make_node, task):
    """The same cursor, the other way out: the creator takes L back past its deadline."""
    idle = make_node(models=("llama3-8b", "mistral-7b"))
    for _ in range(QUEUE_SCAN + SWEEP_SCAN - 1):
        kit.create_task(net, creator, models=["llama3-8b"], fee=2**60, gpu="tpu-v9", timeout=3600)
    late = kit.create_task(net, creator, models=["llama3-8b"], fee=2, gpu="a100", timeout=30)
    kit.create_task(net, creator, models=["llama3-8b"], fee=1, gpu="a100", timeout=3600)
    with boa.env.prank(idle.addr):
        net.removeModels([b32("mistral-7b")])
    boa.env.time_travel(seconds=60)
    before = net.balanceOf(creator)
    with boa.env.prank(creator):
        net.cancelTask(late)
    assert task(late)["state"] == ABORTED and net.balanceOf(creator) - before == 2
