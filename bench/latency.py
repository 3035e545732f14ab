"""End to end on a real devnet (anvil, the contract, the relay, echo nodes as processes).

Latency: sequential echo tasks, each through its whole life (``submit`` + ``result``),
interleaved with the baseline: 4 pre-signed bare ETH transfers sent and awaited one
after the other through the same kind of client (``ChainClient``'s web3: send the raw
transaction, poll for the receipt on ChainClient's schedule). A task needs 4 transactions
(createTask, submitScore, validateSingleTask, reportResultUploaded), so 4 sequential bare
transactions are the floor the chain itself sets.

Every stage of every task is timed: the client's calls are wrapped (createTask receipt,
parameters uploaded, download started, result returned) and an independent observer
follows the contract's events over WebSocket (TaskStarted, TaskScoreReady,
TaskValidated, TaskSuccess first seen).

Throughput: 8 applications (8 funded identities, one Client each) run echo tasks back to
back at the same time, against the bare transaction rate of 8 concurrent senders measured
on the same chain just before and just after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.report import Section, mean, median, ms, percentile, table

ETHER = 10**18
# Every account the bench touches gets this much: ChainClient's gas price runs away on a
# devnet (see gas_price_gwei), and an account that runs dry stalls a run for 60 s per call.
PLENTY = 10**12 * ETHER
SINK = "0x000000000000000000000000000000000000dEaD"
EVENTS = ("TaskCreated", "TaskStarted", "TaskQueued", "TaskScoreReady", "TaskValidated", "TaskSuccess")

now = time.perf_counter


# ---------------------------------------------------------------- bare transactions


class BareSender:
    """One funded account whose ETH transfers are signed up front (eth_account)."""

    def __init__(self, net: Any, count: int) -> None:
        from gridtask.chain.client import ChainClient
        from gridtask.keys import Identity

        self.identity = Identity.generate()
        net.chain.fund(self.identity.address, PLENTY)
        self.client = ChainClient(net.config.rpc_url, net.config.contract, self.identity)
        self.count = count
        self.raw: list[bytes] = []

    async def sign(self) -> None:
        from eth_account import Account

        w3 = self.client.w3
        acct = Account.from_key(self.identity.private_key)
        chain_id = await w3.eth.chain_id
        price = (await w3.eth.gas_price) * 2
        nonce = await w3.eth.get_transaction_count(acct.address, "pending")
        self.raw = [bytes(acct.sign_transaction({
            "to": SINK, "value": 1, "gas": 21000, "gasPrice": price, "nonce": nonce + i, "chainId": chain_id,
        }).raw_transaction) for i in range(self.count)]

    async def send(self, raw: bytes) -> float:
        """Send one and poll for its receipt as ChainClient._wait does; seconds it took."""
        from gridtask.retry import RECEIPT_WAIT

        w3 = self.client.w3
        t = now()
        tx_hash = await w3.eth.send_raw_transaction(raw)
        receipt = await RECEIPT_WAIT.call(lambda: w3.eth.get_transaction_receipt(tx_hash))
        assert receipt["status"] == 1
        return now() - t

    async def send_next(self, n: int) -> float:
        """The next n transfers, one after the other; total seconds."""
        total = 0.0
        for _ in range(n):
            total += await self.send(self.raw.pop(0))
        return total

    async def close(self) -> None:
        await self.client.aclose()


async def bare_rate(net: Any, senders: int, per_sender: int) -> tuple[float, float]:
    """(transactions per second, seconds) of `senders` accounts sending at once."""
    pool = [BareSender(net, per_sender) for _ in range(senders)]
    try:
        await asyncio.gather(*(s.sign() for s in pool))
        t = now()
        await asyncio.gather(*(s.send_next(per_sender) for s in pool))
        elapsed = now() - t
        return senders * per_sender / elapsed, elapsed
    finally:
        await asyncio.gather(*(s.close() for s in pool))


# ---------------------------------------------------------------- observing a task's life


class Observer:
    """Follows the contract's events over WebSocket; first-seen time of each per task."""

    def __init__(self, net: Any) -> None:
        from gridtask.chain.client import ChainClient
        from gridtask.chain.events import EventFollower
        from gridtask.keys import Identity

        self.chain = ChainClient(net.config.rpc_url, net.config.contract, Identity.generate())
        self.follower = EventFollower(self.chain, ws_url=net.config.ws_url)
        self.seen: dict[bytes, dict[str, float]] = defaultdict(dict)
        self.tx: dict[bytes, dict[str, bytes]] = defaultdict(dict)
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.follower.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.follower.connected.wait(), 10)
        self._pump = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.follower:
            c = event.commitment
            if c is not None and event.name in EVENTS:
                self.seen[c].setdefault(event.name, now())
                self.tx[c].setdefault(event.name, event.transaction_hash)

    async def gas_of(self, commitment: bytes) -> int | None:
        """Receipt gasUsed of the task's four transactions on the real chain."""
        names = ("TaskCreated", "TaskScoreReady", "TaskValidated", "TaskSuccess")
        hashes = self.tx.get(commitment, {})
        if not all(n in hashes for n in names):
            return None
        total = 0
        for n in names:
            receipt = await self.chain.w3.eth.get_transaction_receipt(hashes[n])
            total += int(receipt["gasUsed"])
        return total

    async def stop(self) -> None:
        if self._pump:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        await self.follower.stop()
        await self.chain.aclose()


