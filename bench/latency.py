"""End to end on a real devnet (anvil, the contract, the relay, echo nodes as processes).

Latency: sequential echo tasks, each through its whole life (``submit`` + ``result``),
interleaved with the baseline: 4 pre-signed bare ETH transfers sent and awaited one
after the other through the same kind of client (``ChainClient``'s web3: send the raw
transaction, poll for the receipt on ChainClient's schedule): the issue's floor.

Every step of every task is timed: the client's own step hooks (``event_hooks={"step":
[...]}``) where the SDK has them, else its private methods wrapped; and an independent
observer follows the contract's events over WebSocket (first sight of each event, and
the transactions a task took). CPU per party (``bench.cpu``) is read around every task.

Throughput: 8 applications (8 funded identities, one Client each) run echo tasks back to
back at the same time, against the bare transaction rate of 8 concurrent senders measured
on the same chain just before and just after, divided by the transactions a task takes;
then the same on a devnet with twice the nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from time import perf_counter as now
from typing import Any

from bench import profiles, rpc
from bench.cpu import CPU_COLUMNS, CpuMeter, Usage, cpu_row, vm_status
from bench.net import PLENTY, app_client, devnet, funded_config, gas_price_gwei
from bench.report import Section, mean, median, ms, percentile, table

SINK = "0x000000000000000000000000000000000000dEaD"
EVENTS = ("TaskCreated", "TaskQueued", "TaskStarted", "TaskScoreReady", "TaskValidated", "TaskSuccess")
BARE_TX = 4  # the latency target's floor: 4 sequential bare transactions (issue 3's task had 4)
APPS = 8


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
        """Send one and poll for its receipt as ChainClient does; seconds it took."""
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


async def bare_rate(net: Any, senders: int, per_sender: int) -> float:
    """Transactions per second of `senders` accounts sending at once."""
    pool = [BareSender(net, per_sender) for _ in range(senders)]
    try:
        await asyncio.gather(*(s.sign() for s in pool))
        t = now()
        await asyncio.gather(*(s.send_next(per_sender) for s in pool))
        return senders * per_sender / (now() - t)
    finally:
        await asyncio.gather(*(s.close() for s in pool))


# ---------------------------------------------------------------- observing a task's life


class Observer:
    """Follows the contract's events over WebSocket: first-seen time of each event per task,
    and the transactions that emitted them."""

    def __init__(self, net: Any) -> None:
        from gridtask.chain.client import ChainClient
        from gridtask.chain.events import EventFollower
        from gridtask.keys import Identity

        self.chain = ChainClient(net.config.rpc_url, net.config.contract, Identity.generate())
        self.follower = EventFollower(self.chain, ws_url=net.config.ws_url)
        self.seen: dict[bytes, dict[str, float]] = defaultdict(dict)
        self.tx: dict[bytes, set[bytes]] = defaultdict(set)
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
                self.tx[c].add(bytes(event.transaction_hash))

    async def gas_of(self, key: bytes) -> int:
        """Receipt gasUsed of every transaction that emitted one of the task's events."""
        total = 0
        for tx in self.tx.get(key, ()):
            receipt = await self.chain.w3.eth.get_transaction_receipt(tx)
            total += int(receipt["gasUsed"])
        return total

    async def stop(self) -> None:
        if self._pump:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        await self.follower.stop()
        await self.chain.aclose()


# ---------------------------------------------------------------- timing the application's steps

Marks = dict[bytes, dict[str, float]]


def has_step_hooks() -> bool:
    from gridtask.sdk import Client

    return "event_hooks" in inspect.signature(Client.__init__).parameters


async def timed_client(net: Any, marks: Marks, **options: Any) -> Any:
    """An open Client whose every step lands in ``marks[task key][step name]`` (first time
    seen; ``<step>.sent`` when its transaction was sent): through the SDK's step hooks where
    it has them, else by wrapping its methods."""
    if has_step_hooks():
        def on_step(step: Any) -> None:
            m = marks[step.member_key]
            m.setdefault(step.name, step.at)
            if "tx_started_at" in step.detail:
                m.setdefault(step.name + ".sent", step.detail["tx_started_at"])

        return await app_client(net, event_hooks={"step": [on_step]}, **options)
    client = await app_client(net, **options)
    wrap_steps(client, marks)
    return client


