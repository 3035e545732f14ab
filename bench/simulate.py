"""A simulated network on the real compiled contract: 10,000 nodes, 100,000 tasks.

Every task goes through ``TaskNetwork.vy`` as transactions (createTask, startTask in the
next block, takeQueuedTask where a node's daemon would send it, submitScore,
validateSingleTask, reportResultUploaded); only the nodes' computing is simulated: a
task keeps its node busy for a drawn number of blocks. Arrivals are set so that a chosen
share of the nodes is busy (50%, then 90%: Little's law, arrivals per block = load x
nodes / mean compute blocks), and the run reports, per load, the gas per task, the
selection miss rate (a task queued although an idle node that can run it existed),
the queue wait by fee bucket, the gas per block, and at the end that no task is stranded
(each ended: success, or a refunded end) and that money is conserved (contract balance
== escrow + stakes + what it owes).

Two engines run the same bytecode (titanoboa compiles it: ``bench.gas``'s deployers) on
the same population, tasks and blocks:

- ``boa``: titanoboa's py-evm, every transaction metered as ``bench.gas.Chain.tx``
  meters it (checked there against anvil's receipts within 1%). The gas figures come
  from it. About 10 ms of CPU per transaction here (measured: `agreement`), so 100,000
  tasks (~520,000 transactions) would take it well over an hour: it runs 1,000 nodes.
- ``revm``: the same bytecode in revm (``pyrevm``; revm is the EVM inside anvil), ~0.15 ms
  per call: the full 10,000 nodes and 100,000 tasks fit in minutes. Its state changes
  are a chain's; its gas is not (pyrevm 0.3.7 never closes a transaction: warm slots and
  EIP-2200 original values carry over, so it charges less), so no gas figure is taken
  from it. Block hashes are keccak(str(number)) in both engines, so both pick the same
  nodes: `agreement` runs one simulation on each and requires the same transactions in
  the same order, the same nodes and the same ends.

The network is deployed with no sampling (validation_rate_bps = 0): every task takes the
cheapest valid path to success. ``bench/gas.py`` prices validation by groups.

Run: ``python -m bench.simulate`` (full size, revm), ``--engine boa --nodes 1000 --tasks
5000``, or ``python -m bench --only sim``.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench import gas
from bench.report import Section, console, mean, percentile, table
from gridtask.crypto import keccak, task_commitment, task_id_hash, task_key
from gridtask.types import TaskState

BLOCK_GAS = 30_000_000  # a public chain's block (Ethereum mainnet's limit)
CODE_SIZE_LIMIT = 24_576  # EIP-170; the sim lifts it (titanoboa does not enforce it either)
ENDED_OK = (TaskState.SUCCESS, TaskState.ABORTED, TaskState.ERRORED)  # success or refunded
NODE_IDLE = 1


def block_hash(number: int) -> bytes:
    """Both engines' block hash: revm's empty database answers keccak(decimal number)."""
    return keccak(str(number).encode())


# ---------------------------------------------------------------- engines


@dataclass
class Receipt:
    gas: int
    logs: list[tuple[bytes, ...]]  # each log's topics


class Reverted(Exception):
    """A simulated transaction reverted: the simulation's model of the contract is wrong."""


class Engine(Protocol):
    name: str
    net: str  # the contract's address
    relay: str
    creator: str

    def call(self, sender: str, fn: str, args: tuple[Any, ...], value: int = 0) -> Receipt: ...

    def view(self, fn: str, args: tuple[Any, ...]) -> tuple[Any, ...]: ...

    def set_block(self, number: int, timestamp: int) -> None: ...

    def fund(self, addr: str, amount: int) -> None: ...

    def balance(self, addr: str) -> int: ...


@functools.cache
def _abi() -> dict[str, dict[str, Any]]:
    """TaskNetwork's functions by name, from the same compile as the bytecode."""
    from vyper.compiler.output import build_abi_output

    return {e["name"]: e for e in build_abi_output(gas._deployer().compiler_data) if e["type"] == "function"}


def _types(entries: list[dict[str, Any]]) -> list[str]:
    def one(e: dict[str, Any]) -> str:
        if e["type"].startswith("tuple"):
            return "(" + ",".join(_types(e["components"])) + ")" + e["type"][5:]
        return str(e["type"])

    return [one(e) for e in entries]


@functools.cache
def _codec(fn: str) -> tuple[bytes, list[str], list[str]]:
    """(selector, argument types, return types) of a TaskNetwork function."""
    e = _abi()[fn]
    ins, outs = _types(e["inputs"]), _types(e["outputs"])
    return keccak(f"{fn}({','.join(ins)})".encode())[:4], ins, outs