def count_rpc(w3: Any, counter: Counter[str]) -> None:
    """Count the JSON-RPC requests a web3 instance puts on the wire, by method."""
    provider = w3.provider
    original = getattr(provider, "_make_request", None)
    if original is None:
        return

    async def counted(method: str, data: Any) -> Any:
        counter[str(method)] += 1
        return await original(method, data)

    provider._make_request = counted


def instrument(client: Any, marks: dict[bytes, dict[str, float]]) -> None:
    """Wrap an open Client's steps to time them (its private methods; skipped if renamed)."""
    from gridtask.crypto import task_key

    chain = client.chain
    transact = chain._transact  # every typed contract call sends through it

    async def timed_transact(function: str, args: list[Any], **kw: Any) -> Any:
        # createTask names the commitment; the task's key on chain (and in its events) binds the creator
        key = task_key(chain.account, args[1]) if function == "createTask" else (args[0] if args else b"")
        t = now()
        out = await transact(function, args, **kw)
        if isinstance(key, bytes):
            marks[key][f"{function}.start"] = t
            marks[key][f"{function}.end"] = now()
        return out

    chain._transact = timed_transact  # type: ignore[method-assign]
    for name, mark in (("_upload_params", "params_uploaded"), ("_download", "downloaded")):
        original = getattr(client, name, None)
        if original is None:
            continue

        def wrap(original: Any = original, mark: str = mark) -> Any:
            async def wrapped(handle: Any, *args: Any, **kw: Any) -> Any:
                marks[handle.commitment][mark + ".start"] = now()
                out = await original(handle, *args, **kw)
                marks[handle.commitment][mark] = now()
                return out
            return wrapped

        setattr(client, name, wrap())
    relay = client.relay
    for name in ("upload_params", "download_result"):
        original = getattr(relay, name, None)
        if original is None:
            continue

        def wrap_relay(original: Any = original, name: str = name) -> Any:
            async def wrapped(commitment: bytes, *args: Any, **kw: Any) -> Any:
                marks[commitment].setdefault(f"relay.{name}.first", now())
                marks[commitment][f"relay.{name}.start"] = now()
                marks[commitment][f"relay.{name}.tries"] = marks[commitment].get(f"relay.{name}.tries", 0) + 1
                out = await original(commitment, *args, **kw)
                marks[commitment][f"relay.{name}.end"] = now()
                return out
            return wrapped

        setattr(relay, name, wrap_relay())


async def one_task(client: Any, marks: dict[bytes, dict[str, float]], timeout: float = 60,
                   node_of: dict[bytes, str] | None = None) -> tuple[bytes, float]:
    """What Client.run does (submit, then result), timed from before submit."""
    from gridtask.sdk import TaskType

    t0 = now()
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "x"})
    marks[handle.commitment]["t0"] = t0
    marks[handle.commitment]["submitted"] = now()
    result = await client.result(handle, timeout=timeout)
    marks[handle.commitment]["done"] = now()
    if node_of is not None:
        node_of[handle.commitment] = handle.node
    assert result == {"echo": "x"}, result
    return handle.commitment, now() - t0


