"""Golem fragments per second: 100 trivial fragments (one ``echo`` each, in the sandbox) as one
``Golem.execute_tasks`` job across 3 nodes serving ``vm``, beside the first issue's per-task floor.

The floor (``bench/latency.py``): 4 sequential bare ETH transfers, what issue 3's task took on
chain, measured on the same devnet before and after the job. Rows: the job's fragments per
second (2 in flight per node, ``PER_NODE``); a fragment's median latency (from the worker's
``yield`` to its results: 5 transactions, the sandbox, the relay both ways, validation and
delivery) ÷ the floor; and the target, the e2e section's throughput rule: fragments/s ÷ (the
bare transaction rate of as many concurrent senders ÷ 5 transactions per fragment) >= 0.5.
The target's job runs with no task sampled (each fragment a lone task, as that rule counts
transactions); a full run adds the same job on the devnet's own settings (10% sampled).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from time import perf_counter as now
from typing import Any

from bench.latency import BARE_TX, BareSender, bare_rate
from bench.net import app_client, devnet
from bench.report import Section, median, ms, table

NODES = 3
FRAGMENTS = 100
QUICK_FRAGMENTS = 30
TX_PER_TASK = 5  # createTask, startTask, submitScore, validateSingleTask, reportResultUploaded
TARGET_RATIO = 0.5
"""The e2e section's throughput rule: fragments/s >= half the chain's bare rate ÷ TX_PER_TASK."""
FLOOR_SAMPLES = 10


async def _floor(net: Any, samples: int) -> float:
    """Median seconds of ``BARE_TX`` sequential bare transfers: the per-task floor."""
    bare = BareSender(net, BARE_TX * samples)
    try:
        await bare.sign()
        return median([await bare.send_next(BARE_TX) for _ in range(samples)])
    finally:
        await bare.close()


async def _job(net: Any, fragments: int) -> dict[str, Any]:
    from gridtask.sdk.dria.client import PER_NODE
    from gridtask.sdk.golem import Golem, Task, vm

    latencies: list[float] = []

    async def worker(ctx: Any, tasks: Any) -> Any:
        async for task in tasks:
            started = now()
            script = ctx.new_script()
            said = script.run("/bin/echo", str(task.data))
            yield script
            latencies.append(now() - started)
            task.accept_result((await said).stdout)

    client = await app_client(net, fund=True)
    try:
        async with Golem(budget=fragments, client=client, progress=False) as golem:
            with tempfile.TemporaryDirectory() as image:
                (Path(image) / "README").write_text("an empty image for trivial fragments\n")
                package = await vm.repo(image_hash=await golem.publish_image(image))
            t = now()
            done = [x async for x in golem.execute_tasks(worker, [Task(i) for i in range(fragments)],
                                                         payload=package)]
            elapsed = now() - t
            assert sorted(int(str(x.result)) for x in done) == list(range(fragments))
            spent = golem.budget.spent
    finally:
        await client.aclose()
    return dict(fragments=fragments, seconds=elapsed, rate=fragments / elapsed, latency_s=latencies,
                workers=PER_NODE * NODES, spent_wei=spent)


async def _echo(net: Any, tasks: int, in_flight: int) -> float:
    """Echo tasks per second through the core ``Client``, ``in_flight`` at a time: the same
    network path without the script, the sandbox or the Golem layer."""
    from gridtask.sdk import TaskType

    client = await app_client(net, fund=True)
    slots = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with slots:
            await client.run(TaskType.ECHO, "echo", {"data": i}, timeout=120)

    try:
        t = now()
        await asyncio.gather(*(one(i) for i in range(tasks)))
        return tasks / (now() - t)
    finally:
        await client.aclose()


async def _measure(fragments: int, params: Any, tag: str, *, echo: bool = False) -> dict[str, Any]:
    """One devnet of ``NODES`` nodes serving vm (and echo): the floor before and after one job, the
    chain's ceiling, and (``echo``) as many echo tasks with as many in flight."""
    async with devnet(NODES, ["vm", "echo"], tag, params=params) as net:
        floor_before = await _floor(net, FLOOR_SAMPLES // 2)
        job = await _job(net, fragments)
        echo_rate = await _echo(net, fragments, job["workers"]) if echo else None
        floor_after = await _floor(net, FLOOR_SAMPLES // 2)
        ceiling = await bare_rate(net, job["workers"], 4) / TX_PER_TASK
    return dict(job=job, floor_s=[floor_before, floor_after], floor=(floor_before + floor_after) / 2,
                ceiling=ceiling, echo_rate=echo_rate)


async def _run(quick: bool) -> Section:
    import dataclasses

    from gridtask.devnet import DEVNET_PARAMS

    sec = Section("fragments")
    fragments = QUICK_FRAGMENTS if quick else FRAGMENTS
    # Unsampled: every fragment a lone task, as the throughput target of the e2e section counts them.
    lone = await _measure(fragments, dataclasses.replace(DEVNET_PARAMS, validation_rate_bps=0), "fragments",
                          echo=True)
    sec.data["unsampled"] = lone
    job, floor, ceiling = lone["job"], lone["floor"], lone["ceiling"]
    lat = median(job["latency_s"])
    sec.info(f"fragments per second, {fragments} trivial fragments, {NODES} nodes", f"{job['rate']:.2f}/s",
             job["rate"], note=f"{job['seconds']:.1f} s for the job, {job['workers']} in flight, no task sampled")
    sec.info(f"per-task floor ({BARE_TX} sequential bare tx)", ms(floor), floor,
             note=f"before the job {ms(lone['floor_s'][0])}, after {ms(lone['floor_s'][1])}")
    sec.info("fragment latency median ÷ per-task floor", f"{lat / floor:.1f}×", lat / floor,
             note=f"median {ms(lat)} from the worker's yield to its results (5 transactions, the sandbox, "
             f"the relay both ways) vs {ms(floor)}")
    sec.check("fragments/s ÷ (bare tx rate ÷ tx per task)", job["rate"] / ceiling, ">=", TARGET_RATIO, fmt="{:.2f}",
              note=f"{job['rate']:.2f}/s vs the chain's {ceiling:.2f}/s: bare tx/s of {job['workers']} concurrent "
              f"senders ÷ {TX_PER_TASK} tx per fragment (the e2e section's throughput rule)")
    echo_rate = lone["echo_rate"]
    sec.info("fragments/s ÷ echo tasks/s, same devnet and concurrency", f"{job['rate'] / echo_rate:.2f}",
             job["rate"] / echo_rate, note=f"echo {echo_rate:.2f}/s through the core Client, {job['workers']} in "
             "flight: what the script, its sandbox and the Golem layer cost on top of a task")
    rows = [["unsampled", fragments, f"{job['seconds']:.1f}", f"{job['rate']:.2f}", f"{ceiling:.2f}",
             f"{job['rate'] / ceiling:.2f}", f">= {TARGET_RATIO}", ms(lat), ms(floor), f"{lat / floor:.1f}×"]]
    if not quick:  # the devnet's own settings: 10% of fragments become groups of three
        sampled = await _measure(fragments, DEVNET_PARAMS, "fragments-sampled")
        sec.data["sampled"] = sampled
        s_job = sampled["job"]
        sec.info("fragments per second, the devnet's 10% sampling", f"{s_job['rate']:.2f}/s", s_job["rate"],
                 note=f"on 3 nodes a sampled fragment's group needs all three (a member landing on a node of its "
                 f"group is replaced): slowest fragment {max(s_job['latency_s']):.1f} s")
        s_lat, s_ceiling = median(s_job["latency_s"]), sampled["ceiling"]
        rows.append(["10% sampled", fragments, f"{s_job['seconds']:.1f}", f"{s_job['rate']:.2f}", f"{s_ceiling:.2f}",
                     f"{s_job['rate'] / s_ceiling:.2f}", "- (info)", ms(s_lat), ms(sampled["floor"]),
                     f"{s_lat / sampled['floor']:.1f}×"])
    sec.tables.append(table("fragments: one Golem job each (ratio = fragments/s ÷ chain ceiling)",
                            ["devnet", "fragments", "seconds", "fragments/s", "chain ceiling/s", "ratio", "target",
                             "median fragment", "per-task floor", "fragment ÷ floor"], rows))
    return sec


def run(quick: bool = False) -> Section:
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    from bench.report import checks_table, console

    section = run()
    for t in section.tables:
        console.print(t)
    console.print(checks_table("fragments", section.checks))