def wrap_steps(client: Any, marks: Marks) -> None:
    """For an SDK without step hooks: its private methods wrapped, marks named as the hooks'
    steps (``created``, ``started``, ``params_uploaded``, ``validated``, ``downloaded``)."""
    from gridtask.crypto import task_key

    chain = client.chain
    transact = chain._transact  # every typed contract call sends through it
    step_of = {"createTask": "created", "startTask": "started", "validateSingleTask": "validated"}

    async def timed_transact(function: str, args: list[Any], **kw: Any) -> Any:
        key = task_key(chain.account, args[1]) if function == "createTask" else (args[0] if args else b"")
        t = now()
        out = await transact(function, args, **kw)
        if isinstance(key, bytes) and function in step_of:
            marks[key].setdefault(step_of[function] + ".sent", t)
            marks[key].setdefault(step_of[function], now())
        return out

    chain._transact = timed_transact
    for name, step in (("_upload_params", "params_uploaded"), ("_download", "downloaded")):
        original = getattr(client, name, None)
        if original is None:
            continue

        def wrap(original: Any = original, step: str = step) -> Any:
            async def wrapped(handle: Any, member: Any, *args: Any, **kw: Any) -> Any:
                out = await original(handle, member, *args, **kw)
                marks[member.key].setdefault(step, now())
                return out
            return wrapped

        setattr(client, name, wrap())


@dataclass
class Run:
    """One echo task as the application saw it."""

    key: bytes
    seconds: float
    nodes: tuple[str, ...]  # lower-case addresses of the nodes that ran a member


async def one_task(client: Any, marks: Marks | None = None, timeout: float = 60) -> Run:
    """What ``Client.run`` does (submit, then result), timed from before submit."""
    from gridtask.sdk import TaskType

    t0 = now()
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "x"})
    key = handle.commitment
    result = await client.result(handle, timeout=timeout)
    t1 = now()
    assert result == {"echo": "x"}, result
    if marks is not None:
        marks[key]["submit"] = t0
        marks[key]["returned"] = t1
    nodes = tuple(m.node.lower() for m in getattr(handle, "members", []) if getattr(m, "node", ""))
    return Run(key, t1 - t0, nodes)


# Stage = (label, start mark, end mark); "ev:" marks are the observer's first sight.
STAGES = [
    ("1 app: submit → createTask on chain", "submit", "created"),
    ("2 app: created → started (startTask, the next block)", "created", "started"),
    ("3 app: TaskStarted → parameters on the relay", "ev:TaskStarted", "params_uploaded"),
    ("4 node: parameters on the relay → TaskScoreReady", "params_uploaded", "ev:TaskScoreReady"),
    ("5 app: TaskScoreReady → TaskValidated", "ev:TaskScoreReady", "ev:TaskValidated"),
    ("   of which: validateSingleTask sent → on chain", "validated.sent", "validated"),
    ("6 node + relay: TaskValidated → TaskSuccess (upload, report)", "ev:TaskValidated", "ev:TaskSuccess"),
    ("7 app: TaskSuccess → result downloaded and checked", "ev:TaskSuccess", "downloaded"),
    ("whole task (submit → result returned)", "submit", "returned"),
]


def stage_times(marks: dict[str, float], seen: dict[str, float]) -> dict[str, float]:
    def at(name: str) -> float | None:
        return seen.get(name[3:]) if name.startswith("ev:") else marks.get(name)

    out = {}
    for label, a, b in STAGES:
        ta, tb = at(a), at(b)
        out[label] = (tb - ta) if ta is not None and tb is not None else float("nan")
    return out


# ---------------------------------------------------------------- phases


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


def node_split(usage: Usage, workers: tuple[str, ...]) -> tuple[float, float] | None:
    """(CPU of the node(s) that ran the task, mean CPU of each other node) over one task."""
    per = usage.per_node()
    ran = [per[n] for n in workers if n in per]
    idle = [v for n, v in per.items() if n not in workers]
    if not ran or not idle:
        return None
    return mean(ran), mean(idle)