# Stage = (label, start mark, end mark); "ev:" marks are the observer's first sight.
STAGES = [
    ("1 app: submit (createTask sent → receipt)", "t0", "submitted"),
    ("   of which: createTask tx → receipt", "createTask.start", "createTask.end"),
    ("2 app: TaskStarted → params on relay", "submitted", "params_uploaded"),
    ("   of which: getTask + getNode RPCs, seal", "submitted", "relay.upload_params.first"),
    ("   of which: signed PUT to relay (verify, getTask, fsync)", "relay.upload_params.start",
     "relay.upload_params.end"),
    ("3 node: fetch params, run, submitScore → TaskScoreReady seen", "params_uploaded", "ev:TaskScoreReady"),
    ("4 app: TaskScoreReady → TaskValidated seen", "ev:TaskScoreReady", "ev:TaskValidated"),
    ("   of which: wake, getTask", "ev:TaskScoreReady", "validateSingleTask.start"),
    ("   of which: validateSingleTask tx → receipt", "validateSingleTask.start", "validateSingleTask.end"),
    ("5 node+relay: TaskValidated → TaskSuccess seen (upload, report)", "ev:TaskValidated", "ev:TaskSuccess"),
    ("6 app: TaskSuccess → result checked", "ev:TaskSuccess", "done"),
    ("   of which: wake, getTask", "ev:TaskSuccess", "downloaded.start"),
    ("   of which: signed GET from relay (verify, getTask)", "relay.download_result.start",
     "relay.download_result.end"),
]


def stage_times(marks: dict[str, float], seen: dict[str, float]) -> dict[str, float]:
    def at(name: str) -> float | None:
        return seen.get(name[3:]) if name.startswith("ev:") else marks.get(name)

    out = {}
    for label, a, b in STAGES:
        ta, tb = at(a), at(b)
        out[label] = (tb - ta) if ta is not None and tb is not None else float("nan")
    return out


# ---------------------------------------------------------------- devnets


@contextlib.asynccontextmanager
async def devnet(nodes: int, models: list[str], tag: str):
    from gridtask.devnet import Devnet

    home = Path(tempfile.mkdtemp(prefix=f"gridtask-bench-{tag}-"))
    net = Devnet(nodes=nodes, node_models=models, home=home)
    t = now()
    try:
        await net.start()
        await net.wait_nodes(timeout=300)
        net.bench_ready_s = now() - t  # type: ignore[attr-defined]
        for ident in [net.relay_identity, *net.node_identities]:
            net.chain.fund(ident.address, PLENTY)
        net.chain.fund(_address_of_key(net.config.private_key), PLENTY)
        yield net
    finally:
        net.stop()
        shutil.rmtree(home, ignore_errors=True)


def _address_of_key(key: str | SecretStr) -> str:
    from gridtask.keys import Identity

    return Identity.from_hex(key).address


def gas_price_gwei(net: Any) -> float:
    """eth_gasPrice now. ChainClient signs with 2× this and refreshes it every 15 s; where
    the chain's suggestion follows recent transactions' prices (anvil, base fee near 0),
    that doubles it at every refresh."""
    from gridtask.chain.anvil import rpc_call

    return int(str(rpc_call(net.chain.url, "eth_gasPrice", [])), 16) / 1e9


def vm_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds) of every process we can read."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU seconds spent by each part of the devnet (process trees) and by this process."""

    def __init__(self, net: Any) -> None:
        self.groups: dict[str, list[int]] = defaultdict(list)
        self.groups["anvil"].append(net.chain.proc.pid)
        self.groups["bench (apps)"].append(os.getpid())
        for name, proc in net.processes.items():
            self.groups["relay" if name == "relay" else "nodes"].append(proc.pid)
            if name.startswith("node"):
                self.groups["_n:" + name].append(proc.pid)

    def snapshot(self) -> dict[str, float]:
        table = _proc_table()
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (ppid, _) in table.items():
            children[ppid].append(pid)
        out = {}
        for group, roots in self.groups.items():
            total, stack = 0.0, list(roots)
            while stack:
                pid = stack.pop()
                if pid in table:
                    total += table[pid][1]
                    if group != "bench (apps)":  # this process's children are the devnet's
                        stack.extend(children.get(pid, []))
            out[group] = total
        busy, total = _machine_busy()
        out["_busy"], out["_total"] = busy, total
        out["_wall"] = now()
        return out

    @staticmethod
    def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        d = {k: b[k] - a[k] for k in a}
        cores = os.cpu_count() or 1
        d["machine busy"] = d.pop("_busy") / d.pop("_total") if d.get("_total") else float("nan")
        d["cores"] = cores
        return d


