"""A node that hangs mid-fragment never stalls a Golem job: real ``gridtask node`` processes, one
of them frozen with SIGSTOP at the exact moment named: after it fetched a fragment's parameters
and before it submitted the score. The fragment is abandoned at its stage deadline (aborted on
chain, the fee refunded) and runs on the other node; the job's other tasks go on meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gridtask.devnet import Devnet
from gridtask.sdk import Client
from gridtask.sdk.golem import Golem, Task, WorkContext, events, vm
from gridtask.types import TaskState

from .conftest import assert_conserved, running_devnet
from .test_golem import EXAMPLES, FEE, REFUNDED, script_tasks, watch_budget

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not __import__("gridtask.node.sandbox", fromlist=["x"]).sandbox_available(), reason="bubblewrap does not run here")]

STAGE_S = 8
"""Each fragment's stage timeout: the hung node is abandoned about this long after it took one."""
BUDGET = 5 * FEE
"""Four fragments, and room for one more held while the hung node's fragment is still escrowed:
tight enough that a try that forgot to settle its abandoned fee would pass it."""


async def freeze_when_fetched(net: Devnet, sent: asyncio.Queue[events.ScriptSent]) -> tuple[str, str]:
    """SIGSTOP the node of the first fragment that got one, once its log says it fetched that
    fragment's parameters (the node logs it before it runs the script, and scores after).
    Returns the node and the fragment's task key."""
    while True:
        first = await sent.get()
        if first.node:
            break
    index = [i.address for i in net.node_identities].index(first.node)
    log = net.home / f"node{index}.log"
    mark = f"task {first.task_id[2:12]}: parameters fetched"
    for _ in range(600):
        if mark in log.read_text(errors="replace"):
            os.kill(net.processes[f"node{index}"].pid, signal.SIGSTOP)
            return first.node, first.task_id
        await asyncio.sleep(0.02)
    raise AssertionError(f"node{index} never fetched the parameters of {first.task_id}")


@pytest.mark.timeout(300)
async def test_a_node_that_hangs_mid_fragment_is_abandoned_and_the_job_finishes_elsewhere(tmp_path: Path) -> None:
    async with running_devnet(tmp_path, nodes=2, node_models=["vm"]) as net:
        assert net.config is not None
        sent: asyncio.Queue[events.ScriptSent] = asyncio.Queue()
        seen: list[events.Event] = []

        def consume(event: events.Event) -> None:
            seen.append(event)
            if isinstance(event, events.ScriptSent):
                sent.put_nowait(event)

        async def worker(ctx: WorkContext, tasks: AsyncIterator[Task]) -> Any:
            async for task in tasks:
                script = ctx.new_script()
                said = script.run("/bin/sh", "-c", f"sleep 1; echo task {task.data}")
                yield script
                task.accept_result((await said).stdout.strip())

        try:
            async with Client(config=net.config) as client, \
                    Golem(budget=BUDGET / 10**18, client=client, event_consumer=consume, fragment_timeout=STAGE_S,
                          progress=False) as golem:
                since = await client.chain.block_number()
                stop, held = asyncio.Event(), []
                watcher = asyncio.create_task(watch_budget(client, since, BUDGET, stop, held))
                package = await vm.repo(image_hash=await golem.publish_image(EXAMPLES / "golem_hello_image"))
                freezer = asyncio.create_task(freeze_when_fetched(net, sent))
                started = time.monotonic()
                done = [t async for t in golem.execute_tasks(worker, [Task(i) for i in range(4)], payload=package)]
                took = time.monotonic() - started
                stop.set()
                await watcher  # escrowed + paid, read from the chain every 0.1 s, never passed the budget
                hung, key = await freezer
                assert sorted(t.result for t in done) == [f"task {i}" for i in range(4)]
                assert all(t.nodes[-1] != hung for t in done)  # every result came from the other node
                assert took < 6 * STAGE_S, f"the job took {took:.0f} s"  # abandoned at the deadline, not stuck
                failed = [e for e in seen if isinstance(e, events.ScriptFailed)]
                assert any(e.task_id == key and e.node == hung and e.retrying for e in failed), failed
                ran = {"0x" + t.commitment.hex(): t for t in await script_tasks(client, since)}
                assert ran[key].state == TaskState.ABORTED  # abandoned on chain: the fee went back
                assert all(t.node != hung for t in ran.values() if t.state == TaskState.SUCCESS)
                paid = sum(t.fee for t in ran.values() if t.state not in REFUNDED)
                assert paid == golem.budget.spent == 4 * FEE  # only the four delivered fragments were paid
                assert golem.budget.refunded == len(failed) * FEE
        finally:  # the frozen node goes on (and sees its task aborted), whatever the test did
            for name, proc in net.processes.items():
                if name.startswith("node"):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGCONT)
        await assert_conserved(net)