async def latency(net: Any, tasks: int, sec: Section) -> dict[str, Any]:
    """Sequential echo tasks interleaved with groups of 4 bare transfers; CPU per party."""
    obs = Observer(net)
    await obs.start()
    marks: Marks = defaultdict(dict)
    client = await timed_client(net, marks)
    bare = BareSender(net, BARE_TX * tasks + 2)
    cpu = CpuMeter(net)
    runs: list[Run] = []
    bare4: list[float] = []
    task_cpu, bare_cpu = Usage(), Usage()
    ran_cpu: list[float] = []
    idle_cpu: list[float] = []
    try:
        await bare.sign()
        for _ in range(2):  # warm-up: connections, nonces, fees, first-event paths
            await one_task(client)
            await bare.send_next(1)
        for _ in range(tasks):  # interleaved, so drift on a shared machine hits both alike
            a = cpu.snapshot()
            bare4.append(await bare.send_next(BARE_TX))
            b = cpu.snapshot()
            run = await one_task(client, marks)
            d = cpu.snapshot()
            runs.append(run)
            bare_cpu += CpuMeter.between(a, b)
            used = CpuMeter.between(b, d)
            task_cpu += used
            split = node_split(used, run.nodes)
            if split:
                ran_cpu.append(split[0])
                idle_cpu.append(split[1])
        await asyncio.sleep(0.3)  # the observer's last events
        tx_counts = [len(obs.tx.get(r.key, ())) for r in runs]
        gas = [await obs.gas_of(r.key) for r in runs]
        blocks = await micro(net)
    finally:
        await client.aclose()
        await bare.close()
        await obs.stop()

    lat = [r.seconds for r in runs]
    med, p95, b4 = median(lat), percentile(lat, 95), median(bare4)
    groups = sum(len(r.nodes) > 1 for r in runs)
    sec.check(f"echo latency median ÷ {BARE_TX} sequential bare tx", med / b4, "<=", 3.0,
              fmt="{:.2f}×", target="<= 3.00×",
              note=f"{tasks} sequential tasks: median {ms(med)}, p95 {ms(p95)}; {BARE_TX} bare tx median {ms(b4)}; "
                   f"{net.nodes} echo nodes; {groups} of {tasks} tasks sampled (a group of 3)")
    sec.info("echo latency p95 ÷ 4 bare tx", f"{p95 / b4:.2f}×", p95 / b4,
             note=f"min {ms(min(lat))}, max {ms(max(lat))}; bare p95 {ms(percentile(bare4, 95))}")
    tx_per_task = mean([float(x) for x in tx_counts])
    sec.info("transactions per echo task (events' distinct transactions)", f"{tx_per_task:.2f}", tx_per_task,
             note="createTask, startTask, submitScore, validateSingleTask, reportResultUploaded; "
                  "a sampled task adds its group's")
    sec.info("gas per echo task on anvil (receipts)", f"{median([float(g) for g in gas]):,.0f}",
             median([float(g) for g in gas]), note="median over the sequential tasks, every transaction")
    idle_ratio = sum(idle_cpu) / sum(ran_cpu) if ran_cpu and sum(ran_cpu) else float("nan")
    sec.check("CPU of an idle node per task it does not run ÷ CPU of the node that runs it", idle_ratio, "<=", 0.02,
              fmt="{:.3f}",
              note=f"{mean(idle_cpu) * 1000:.2f} ms vs {mean(ran_cpu) * 1000:.1f} ms per task (means over "
                   f"{len(ran_cpu)} tasks, {net.nodes} nodes; /proc CPU of each node's process tree during each task)")

    rows = []
    stages: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        for label, v in stage_times(marks[r.key], obs.seen.get(r.key, {})).items():
            if v == v:
                stages[label].append(v)
    for label, _, _ in STAGES:
        xs = stages[label]
        m = median(xs)
        rows.append([label, ms(m), ms(percentile(xs, 95)), f"{m / med:.0%}" if xs else "n/a",
                     f"{m / (b4 / BARE_TX):.1f}" if xs else "n/a"])
    for label, v in blocks.items():
        rows.append([f"(building block) {label}", ms(v), "", "", f"{v / (b4 / BARE_TX):.1f}"])
    sec.tables.append(table(
        f"where a sequential echo task's time goes ({tasks} tasks; events as first seen by a WebSocket follower; "
        f"steps from {'the SDK step hooks' if has_step_hooks() else 'wrapped SDK methods'})",
        ["stage", "median", "p95", "of median task", "÷ 1 bare tx"], rows))
    rss = {name: vm_status(p.pid)["VmRSS"] for name, p in net.processes.items() if name.startswith("node")}
    if rss:
        sec.info("RSS of an echo node process", f"{median(list(rss.values())) / 1024:,.0f} MiB",
                 median(list(rss.values())) * 1024, note=f"median of {len(rss)} nodes")
    cpu_rows = [cpu_row(f"sequential echo task ({tasks})", task_cpu, tasks),
                cpu_row(f"{BARE_TX} bare tx ({tasks}×)", bare_cpu, tasks),
                ["  the node that ran it / each idle node", f"{mean(ran_cpu) * 1000:,.1f} / "
                 f"{mean(idle_cpu) * 1000:,.2f}", "", "", "", "", "", ""]]
    return dict(nodes=net.nodes, tasks=tasks, latency_s=lat, bare4_s=bare4, stages_s=dict(stages),
                tx_per_task=tx_per_task, tx_counts=tx_counts, gas=gas, groups=groups, cpu_task=task_cpu,
                cpu_bare=bare_cpu, ran_node_cpu_s=ran_cpu, idle_node_cpu_s=idle_cpu, idle_ratio=idle_ratio,
                building_blocks_s=blocks, echo_node_rss_kib=rss, cpu_rows=cpu_rows)