def cpu_row(label: str, d: dict[str, float], tasks: int) -> list[str]:
    wall = d["_wall"]
    parts = [f"{d[k] / tasks * 1000:,.0f}" for k in ("anvil", "relay", "nodes", "bench (apps)")]
    used = sum(d[k] for k in ("anvil", "relay", "nodes", "bench (apps)"))
    return [label, *parts, f"{used / tasks * 1000:,.0f}", f"{used / wall:.2f} of {d['cores']}",
            f"{d['machine busy']:.0%}"]


CPU_COLUMNS = ["run", "anvil", "relay", "nodes", "apps (this process)", "all", "cores used",
               "machine busy (all users)"]


async def app_client(net: Any, fund: bool) -> Any:
    from gridtask.keys import Identity
    from gridtask.sdk import Client

    if fund:
        ident = Identity.generate()
        net.chain.fund(ident.address, PLENTY)
        config = net.config.model_copy(update={"private_key": SecretStr("0x" + ident.private_key.hex())})
    else:
        config = net.config
    client = Client(config=config)
    await client.open()
    return client


# ---------------------------------------------------------------- sections


async def micro(net: Any, n: int = 20) -> dict[str, float]:
    """Medians of the building blocks: one getTask RPC, one relay blob write (fsync)."""
    from gridtask.chain.client import ChainClient
    from gridtask.keys import Identity
    from gridtask.relay.storage import FileStore

    out: dict[str, float] = {}
    async with ChainClient(net.config.rpc_url, net.config.contract, Identity.generate()) as chain:
        xs = []
        for _ in range(n):
            t = now()
            await chain.get_task(os.urandom(32))
            xs.append(now() - t)
        out["getTask RPC (eth_call)"] = median(xs)
    store = FileStore(net.home / "bench-store")
    xs = []
    for i in range(n):
        t = now()
        await store.put(f"{i:064x}.params", os.urandom(1024))
        xs.append(now() - t)
    out["relay blob write, 1 KiB (FileStore.put: fsync file + dir)"] = median(xs)
    return out