@functools.cache
def topic(event: str) -> bytes:
    """topic0 of a TaskNetwork event, from the compiled ABI."""
    from vyper.compiler.output import build_abi_output

    for e in build_abi_output(gas._deployer().compiler_data):
        if e["type"] == "event" and e["name"] == event:
            return keccak(f"{event}({','.join(_types(e['inputs']))})".encode())
    raise KeyError(event)


_WORD = {"uint256", "bytes32", "address", "bool"}


def _word(typ: str, v: Any) -> bytes:
    if typ == "bytes32":
        return bytes(v).ljust(32, b"\0")
    if typ == "address":
        return bytes.fromhex(v[2:]).rjust(32, b"\0")
    return int(v).to_bytes(32, "big")


def encode_args(types: list[str], args: tuple[Any, ...]) -> bytes:
    """ABI encoding of words and arrays of words, without eth_abi's per-value checks (the
    simulation's hot path: about a quarter of its time); anything else goes to eth_abi."""
    if not all(t in _WORD or (t.endswith("[]") and t[:-2] in _WORD) for t in types):
        from eth_abi import encode

        return encode(types, args)
    head, tail = [], []
    offset = 32 * len(types)
    for t, v in zip(types, args, strict=True):
        if t.endswith("[]"):
            head.append(offset.to_bytes(32, "big"))
            part = len(v).to_bytes(32, "big") + b"".join(_word(t[:-2], x) for x in v)
            tail.append(part)
            offset += len(part)
        else:
            head.append(_word(t, v))
    return b"".join(head) + b"".join(tail)


def decode_words(types: list[str], data: bytes) -> tuple[Any, ...]:
    """Outputs that are all words (getTask, getNode, balanceOf); else eth_abi."""
    if not all(t in _WORD for t in types):
        from eth_abi import decode

        return tuple(decode(types, data))
    out: list[Any] = []
    for i, t in enumerate(types):
        w = data[32 * i: 32 * i + 32]
        out.append(w if t == "bytes32" else "0x" + w[12:].hex() if t == "address" else int.from_bytes(w, "big"))
    return tuple(out)


