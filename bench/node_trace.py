"""Diagnostics: the node's side of an echo task, step by step.

The devnet's nodes are separate processes that cannot be timed from outside, so this runs
one more devnet with no node processes and a single ``NodeDaemon`` in this process, its
chain and relay calls wrapped like the application's. It shares this process's event loop
with the application, so its absolute times are not the devnet's; its shape is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Any

from pydantic import SecretStr

from bench.latency import Observer, one_task, timed_client
from bench.net import PLENTY, devnet
from bench.report import median, ms, percentile, table

now = time.perf_counter

NODE_STAGES = [
    ("TaskStarted: observer saw it → node saw it", "ev:TaskStarted", "node.seen.TaskStarted"),
    ("node: saw TaskStarted → spec read (the task's TaskCreated)", "node.seen.TaskStarted", "node.spec.end"),
    ("node: first params GET → params in hand", "relay.download_params.first", "relay.download_params.end"),
    ("app put params on relay → node has them (retry backoff + GET)", "params_uploaded", "relay.download_params.end"),
    ("node: params in hand → submitScore sent (decrypt, run, seal, write)", "relay.download_params.end",
     "submitScore.start"),
    ("node: submitScore tx → receipt", "submitScore.start", "submitScore.end"),
    ("node: submitScore receipt → observer saw TaskScoreReady", "submitScore.end", "ev:TaskScoreReady"),
    ("TaskValidated: observer saw it → node saw it", "ev:TaskValidated", "node.seen.TaskValidated"),
    ("node: saw TaskValidated → result PUT started (getTask)", "node.seen.TaskValidated", "relay.upload_result.start"),
    ("node: result PUT (relay: verify, getTask, fsync, reportResultUploaded tx)", "relay.upload_result.start",
     "relay.upload_result.end"),
]


def instrument_node(daemon: Any, marks: dict[bytes, dict[str, float]]) -> None:
    me = daemon.address.lower()
    handle = daemon.handle

    async def timed_handle(event: Any) -> None:
        node = str(event.args.get("node", "")).lower()
        if event.commitment is not None and node == me:
            marks[event.commitment].setdefault(f"node.seen.{event.name}", now())
        await handle(event)

    daemon.handle = timed_handle
    spec = daemon.worker.spec

    async def timed_spec(commitment: bytes) -> Any:
        marks[commitment]["node.spec.start"] = now()
        out = await spec(commitment)
        marks[commitment]["node.spec.end"] = now()
        return out

    daemon.worker.spec = timed_spec
    transact = daemon.chain._transact  # every typed contract call sends through it

    async def timed_transact(function: str, args: list[Any], **kw: Any) -> Any:
        c = args[0] if args and isinstance(args[0], bytes) else b""
        marks[c][f"{function}.start"] = now()
        out = await transact(function, args, **kw)
        marks[c][f"{function}.end"] = now()
        return out

    daemon.chain._transact = timed_transact  # type: ignore[method-assign]
    for name in ("download_params", "upload_result"):
        original = getattr(daemon.relay, name)

        def wrap(original: Any = original, name: str = name) -> Any:
            async def wrapped(commitment: bytes, *args: Any, **kw: Any) -> Any:
                m = marks[commitment]
                m.setdefault(f"relay.{name}.first", now())
                m[f"relay.{name}.tries"] = m.get(f"relay.{name}.tries", 0) + 1
                m[f"relay.{name}.start"] = now()
                out = await original(commitment, *args, **kw)
                m[f"relay.{name}.end"] = now()
                return out
            return wrapped

        setattr(daemon.relay, name, wrap())


async def trace(tasks: int) -> tuple[Any, dict[str, Any]]:
    from gridtask.keys import Identity
    from gridtask.node.daemon import NodeDaemon
    from gridtask.node.settings import NodeSettings, build_executors

    async with devnet(0, ["echo"], "trace") as net:
        ident = Identity.generate()
        net.chain.fund(ident.address, PLENTY)
        key = SecretStr("0x" + ident.private_key.hex())
        settings = NodeSettings(network=net.config.model_copy(update={"private_key": key}),
                                models=["echo"], state_dir=net.home / "trace-node")
        daemon = NodeDaemon(settings, build_executors(["echo"]))
        node_marks: dict[bytes, dict[str, float]] = defaultdict(dict)
        instrument_node(daemon, node_marks)
        serving = asyncio.create_task(daemon.serve())
        obs = Observer(net)
        client = None
        try:
            await obs.start()
            app_marks: dict[bytes, dict[str, float]] = defaultdict(dict)
            client = await timed_client(net, app_marks)
            deadline = now() + 60
            while await client.chain.get_node(ident.address) is None:
                if serving.done() or now() > deadline:
                    raise RuntimeError(f"in-process node did not join: {serving}")
                await asyncio.sleep(0.05)
            for _ in range(2):
                await one_task(client)
            lat, commitments = [], []
            for _ in range(tasks):
                run = await one_task(client, app_marks)
                lat.append(run.seconds)
                commitments.append(run.key)
            await asyncio.sleep(0.3)
        finally:
            if client is not None:
                await client.aclose()
            await obs.stop()
            daemon.shutdown()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 10)

    stages: dict[str, list[float]] = defaultdict(list)
    tries = []
    for c in commitments:
        m = {**app_marks[c], **node_marks[c]}
        seen = obs.seen.get(c, {})
        tries.append(node_marks[c].get("relay.download_params.tries", 0))
        for label, a, b in NODE_STAGES:
            ta = seen.get(a[3:]) if a.startswith("ev:") else m.get(a)
            tb = seen.get(b[3:]) if b.startswith("ev:") else m.get(b)
            if ta is not None and tb is not None:
                stages[label].append(tb - ta)
    rows = [[label, ms(median(stages[label])), ms(percentile(stages[label], 95))] for label, _, _ in NODE_STAGES]
    tbl = table(f"node side, traced (diagnostic: 1 in-process node, {tasks} tasks, task median {ms(median(lat))}; "
                f"params GET attempts per task: median {median(tries):.0f}, max {max(tries)})",
                ["node stage", "median", "p95"], rows)
    return tbl, dict(tasks=tasks, latency_s=lat, stages_s=dict(stages), params_get_tries=tries)