async def latency(net: Any, tasks: int, sec: Section) -> None:
    obs = Observer(net)
    await obs.start()
    marks: dict[bytes, dict[str, float]] = defaultdict(dict)
    client = await app_client(net, fund=False)
    instrument(client, marks)
    rpc: Counter[str] = Counter()
    count_rpc(client.chain.w3, rpc)
    bare = BareSender(net, 4 * tasks + 2)
    cpu = CpuMeter(net)
    try:
        await bare.sign()
        for _ in range(2):  # warm-up: connections, nonces, gas price, first-event paths
            await one_task(client, defaultdict(dict))
            await bare.send_next(1)
        rpc.clear()
        lat, bare4, stages, commitments = [], [], defaultdict(list), []
        cpu_task = cpu_bare = None
        node_of: dict[bytes, str] = {}
        name_of = {i.address.lower(): f"_n:node{k}" for k, i in enumerate(net.node_identities)}
        worker_cpu, idle_cpu = [], []
        for _ in range(tasks):  # interleaved, so drift on a shared machine hits both alike
            a = cpu.snapshot()
            bare4.append(await bare.send_next(4))
            b = cpu.snapshot()
            c, dt = await one_task(client, marks, node_of=node_of)
            d = cpu.snapshot()
            per_node = {k: d[k] - b[k] for k in d if k.startswith("_n:")}
            worker = name_of.get(node_of.get(c, "").lower())
            if worker in per_node and len(per_node) > 1:
                worker_cpu.append(per_node.pop(worker))
                idle_cpu.append(mean(list(per_node.values())))
            lat.append(dt)
            commitments.append(c)
            cpu_bare = _add(cpu_bare, CpuMeter.delta(a, b))
            cpu_task = _add(cpu_task, CpuMeter.delta(b, d))
        await asyncio.sleep(0.3)  # let the observer catch the last events
        for c in commitments:
            for label, v in stage_times(marks[c], obs.seen.get(c, {})).items():
                stages[label].append(v)
        tries = [marks[c].get("relay.download_result.tries", 0) for c in commitments]
        gas = [g for g in [await obs.gas_of(c) for c in commitments] if g is not None]
        rss = {name: vm_status(p.pid)["VmRSS"] for name, p in net.processes.items() if name.startswith("node")}
        blocks = await micro(net)
    finally:
        await client.aclose()
        await bare.close()
        await obs.stop()

    med, p95, b4 = median(lat), percentile(lat, 95), median(bare4)
    sec.check(f"echo latency, median of {tasks} sequential", med / b4, "<=", 3.0, fmt="{:.2f}×",
              target="<= 3.00× (4 bare tx)",
              note=f"median {ms(med)}, p95 {ms(p95)}; 4 sequential bare tx median {ms(b4)} "
                   f"(1 tx {ms(b4 / 4)}), {net.nodes} echo nodes")
    sec.info("echo latency p95 ÷ 4 bare tx", f"{p95 / b4:.2f}×", p95 / b4,
             note=f"min {ms(min(lat))}, max {ms(max(lat))}; bare p95 {ms(percentile(bare4, 95))}")
    rows = []
    for label, _, _ in STAGES:
        xs = [x for x in stages[label] if x == x]
        m = median(xs)
        rows.append([label, ms(m), ms(percentile(xs, 95)), f"{m / med:.0%}" if xs else "n/a",
                     f"{m / (b4 / 4):.1f}" if xs else "n/a"])
    for label, v in blocks.items():
        rows.append([f"(building block) {label}", ms(v), "", "", f"{v / (b4 / 4):.1f}"])
    sec.tables.append(table(
        f"where a sequential echo task's time goes (over {tasks} tasks; events as first seen by a WebSocket "
        f"follower; download attempts per task: median {median(tries):.0f}, max {max(tries)})",
        ["stage", "median", "p95", "of median task", "÷ 1 bare tx"], rows))
    assert cpu_task is not None and cpu_bare is not None
    sec.tables.append(table(
        "CPU per task, ms (process trees; same run, sequential)", CPU_COLUMNS,
        [cpu_row(f"echo task ({tasks})", cpu_task, tasks), cpu_row(f"4 bare tx ({tasks}×)", cpu_bare, tasks)]))
    if rpc:
        per = {k: v / tasks for k, v in rpc.most_common()}
        sec.info("app JSON-RPC requests per task", f"{sum(per.values()):.1f}", sum(per.values()),
                 note=", ".join(f"{k} {v:.1f}" for k, v in per.items()))
    if worker_cpu:
        sec.info("CPU per task: the node that ran it / each idle node", f"{median(worker_cpu) * 1000:,.0f} / "
                 f"{median(idle_cpu) * 1000:,.0f} ms", median(worker_cpu),
                 note="every node follows and decodes every contract event, so each task costs CPU on all nodes")
    if gas:
        sec.info("full tx gas per echo task on anvil (receipts)", f"{mean(gas):,.0f}", mean(gas),
                 note="createTask + submitScore + validateSingleTask + reportResultUploaded, 1 model")
    if rss:
        sec.info("RSS of an echo node process", f"{median(list(rss.values())) / 1024:,.0f} MiB",
                 median(list(rss.values())) * 1024, note=f"median of {len(rss)} nodes")
    sec.data["latency"] = dict(nodes=net.nodes, tasks=tasks, latency_s=lat, bare4_s=bare4,
                               stages_s={k: v for k, v in stages.items()}, gas=gas, echo_node_rss_kib=rss,
                               building_blocks_s=blocks, cpu_task=cpu_task, cpu_bare=cpu_bare,
                               download_tries=tries, app_rpc_per_task={k: v / tasks for k, v in rpc.items()},
                               worker_node_cpu_s=worker_cpu, idle_node_cpu_s=idle_cpu,
                               devnet_ready_s=getattr(net, "bench_ready_s", None))


def _add(acc: dict[str, float] | None, d: dict[str, float]) -> dict[str, float]:
    if acc is None:
        return dict(d)
    out = {k: acc[k] + d[k] for k in acc if k not in ("machine busy", "cores")}
    total_wall = out["_wall"]
    # machine busy: wall-weighted mean
    out["machine busy"] = (acc["machine busy"] * acc["_wall"] + d["machine busy"] * d["_wall"]) / total_wall
    out["cores"] = d["cores"]
    return out