class RevmEngine:
    """The compiled contract in revm. Its state changes are a chain's, its gas is not:
    pyrevm (0.3.7) never finalizes a transaction, so warm slots and EIP-2200 original
    values carry from call to call and later calls are charged less."""

    name = "revm"
    exact_gas = False

    def __init__(self) -> None:
        import pyrevm

        self._pyrevm = pyrevm
        self.evm = pyrevm.EVM(env=pyrevm.Env(cfg=pyrevm.CfgEnv(limit_contract_code_size=2 * CODE_SIZE_LIMIT)),
                              gas_limit=BLOCK_GAS)
        deployer = gas.bench_address("deployer")
        self.relay, self.creator = gas.bench_address("relay"), gas.bench_address("creator")
        for a in (deployer, self.relay, self.creator):
            self.fund(a, 10**9 * gas.ETHER)
        verifier = self.evm.deploy(deployer, gas._verifier_deployer().compiler_data.bytecode)
        self.net = self.evm.deploy(deployer, gas._deployer().compiler_data.bytecode
                                   + gas.constructor_args(self.relay, verifier))

    def call(self, sender: str, fn: str, args: tuple[Any, ...], value: int = 0) -> Receipt:
        selector, ins, _ = _codec(fn)
        try:
            self.evm.message_call(sender, self.net, selector + encode_args(ins, args), value=value)
        except RuntimeError as exc:
            raise Reverted(f"{fn} from {sender}: {str(exc)[:300]}") from None
        r = self.evm.result

        return Receipt(int(r.gas_used), [tuple(bytes.fromhex(t[2:]) for t in log.topics) for log in r.logs])

    def view(self, fn: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        selector, ins, outs = _codec(fn)
        out = self.evm.message_call(self.creator, self.net, selector + encode_args(ins, args), is_static=True)
        return decode_words(outs, bytes(out))

    def set_block(self, number: int, timestamp: int) -> None:
        self.evm.set_block_env(self._pyrevm.BlockEnv(number=number, timestamp=timestamp, gas_limit=BLOCK_GAS))

    def fund(self, addr: str, amount: int) -> None:
        self.evm.set_balance(addr, amount)

    def balance(self, addr: str) -> int:
        return int(self.evm.get_balance(addr))


class BoaEngine:
    """The compiled contract in titanoboa, each call metered by ``bench.gas.Chain.tx``."""

    name = "boa"
    exact_gas = True

    def __init__(self) -> None:
        import boa

        self._env = gas.fresh_env()
        self._env.__enter__()
        self.boa = boa
        self.chain = gas.Chain()
        self.net, self.relay, self.creator = str(self.chain.net.address), self.chain.relay, self.chain.creator

    def close(self) -> None:
        self._env.__exit__(None, None, None)

    def call(self, sender: str, fn: str, args: tuple[Any, ...], value: int = 0) -> Receipt:
        try:
            used = self.chain.tx(sender, fn, *args, value=value)
        except Exception as exc:  # boa raises its own error types for a revert
            raise Reverted(f"{fn} from {sender}: {str(exc)[:300]}") from None
        entries = self.chain.net._computation.get_log_entries()
        return Receipt(used, [tuple(t.to_bytes(32, "big") for t in topics) for _, topics, _ in entries])

    def view(self, fn: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        out = getattr(self.chain.net, fn)(*args)
        return tuple(out) if isinstance(out, tuple) else (out,)

    def set_block(self, number: int, timestamp: int) -> None:
        patch = self.boa.env.evm.patch
        patch.block_number, patch.timestamp = number, timestamp
        patch.prev_hashes = [block_hash(number - 1 - d) for d in range(min(256, number))]

    def fund(self, addr: str, amount: int) -> None:
        self.chain.funded(addr, amount)

    def balance(self, addr: str) -> int:
        return int(self.boa.env.get_balance(addr))


ENGINES: dict[str, Any] = {"revm": RevmEngine, "boa": BoaEngine}


# ---------------------------------------------------------------- the simulation


@dataclass
class Config:
    nodes: int = 10_000
    tasks: int = 100_000
    # offered load (arrivals x mean compute ÷ nodes) of each phase; the tasks split evenly.
    # Past 1.0 the queue grows: its fee order shows in the waits by bucket.
    loads: tuple[float, ...] = (0.5, 0.9, 1.1)
    compute_blocks: int = 20  # mean blocks a node computes a task (uniform 1 .. 2x-1)
    block_seconds: int = 12
    seed: int = 1
    engine: str = "revm"


@dataclass(slots=True)
class SimTask:
    req: gas.TaskReq
    phase: int
    created: int  # block of createTask
    key: bytes = b""
    id_hash: bytes = b""
    nonce: bytes = b""
    node: int = -1
    start_call: int = -1  # block of startTask
    started: int = -1  # block its node was assigned
    queued: bool = False
    missed: bool = False  # queued although an idle node that can run it existed
    measured: bool = False
    gas: int = 0
    end: str = ""  # "success" or "refunded"


@dataclass
class Phase:
    load: float
    arrivals: float  # tasks per block
    blocks: list[int] = field(default_factory=list)  # measured blocks
    busy: list[float] = field(default_factory=list)  # share of nodes busy at each measured block's end
    block_gas: list[int] = field(default_factory=list)


@dataclass
class Result:
    config: Config
    phases: list[Phase]
    tasks: list[SimTask]
    gas_by_fn: dict[str, list[int]]
    txs: int
    blocks: int
    join_seconds: float
    seconds: float
    cpu_seconds: float  # this process's CPU time: the machine is shared, its wall time is not ours alone
    stranded: list[str]  # one line per task that did not end (key, state)
    money: dict[str, int]
    node_mismatch: int  # nodes whose on-chain status differs from the model's (all idle at the end)
    empty_takes: int  # takeQueuedTask calls that started nothing
    unattributed_gas: int  # their gas (every other transaction's gas is its task's)
    expired: int
    join_gas: list[int] = field(default_factory=list)
    create_gas: list[int] = field(default_factory=list)
    trace: list[tuple[str, int]] = field(default_factory=list)  # (fn, gas) of every call, if kept


class Simulation:
    """The Python side: which nodes are busy, what each task waits for, the clock."""

    def __init__(self, engine: Any, cfg: Config, keep_trace: bool = False) -> None:
        self.e, self.cfg = engine, cfg
        self.rng = random.Random(cfg.seed * 7919 + 13)
        self.specs = gas.make_population(cfg.nodes, cfg.seed)
        self.index = {s.addr.lower(): i for i, s in enumerate(self.specs)}
        self.busy = bytearray(cfg.nodes)
        self.count: dict[str, int] = defaultdict(int)
        self.idle: dict[str, dict[int, None]] = defaultdict(dict)  # model -> idle nodes (ordered)
        for i, s in enumerate(self.specs):
            for m in s.models:
                self.count[m] += 1
                self.idle[m][i] = None
        self.tasks: list[SimTask] = []
        self.by_key: dict[bytes, SimTask] = {}
        self.queue: dict[bytes, None] = {}  # queued keys, oldest first
        self.due: dict[int, list[SimTask]] = defaultdict(list)
        self.gas_by_fn: dict[str, list[int]] = defaultdict(list)
        self.block = 1
        self.block_gas = 0
        self.txs = self.empty_takes = self.expired = self.unattributed = 0
        self.trace: list[tuple[str, int]] | None = [] if keep_trace else None
        self.t_started = topic("TaskStarted")
        self.t_queued = topic("TaskQueued")
        self.t_aborted = topic("TaskAborted")
        self.t_success = topic("TaskSuccess")
        self.b32 = {m: gas.b32(m) for m in gas.MODEL_POOL + [g for g, _ in gas.GPU_KINDS]}

    # -- transactions

    def tx(self, sender: str, fn: str, *args: Any, value: int = 0) -> Receipt:
        r = self.e.call(sender, fn, args, value)
        self.txs += 1
        self.block_gas += r.gas
        self.gas_by_fn[fn].append(r.gas)
        if self.trace is not None:
            self.trace.append((fn, r.gas))
        return r

    def events(self, r: Receipt, charge: SimTask | None = None) -> SimTask | None:
        """Apply a receipt's events to the model; returns the task it started, if any."""
        started = None
        for topics in r.logs:
            t0 = topics[0]
            if t0 == self.t_started:
                task = self.by_key[topics[1]]
                node = self.index["0x" + topics[2][12:].hex()]
                self.assign(task, node)
                started = task
            elif t0 == self.t_queued:
                task = self.by_key[topics[1]]
                task.queued = True
                self.queue[task.key] = None
            elif t0 == self.t_aborted:  # a queued task past its deadline, ended by a scan
                task = self.by_key[topics[1]]
                self.queue.pop(task.key, None)
                task.end = "refunded"
                self.expired += 1
            elif t0 == self.t_success:
                self.by_key[topics[1]].end = "success"
        return started

    def assign(self, task: SimTask, node: int) -> None:
        if self.busy[node]:
            raise AssertionError(f"the contract started a task on node {node}, which the model has busy")
        if not self.specs[node].matches(task.req):
            raise AssertionError("the contract picked a node that cannot run the task")
        self.queue.pop(task.key, None)
        task.node, task.started = node, self.block
        self.set_busy(node, True)
        self.due[self.block + self.rng.randint(1, 2 * self.cfg.compute_blocks - 1)].append(task)

    def set_busy(self, node: int, busy: bool) -> None:
        self.busy[node] = busy
        for m in self.specs[node].models:
            if busy:
                self.idle[m].pop(node, None)
            else:
                self.idle[m][node] = None

    def key_model(self, req: gas.TaskReq) -> str:
        """The contract's rule: the task's model served by the fewest nodes."""
        return min(req.models, key=lambda m: self.count[m])

    def idle_match(self, req: gas.TaskReq) -> int | None:
        for i in self.idle[self.key_model(req)]:
            if self.specs[i].matches(req):
                return i
        return None

    # -- a task's steps

    def create(self, req: gas.TaskReq, phase: int, measured: bool) -> SimTask:
        n = len(self.tasks)
        task_id = keccak(b"sim-task" + self.cfg.seed.to_bytes(8, "big") + n.to_bytes(8, "big"))
        t = SimTask(req, phase, self.block, measured=measured, id_hash=task_id_hash(task_id),
                    nonce=keccak(b"sim-nonce" + task_id))
        commitment = task_commitment(task_id, t.nonce)
        t.key = task_key(self.e.creator, commitment)
        self.tasks.append(t)
        self.by_key[t.key] = t
        r = self.tx(self.e.creator, "createTask", 0, commitment, t.nonce, [self.b32[m] for m in req.models],
                    req.min_vram, gas.b32(req.gpu), gas.PARAMS_HASH, req.size, gas.TIMEOUT, False, value=req.fee)
        t.gas += r.gas
        return t

    def start(self, t: SimTask) -> None:
        t.start_call = self.block
        r = self.tx(self.e.creator, "startTask", t.key, [self.b32[m] for m in t.req.models], t.req.min_vram,
                    gas.b32(t.req.gpu), [], False)
        t.gas += r.gas
        self.events(r)
        if t.node < 0:
            idle = self.idle_match(t.req)
            if idle is not None:  # a miss: that node's daemon sees TaskQueued and claims work
                t.missed = True
                self.take(idle)

    def take(self, node: int) -> None:
        r = self.tx(self.specs[node].addr, "takeQueuedTask")
        started = self.events(r)
        if started is None:
            self.empty_takes += 1
            self.unattributed += r.gas
        else:
            started.gas += r.gas

    def finish(self, t: SimTask) -> None:
        node = t.node
        r = self.tx(self.specs[node].addr, "submitScore", t.key, gas.SCORE, gas.RESULT_HASH)
        t.gas += r.gas
        self.set_busy(node, False)  # scored, it is free, and may have taken queued work:
        self.events(r)
        t.gas += self.tx(self.e.creator, "validateSingleTask", t.key, t.id_hash, t.nonce).gas
        r = self.tx(self.e.relay, "reportResultUploaded", t.key)
        t.gas += r.gas
        self.events(r)

    def sweep(self) -> None:
        """Daemons: an idle node claims a queued task it can run (answers cached per
        requirement within a sweep: claims only make fewer nodes idle)."""
        none_for: set[gas.TaskReq] = set()
        for key in list(self.queue):
            t = self.by_key[key]
            if key not in self.queue or t.req in none_for:
                continue
            node = self.idle_match(t.req)
            if node is None:
                none_for.add(t.req)
            else:
                self.take(node)

    # -- the clock

    def next_block(self) -> None:
        self.block += 1
        self.block_gas = 0
        self.e.set_block(self.block, 1_700_000_000 + self.block * self.cfg.block_seconds)

    def run(self) -> Result:
        cfg = self.cfg
        t0, c0 = time.perf_counter(), time.process_time()
        self.e.set_block(self.block, 1_700_000_000 + self.block * cfg.block_seconds)
        join_gas = []
        for s in self.specs:
            self.e.fund(s.addr, s.stake + 10 * gas.ETHER)
            join_gas.append(self.tx(s.addr, "join", gas.b32(s.gpu), s.vram, [self.b32[m] for m in s.models],
                                    s.public_key, 1, value=s.stake).gas)
        join_seconds = time.perf_counter() - t0
        reqs = gas.make_tasks(self.specs, cfg.tasks, cfg.seed + 5)
        per_phase = [cfg.tasks // len(cfg.loads)] * len(cfg.loads)
        per_phase[-1] += cfg.tasks - sum(per_phase)
        phases = [Phase(load, load * cfg.nodes / cfg.compute_blocks) for load in cfg.loads]
        warmup = 2 * cfg.compute_blocks  # a phase's first blocks fill or drain the network
        to_start: list[SimTask] = []
        made, phase, in_phase, owed = 0, 0, 0, 0.0
        self.next_block()
        limit = self.block + 100 * cfg.compute_blocks + 10 * cfg.tasks
        while made < cfg.tasks or to_start or self.unfinished():
            if self.block > limit:
                break
            for t in self.due.pop(self.block, []):
                self.finish(t)
            starting, to_start = to_start, []
            for t in starting:
                self.start(t)
            self.sweep()
            if made < cfg.tasks:
                ph = phases[phase]
                measured = in_phase >= warmup
                owed += ph.arrivals
                while owed >= 1 and made < cfg.tasks and per_phase[phase] > 0:
                    owed -= 1
                    to_start.append(self.create(reqs[made], phase, measured))
                    made += 1
                    per_phase[phase] -= 1
                if measured:
                    ph.blocks.append(self.block)
                    ph.busy.append(sum(self.busy) / cfg.nodes)
                    ph.block_gas.append(self.block_gas)
                in_phase += 1
                if per_phase[phase] == 0 and phase + 1 < len(phases):
                    phase, in_phase, owed = phase + 1, 0, 0.0
            elif not self.due and self.queue:
                self.expire_all()
            self.next_block()
        stranded, money, mismatch = self.check()
        return Result(cfg, phases, self.tasks, dict(self.gas_by_fn), self.txs, self.block, join_seconds,
                      time.perf_counter() - t0, time.process_time() - c0, stranded, money, mismatch,
                      self.empty_takes, self.unattributed,
                      self.expired,
                      join_gas=join_gas, create_gas=list(self.gas_by_fn.get("createTask", [])),
                      trace=self.trace or [])

    def unfinished(self) -> bool:
        return bool(self.due) or bool(self.queue)

    def expire_all(self) -> None:
        """Nothing left to run but queued tasks no idle node can take: once past their
        deadline the creator ends them (refunded)."""
        late = self.block + gas.TIMEOUT // self.cfg.block_seconds + 2
        while self.block < late:
            self.next_block()
        for key in list(self.queue):
            r = self.tx(self.e.creator, "abortTask", key, "sim: queue deadline passed")
            self.by_key[key].gas += r.gas
            self.events(r)

    # -- the end: every task ended, money conserved, the model matches the chain

    def check(self) -> tuple[list[str], dict[str, int], int]:
        stranded, escrow, fees_paid, refunded = [], 0, 0, 0
        for t in self.tasks:
            creator, node, fee, state, *_ = self.e.view("getTask", (t.key,))
            if state not in ENDED_OK:
                stranded.append(f"{t.key.hex()[:12]} state {TaskState(state).name}")
                escrow += fee
            elif state == TaskState.SUCCESS:
                fees_paid += fee
            else:
                refunded += fee
        stakes = owed_nodes = mismatch = 0
        for i, s in enumerate(self.specs):
            status, stake, *_ = self.e.view("getNode", (s.addr,))
            stakes += stake
            owed_nodes += self.e.view("balanceOf", (s.addr,))[0]
            mismatch += (status == NODE_IDLE) == bool(self.busy[i])
        owed_creator = self.e.view("balanceOf", (self.e.creator,))[0]
        owed_relay = self.e.view("balanceOf", (self.e.relay,))[0]
        money = dict(contract=self.e.balance(self.e.net), escrow=escrow, stakes=stakes,
                     owed=owed_nodes + owed_creator + owed_relay, owed_nodes=owed_nodes,
                     owed_creator=owed_creator, fees_paid=fees_paid, refunded=refunded)
        return stranded, money, mismatch


def simulate(cfg: Config, keep_trace: bool = False) -> Result:
    engine = ENGINES[cfg.engine]()
    try:
        return Simulation(engine, cfg, keep_trace).run()
    finally:
        if hasattr(engine, "close"):
            engine.close()


# ---------------------------------------------------------------- what the run shows


def money_gap(r: Result) -> int:
    """contract balance - (escrow + stakes + owed): 0 when money is conserved."""
    m = r.money
    return m["contract"] - (m["escrow"] + m["stakes"] + m["owed"])


def bucket(t: SimTask) -> int:
    """The contract's fee bucket: floor(log2(fee per unit))."""
    return max(0, (t.req.fee // t.req.size).bit_length() - 1)


def phase_stats(r: Result, i: int) -> dict[str, Any]:
    ph = r.phases[i]
    ts = [t for t in r.tasks if t.phase == i and t.measured]
    misses = sum(t.missed for t in ts)
    waits = [t.started - t.start_call for t in ts if t.started >= 0]
    return dict(load=ph.load, arrivals=ph.arrivals, tasks=len(ts), busy=mean(ph.busy), misses=misses,
                miss_rate=misses / len(ts) if ts else float("nan"), queued=sum(t.queued for t in ts),
                wait_avg=mean(waits), wait_p99=percentile(waits, 99), wait_max=max(waits, default=0),
                gas_avg=mean([t.gas for t in ts]), gas_p99=percentile([t.gas for t in ts], 99),
                gas_max=max((t.gas for t in ts), default=0), block_gas_avg=mean(ph.block_gas),
                block_gas_max=max(ph.block_gas, default=0), blocks=len(ph.blocks))


def bucket_rows(r: Result, i: int) -> list[list[Any]]:
    by: dict[int, list[SimTask]] = defaultdict(list)
    for t in r.tasks:
        if t.phase == i and t.measured:
            by[bucket(t)].append(t)
    rows = []
    for b in sorted(by, reverse=True):
        ts = by[b]
        waits = [t.started - t.start_call for t in ts if t.started >= 0]
        queued = [t.started - t.start_call for t in ts if t.queued and t.started >= 0]
        rows.append([b, len(ts), f"{sum(t.queued for t in ts) / len(ts):.1%}", f"{mean(waits):.2f}",
                     f"{mean(queued):.1f}" if queued else "-", percentile(waits, 99), max(waits, default=0),
                     sum(t.end == "refunded" for t in ts)])
    return rows


def report(r: Result, sec: Section, limit_s: float | None) -> None:
    """Tables and checks of one run. Gas figures only from an engine that meters
    transactions as a chain does (titanoboa: `BoaEngine.exact_gas`)."""
    cfg = r.config
    bs = cfg.block_seconds
    exact = ENGINES[cfg.engine].exact_gas
    done = [t for t in r.tasks if t.end == "success"]
    per_task = [t.gas for t in done]
    label = f"{cfg.nodes:,} nodes, {cfg.tasks:,} tasks ({cfg.engine})"
    rows = []
    for i in range(len(r.phases)):
        s = phase_stats(r, i)
        row = [f"{s['load']:.0%}", f"{s['arrivals']:.0f}", f"{s['busy']:.1%}", s["tasks"],
               f"{s['misses']} = {s['miss_rate']:.2%}", f"{s['queued'] / max(1, s['tasks']):.1%}",
               f"{s['wait_avg']:.2f} / {s['wait_p99']} / {s['wait_max']}"]
        if exact:
            row += [f"{s['gas_avg']:,.0f} / {s['gas_p99']:,} / {s['gas_max']:,}",
                    f"{s['block_gas_avg'] / 1e6:,.1f}M / {s['block_gas_max'] / 1e6:,.1f}M"]
        rows.append(row)
        where = f"{s['load']:.0%} offered load, {cfg.nodes:,} nodes"
        sec.info(f"selection miss rate, {where}", f"{s['misses']}/{s['tasks']} = {s['miss_rate']:.2%}",
                 s["miss_rate"], note=f"{cfg.engine}; {s['busy']:.1%} of nodes busy (measured); queued although "
                                      "an idle node that can run it existed")
        sec.info(f"queue wait, {where} (avg / p99 / max)",
                 f"{s['wait_avg']:.2f} / {s['wait_p99']} / {s['wait_max']} blocks", s["wait_avg"],
                 note=f"startTask to a node, {bs} s blocks; {s['queued']} of {s['tasks']} queued")
        if exact:
            sec.info(f"gas per task, {where} (avg / p99 / max)",
                     f"{s['gas_avg']:,.0f} / {s['gas_p99']:,} / {s['gas_max']:,}", s["gas_avg"],
                     note="every transaction of the task, incl. the takeQueuedTask that started it")
    cols = ["offered load", "tasks/block", "busy (measured)", "tasks", "misses", "queued", "wait blocks avg/p99/max"]
    if exact:
        cols += ["gas per task avg/p99/max", "gas per block avg/max"]
    sec.tables.append(table(
        f"simulation, {label}: per load (measured after {2 * cfg.compute_blocks} blocks of warm-up; tasks "
        f"compute 1-{2 * cfg.compute_blocks - 1} blocks of {bs} s)", cols, rows))
    for i, ph in enumerate(r.phases):
        sec.tables.append(table(
            f"{label}: queue wait by fee bucket at {ph.load:.0%} offered load (bucket = floor(log2(fee per "
            "unit, wei)), best paid first; wait in blocks)",
            ["bucket", "tasks", "queued", "wait avg", "wait avg if queued", "p99", "max", "refunded"],
            bucket_rows(r, i)))
    if exact:
        fn_rows = [[fn, len(v), f"{mean(v):,.0f}", f"{percentile(v, 99):,}", f"{max(v):,}"]
                   for fn, v in sorted(r.gas_by_fn.items()) if v]
        sec.tables.append(table(f"simulation, {label}: gas per transaction", ["call", "n", "avg", "p99", "max"],
                                fn_rows))
        sec.info(f"gas per completed task, {cfg.nodes:,} nodes, all loads (avg / p99 / max)",
                 f"{mean(per_task):,.0f} / {percentile(per_task, 99):,} / {max(per_task):,}", mean(per_task),
                 note=f"{len(per_task):,} tasks, titanoboa, metered as bench/gas.py meters")
    sec.check(f"tasks stranded, {label}", len(r.stranded), "<=", 0,
              note=f"{sum(t.end == 'success' for t in r.tasks):,} succeeded, "
                   f"{sum(t.end == 'refunded' for t in r.tasks):,} refunded (queue deadline); none may be left "
                   "created, queued, started, scored or validated" + (f"; e.g. {r.stranded[0]}" if r.stranded else ""))
    m = r.money
    sec.check(f"money: contract balance - (escrow + stakes + owed), wei, {label}", abs(money_gap(r)), "<=", 0,
              note=f"balance {m['contract']:,}; stakes {m['stakes']:,}; owed {m['owed']:,}; "
                   f"escrow {m['escrow']:,}")
    sec.check(f"model vs chain: nodes whose status differs, {label}", r.node_mismatch, "<=", 0,
              note="every node idle at the end, as the simulation's model has it")
    if limit_s is not None:
        sec.check(f"simulation time, {label}", r.seconds, "<=", limit_s, fmt="{:,.0f} s",
                  note=f"{r.cpu_seconds:,.0f} s of CPU (load average {os.getloadavg()[0]:.1f} on "
                       f"{os.cpu_count()} cores); {r.txs:,} transactions ({r.txs / r.seconds:,.0f}/s), "
                       f"{r.blocks:,} blocks; {cfg.nodes:,} joins {r.join_seconds:,.0f} s")


def agreement(cfg: Config) -> dict[str, Any]:
    """The same simulation on titanoboa and on revm: the same transactions in the same
    order, the same nodes picked (both engines hash blocks alike), the same ends. revm's
    gas is compared only to show why it is not used."""
    out = {}
    for name in ("boa", "revm"):
        t0 = time.perf_counter()
        r = simulate(Config(**{**cfg.__dict__, "engine": name}), keep_trace=True)
        out[name] = (r, time.perf_counter() - t0)
    (a, ta), (b, tb) = out["boa"], out["revm"]
    pairs = list(zip(a.trace, b.trace, strict=False))
    same_calls = len(a.trace) == len(b.trace) and all(x[0] == y[0] for x, y in pairs)
    under = [(x[1] - y[1]) / x[1] for x, y in pairs if x[0] == y[0]]
    return dict(nodes=cfg.nodes, tasks=cfg.tasks, txs=(len(a.trace), len(b.trace)), same_calls=same_calls,
                nodes_same=[t.node for t in a.tasks] == [t.node for t in b.tasks],
                ends_same=[t.end for t in a.tasks] == [t.end for t in b.tasks],
                revm_gas_under_avg=mean(under), revm_gas_under_max=max(under, default=float("nan")),
                boa_seconds=ta, revm_seconds=tb, boa_per_tx=a.cpu_seconds / max(1, a.txs),
                revm_per_tx=b.cpu_seconds / max(1, b.txs), boa_wall_per_tx=ta / max(1, a.txs),
                boa=a, revm=b)


TX_PER_TASK = 5.2  # createTask, startTask, submitScore, validateSingleTask, reportResultUploaded (+ claims)


def run(quick: bool = False, seed: int = 1, full: bool = False) -> Section:
    """The bench section `sim`: gas per task from titanoboa on a network that fits (200
    nodes; 400 with `full`, 60 `quick`), then a larger network on revm (same transactions,
    checked). `full` (``--only sim``): 10,000 nodes and 100,000 tasks; in the whole bench
    1,000 and 10,000; `quick`: 300 and 3,000."""
    sec = Section("sim")
    # titanoboa: 50% and 90% load, each phase its warm-up (2 x load x nodes tasks) + ~300 measured
    n_gas = 60 if quick else 400 if full else 200
    small = Config(nodes=n_gas, tasks=2 * (2 * n_gas + (150 if quick else 300)), loads=(0.5, 0.9),
                   compute_blocks=4, seed=seed)
    big = Config(nodes=10_000, tasks=100_000, seed=seed) if full else \
        Config(nodes=300, tasks=3_000, compute_blocks=10, seed=seed) if quick else \
        Config(nodes=1_000, tasks=10_000, seed=seed)
    ag = agreement(small)
    a = ag["boa"]
    report(a, sec, None)
    sec.check("revm vs titanoboa: same transactions, same nodes, same ends",
              float(not (ag["same_calls"] and ag["nodes_same"] and ag["ends_same"])), "<=", 0, fmt="{:.0f}",
              target="all the same", note=f"{small.nodes:,} nodes, {small.tasks:,} tasks, {ag['txs'][0]:,} "
              f"transactions on each; revm's gas is not used: pyrevm keeps one transaction open across calls "
              f"(warm slots, EIP-2200 originals), {ag['revm_gas_under_avg']:.1%} under on average, up to "
              f"{ag['revm_gas_under_max']:.1%}")
    sec.info("titanoboa vs revm: CPU per transaction",
             f"{ag['boa_per_tx'] * 1000:.1f} ms vs {ag['revm_per_tx'] * 1000:.2f} ms", ag["boa_per_tx"],
             note=f"{big.tasks:,} tasks (~{TX_PER_TASK * big.tasks:,.0f} transactions) would take titanoboa "
                  f"~{ag['boa_per_tx'] * TX_PER_TASK * big.tasks / 60:,.0f} min of CPU (wall here: "
                  f"{ag['boa_wall_per_tx'] * 1000:.0f} ms per transaction, ~"
                  f"{ag['boa_wall_per_tx'] * TX_PER_TASK * big.tasks / 60:,.0f} min)")
    r = simulate(big)
    report(r, sec, 600.0)
    sec.data = dict(
        gas_run=dict(config=small.__dict__, phases=[phase_stats(a, i) for i in range(len(a.phases))],
                     gas_by_fn={fn: dict(n=len(v), avg=mean(v), p99=percentile(v, 99), max=max(v))
                                for fn, v in a.gas_by_fn.items() if v},
                     per_task=_spread([t.gas for t in a.tasks if t.end == "success"])),
        config=big.__dict__, seconds=r.seconds, cpu_seconds=r.cpu_seconds, txs=r.txs, blocks=r.blocks,
        join_seconds=r.join_seconds,
        phases=[phase_stats(r, i) for i in range(len(r.phases))], money=r.money, stranded=r.stranded[:20],
        empty_takes=r.empty_takes, expired=r.expired,
        agreement={k: v for k, v in ag.items() if k not in ("boa", "revm")},
    )
    return sec


def _spread(xs: list[int]) -> dict[str, float]:
    return dict(n=len(xs), avg=mean(xs), p99=percentile(xs, 99), max=max(xs, default=0))


def _print(sec: Section) -> None:
    from bench.report import checks_table

    for tbl in sec.tables:
        console.print(tbl)
    console.print(checks_table(f"{sec.name}: targets", sec.checks))


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--engine", choices=sorted(ENGINES), default="revm")
    p.add_argument("--compute-blocks", type=int, default=20, help="mean blocks a node computes a task")
    p.add_argument("--loads", default="0.5,0.9,1.1", help="offered loads, one phase each")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=float, default=600.0, help="seconds the run may take")
    a = p.parse_args(list(argv) if argv is not None else None)
    cfg = Config(nodes=a.nodes, tasks=a.tasks, loads=tuple(float(x) for x in a.loads.split(",")),
                 compute_blocks=a.compute_blocks, seed=a.seed, engine=a.engine)
    sec = Section("sim")
    with console.status(f"simulating {cfg.nodes:,} nodes, {cfg.tasks:,} tasks on {cfg.engine}..."):
        r = simulate(cfg)
    report(r, sec, a.limit)
    _print(sec)
    return 0 if all(c.passed is not False for c in sec.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