async def profile(net: Any, tasks: int) -> dict[str, Any]:
    """py-spy on the app (this process), the relay and every node over sequential tasks."""
    parties = {"app": [os.getpid()], "relay": [net.processes["relay"].pid],
               "nodes": [p.pid for n, p in net.processes.items() if n.startswith("node")]}
    client = await app_client(net)
    try:
        await one_task(client)
        async with profiles.Recorder(parties) as rec:
            for _ in range(tasks):
                await one_task(client)
    finally:
        await client.aclose()
    return dict(tasks=tasks, error=rec.error, summary=rec.summary())


async def throughput(net: Any, per_app: int, tx_per_task: float) -> dict[str, Any]:
    """8 applications at once, between two bare-rate measurements of 8 senders."""
    clients = [await app_client(net, config=funded_config(net)) for _ in range(APPS)]
    lat: list[float] = []
    failures: list[str] = []
    cpu = CpuMeter(net)

    async def app(client: Any) -> None:
        for _ in range(per_app):
            try:
                lat.append((await one_task(client, timeout=120)).seconds)
            except Exception as exc:  # counted, not fatal: the rate counts completed tasks
                failures.append(f"{type(exc).__name__}: {exc}"[:200])

    try:
        per_sender = max(4, round(tx_per_task * per_app / 2))
        a = cpu.snapshot()
        r1 = await bare_rate(net, APPS, per_sender)
        b = cpu.snapshot()
        t = now()
        await asyncio.gather(*(app(c) for c in clients))
        elapsed = now() - t
        c_ = cpu.snapshot()
        r2 = await bare_rate(net, APPS, per_sender)
        d = cpu.snapshot()
    finally:
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
    bare = 2 / (1 / r1 + 1 / r2)  # same number of tx before and after: total tx / total time
    rate = len(lat) / elapsed
    n_bare = 2 * APPS * per_sender
    cpu_run = CpuMeter.between(b, c_)
    return dict(nodes=net.nodes, apps=APPS, per_app=per_app, done=len(lat), failed=len(failures),
                failures=failures[:5], seconds=elapsed, tasks_per_s=rate, bare_tx_per_s=[r1, r2], bare=bare,
                ceiling=bare / tx_per_task, ratio=rate / (bare / tx_per_task), latency_s=lat, cpu_run=cpu_run,
                cpu_rows=[cpu_row(f"{net.nodes} nodes, {APPS} apps: echo task ({len(lat)})", cpu_run, max(len(lat), 1)),
                          cpu_row(f"{net.nodes} nodes: {BARE_TX} bare tx ({n_bare // BARE_TX}×)",
                                  CpuMeter.between(a, b) + CpuMeter.between(c_, d), n_bare // BARE_TX)])


def throughput_check(sec: Section, r: dict[str, Any], tx_per_task: float) -> None:
    sec.check(f"throughput, {r['apps']} apps, {r['nodes']} nodes ÷ (bare tx rate ÷ tx per task)", r["ratio"],
              ">=", 0.5, fmt="{:.2f}",
              note=f"{r['tasks_per_s']:.2f} tasks/s ({r['done']} done, {r['failed']} failed, {r['seconds']:.1f}s); "
                   f"bare {r['bare']:.1f} tx/s with {r['apps']} senders (before {r['bare_tx_per_s'][0]:.1f}, after "
                   f"{r['bare_tx_per_s'][1]:.1f}) ÷ {tx_per_task:.2f} tx per task → {r['ceiling']:.1f} tasks/s; "
                   f"latency under load median {ms(median(r['latency_s']))}, p95 {ms(percentile(r['latency_s'], 95))}")


async def run_async(quick: bool) -> Section:
    sec = Section("end to end")
    n_lat = 10 if quick else 30
    n_rpc = 5 if quick else 10
    per_app = 4 if quick else 10  # tasks per application: a run of a few seconds is all noise
    logging.getLogger("gridtask").setLevel(logging.ERROR)
    cpu_rows: list[list[str]] = []
    results: list[dict[str, Any]] = []
    prices = []
    async with devnet(8, ["echo"], "e2e8") as net:
        g0, t0 = gas_price_gwei(net), now()
        lat = await latency(net, n_lat, sec)
        cpu_rows += lat.pop("cpu_rows")
        sec.data["latency"] = lat
        tx_per_task = lat["tx_per_task"]
        if not quick:
            prof = await profile(net, 20)
            sec.data["profile"] = prof
            if prof["error"]:
                sec.errors.append(f"profile: {prof['error']}")
            elif prof["summary"]:
                sec.tables.append(table(
                    f"where each party's CPU goes (py-spy, {prof['tasks']} sequential echo tasks, 8 nodes summed; "
                    "share of that party's on-CPU samples)", ["party", "kind", "function", "share"],
                    profiles.rows(prof["summary"]), right_from=3))
        results.append(await throughput(net, per_app, tx_per_task))
        prices.append((8, g0, gas_price_gwei(net), now() - t0))
        counts = await rpc.count_requests(net, n_rpc, one_task, parties=("app", "relay", "nodes"))
        sec.data["rpc"] = counts
        app = counts["app"]
        sec.check("JSON-RPC requests per echo task, application side", app["total"], "<=", 6, fmt="{:.1f}",
                  note=f"{n_rpc} sequential tasks, each party through its own counting proxy (HTTP + WebSocket; "
                       f"{app['posts_per_task']:.1f} HTTP requests): {rpc.describe(app)}")
        for party in ("relay", "nodes"):
            sec.info(f"JSON-RPC requests per echo task, {party}" + (" (all 8)" if party == "nodes" else ""),
                     f"{counts[party]['total']:.1f}", counts[party]["total"], note=rpc.describe(counts[party]))
    if not quick:
        async with devnet(16, ["echo"], "e2e16") as net:
            g0, t0 = gas_price_gwei(net), now()
            results.append(await throughput(net, per_app, tx_per_task))
            prices.append((16, g0, gas_price_gwei(net), now() - t0))
    for r in results:
        cpu_rows += r.pop("cpu_rows")
        throughput_check(sec, r, tx_per_task)
        for f in r["failures"][:3]:
            sec.errors.append(f"throughput, {r['nodes']} nodes: {f}")
    if len(results) == 2:
        r8, r16 = results
        raw = r16["tasks_per_s"] / r8["tasks_per_s"]
        sec.check("throughput with 16 nodes ÷ with 8 nodes (same 8 apps)", raw, ">=", 1.0, fmt="{:.2f}",
                  note=f"{r16['tasks_per_s']:.2f} ÷ {r8['tasks_per_s']:.2f} tasks/s; the same over each devnet's own "
                       f"bare rate, {r16['ratio'] / r8['ratio']:.2f} (differs when the machine's load moved between "
                       "the two devnets, or when idle nodes slow the chain's bare transactions too)")
    for nodes, g0, g1, dt in prices:
        sec.info(f"eth_gasPrice drift, devnet with {nodes} nodes", f"{g0:,.3g} → {g1:,.3g} gwei", g1 / g0,
                 note=f"over {dt:.0f}s of use (EIP-1559 offers cannot drive the price up)")
    sec.data["gas_price_gwei"] = prices
    sec.data["throughput"] = results
    sec.tables.append(table("CPU per task by party, ms (process trees from /proc; same run)", CPU_COLUMNS, cpu_rows))
    from bench.node_trace import trace

    try:
        tbl, data = await trace(5 if quick else 10)
        sec.tables.append(tbl)
        sec.data["node_trace"] = data
    except Exception as exc:  # a diagnostic: report, do not fail the section
        sec.errors.append(f"node trace: {type(exc).__name__}: {exc}")
    return sec


def run(quick: bool = False) -> Section:
    return asyncio.run(run_async(quick))