async def throughput(net: Any, apps: int, per_app: int, sec: Section, label: str) -> dict[str, Any]:
    clients = [await app_client(net, fund=True) for _ in range(apps)]
    lat: list[float] = []
    failures: list[str] = []
    cpu = CpuMeter(net)

    async def app(client: Any) -> None:
        for _ in range(per_app):
            t = now()
            try:
                await one_task(client, defaultdict(dict), timeout=120)
                lat.append(now() - t)
            except Exception as exc:  # counted, not fatal: the rate counts completed tasks
                failures.append(f"{type(exc).__name__}: {exc}"[:200])

    try:
        per_sender = 4 * per_app // 2
        head0 = await clients[0].chain.block_number()
        a = cpu.snapshot()
        r1, _ = await bare_rate(net, apps, per_sender)
        b = cpu.snapshot()
        t = now()
        await asyncio.gather(*(app(c) for c in clients))
        elapsed = now() - t
        c_ = cpu.snapshot()
        r2, _ = await bare_rate(net, apps, per_sender)
        d = cpu.snapshot()
        head1 = await clients[0].chain.block_number()
        queued = await clients[0].chain.get_logs(head0 + 1, head1, [clients[0].chain.events.topic("TaskQueued")])
    finally:
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
    rate = len(lat) / elapsed
    bare = 2 / (1 / r1 + 1 / r2)  # same number of tx before and after: total tx / total time
    ceiling = bare / 4
    sec.check(f"throughput, {apps} apps, {net.nodes} nodes", rate / ceiling, ">=", 0.5, fmt="{:.2f}",
              target=">= 0.50 of bare/4",
              note=f"{rate:.2f} tasks/s ({len(lat)} done, {len(failures)} failed, {len(queued)} queued first, "
                   f"{elapsed:.1f}s); bare {bare:.1f} tx/s with {apps} senders (before {r1:.1f}, after {r2:.1f}) "
                   f"→ {ceiling:.1f} tasks/s; task latency under load median {ms(median(lat))}, "
                   f"p95 {ms(percentile(lat, 95))}")
    cpu_run = CpuMeter.delta(b, c_)
    cpu_bare = _add(CpuMeter.delta(a, b), CpuMeter.delta(c_, d))
    n_bare = 2 * apps * per_sender
    out = dict(label=label, nodes=net.nodes, apps=apps, per_app=per_app, done=len(lat), failed=len(failures),
               queued=len(queued), failures=failures[:5], seconds=elapsed, tasks_per_s=rate,
               bare_tx_per_s=[r1, r2], latency_s=lat, cpu_run=cpu_run, cpu_bare=cpu_bare,
               devnet_ready_s=getattr(net, "bench_ready_s", None))
    out["cpu_rows"] = [cpu_row(f"{label}: echo task ({len(lat)})", cpu_run, max(len(lat), 1)),
                       cpu_row(f"{label}: 4 bare tx ({n_bare // 4}×)", cpu_bare, n_bare // 4)]
    for f in failures[:3]:
        sec.errors.append(f"throughput {label}: {f}")
    return out


async def run_async(quick: bool) -> Section:
    sec = Section("end to end")
    n_lat = 10 if quick else 30
    per_app = 3 if quick else 6
    configs = [8] if quick else [8, 16]
    logging.getLogger("gridtask").setLevel(logging.ERROR)
    results = []
    prices = []
    for i, nodes in enumerate(configs):
        async with devnet(nodes, ["echo"], f"e2e{nodes}") as net:
            g0, t0 = gas_price_gwei(net), now()
            if i == 0:
                await latency(net, n_lat, sec)
            results.append(await throughput(net, 8, per_app, sec, f"{nodes} nodes"))
            prices.append((nodes, g0, gas_price_gwei(net), now() - t0))
    for nodes, g0, g1, dt in prices:
        sec.info(f"eth_gasPrice drift, devnet with {nodes} nodes", f"{g0:,.3g} → {g1:,.3g} gwei", g1 / g0,
                 note=f"over {dt:.0f}s of use; ChainClient offers EIP-1559 fees (2× base fee + tip, "
                      "paying base fee + tip), so its own offers cannot drive the price up")
    sec.data["gas_price_gwei"] = prices
    sec.tables.append(table("CPU per task under load, ms (process trees; 8 apps at once)", CPU_COLUMNS,
                            [row for r in results for row in r.pop("cpu_rows")]))
    sec.data["throughput"] = results
    from bench.node_trace import trace

    try:
        tbl, data = await trace(5 if quick else n_lat)
        sec.tables.append(tbl)
        sec.data["node_trace"] = data
    except Exception as exc:  # a diagnostic: report, do not fail the section
        sec.errors.append(f"node trace: {type(exc).__name__}: {exc}")
    return sec


def run(quick: bool = False) -> Section:
    return asyncio.run(run_async(quick))
