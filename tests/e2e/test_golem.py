"""Golem batch jobs on a devnet: the README's two examples as a user runs them, and a job whose
budget, retries and events are checked against the chain (real anvil, relay and ``gridtask
node`` processes serving ``vm``, scripts in bubblewrap)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gridtask.config import save_config
from gridtask.devnet import Devnet
from gridtask.exceptions import ValidationError
from gridtask.sdk import Client
from gridtask.sdk.golem import BudgetExceeded, Golem, Task, WorkContext, events, vm
from gridtask.types import TaskState, TaskType

from .conftest import assert_conserved, start_devnet

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not __import__("gridtask.node.sandbox", fromlist=["x"]).sandbox_available(), reason="bubblewrap does not run here")]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FEE = 10**15
ETHER = 10**18
REFUNDED = {TaskState.ABORTED, TaskState.ERRORED, TaskState.INVALIDATED}


@pytest.fixture(scope="module")
def vm_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, Path]]:
    """Three nodes serving Golem scripts, and the config file a user's program reads."""
    tmp = tmp_path_factory.mktemp("golem")
    net = asyncio.run(start_devnet(tmp, nodes=3, node_models=["vm"]))
    try:
        assert net.config is not None
        yield net, save_config(net.config, tmp / "config.json")
    finally:
        net.stop()


def run_example(config: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDTASK_")}
    env["GRIDTASK_CONFIG"] = str(config)
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


async def script_tasks(client: Client, since: int) -> list[Any]:
    """This account's script tasks created from block ``since`` on, as the chain has them now."""
    logs = await client.chain.get_logs(since, await client.chain.block_number())
    keys = [e.commitment for e in logs if e.name == "TaskCreated" and e.args["creator"] == client.identity.address
            and int(e.args["task_type"]) == TaskType.SCRIPT]
    return [t for t in await client.chain.get_tasks(keys) if t is not None] if keys else []


@pytest.mark.timeout(300)
async def test_the_hello_world_example_prints_what_its_command_printed(vm_net: tuple[Devnet, Path]) -> None:
    net, config = vm_net
    done = await asyncio.to_thread(run_example, config, str(EXAMPLES / "golem_hello.py"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == ["Hello from a gridtask node's sandbox", "Linux"], done.stdout
    await assert_conserved(net)


@pytest.mark.timeout(400)
async def test_the_hash_cracker_finds_the_password_with_chunks_on_several_nodes(vm_net: tuple[Devnet, Path]) -> None:
    net, config = vm_net
    assert net.config is not None
    async with Client(config=net.config) as client:
        since = await client.chain.block_number()
        target = hashlib.sha256(b"traibro").hexdigest()  # a word of examples/hash_cracker_words.txt
        done = await asyncio.to_thread(run_example, config, str(EXAMPLES / "hash_cracker.py"), "--hash", target,
                                       "--chunks", "6")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Password found: traibro" in done.stdout, done.stdout
        assert done.stdout.count("not there") == 5 and "found 'traibro'" in done.stdout
        ran = await script_tasks(client, since)
        assert len([t for t in ran if t.state == TaskState.SUCCESS]) == 6
        assert len({t.node for t in ran}) >= 2, "the chunks ran on one node only"  # spread across the devnet
        missing = await asyncio.to_thread(run_example, config, str(EXAMPLES / "hash_cracker.py"), "--hash",
                                          hashlib.sha256(b"not in the list").hexdigest(), "--chunks", "2")
        assert missing.returncode == 1 and "No password found" in missing.stdout
    await assert_conserved(net)


async def watch_budget(client: Client, since: int, budget: int, stop: asyncio.Event, held: list[int]) -> None:
    """From the chain, every 0.1 s: the fees of this account's script tasks not refunded (escrowed
    or paid) never pass the budget."""
    while not stop.is_set():
        now = sum(t.fee for t in await script_tasks(client, since) if t.state not in REFUNDED)
        held.append(now)
        assert now <= budget, f"{now} wei escrowed or paid, over the budget of {budget}"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(400)
async def test_a_job_never_passes_its_budget_retries_a_rejected_task_elsewhere_and_tells_its_events(
        vm_net: tuple[Devnet, Path], tmp_path: Path) -> None:
    net, _ = vm_net
    assert net.config is not None
    seen: list[events.Event] = []

    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task]) -> Any:
        async for task in tasks:
            got: list[bytes] = []

            async def keep(data: bytes, into: list[bytes] = got) -> None:
                into.append(data)

            script = ctx.new_script()
            script.upload_bytes(f"chunk {task.data}".encode(), "in/data.txt")
            said = script.run("/bin/sh", "-c", "tr a-z A-Z < in/data.txt > out.txt; cat out.txt")
            script.download_bytes("out.txt", keep)
            yield script
            if task.data == 0 and task.tries == 1:
                task.reject_result("the first answer is never good enough", retry=True)
                continue
            assert (await said).stdout == got[0].decode()
            task.accept_result(got[0].decode())

    budget = 7 * FEE  # six tasks and one retry: exactly what the job needs
    async with Client(config=net.config) as client:
        since = await client.chain.block_number()
        stop, held = asyncio.Event(), []
        watcher = asyncio.create_task(watch_budget(client, since, budget, stop, held))
        async with Golem(budget=budget / ETHER, client=client, event_consumer=seen.append, progress=False) as golem:
            package = await vm.repo(image_hash=await golem.publish_image(EXAMPLES / "golem_hello_image"))
            done = [t async for t in golem.execute_tasks(worker, [Task(i) for i in range(6)], payload=package)]
            stop.set()
            await watcher
            assert sorted(t.result for t in done) == [f"CHUNK {i}" for i in range(6)]
            assert golem.budget.spent == budget and golem.budget.escrowed == 0
            again = next(t for t in done if t.data == 0)
            assert len(again.nodes) == 2 and again.nodes[0] != again.nodes[1]  # retried on another node
            ran = await script_tasks(client, since)
            assert sum(t.fee for t in ran if t.state == TaskState.SUCCESS) == golem.budget.spent
            assert held and max(held) <= budget  # what the watcher saw while the job ran
            assert sum(t.fee for t in ran if t.state not in REFUNDED) == budget  # all of it in use, no more
            with pytest.raises(BudgetExceeded, match="left"):  # the budget is spent: nothing more is paid
                async for _ in golem.execute_tasks(worker, [Task(9)], payload=package):
                    pass
    kinds = {type(e).__name__ for e in seen}
    for name in ("JobStarted", "WorkerStarted", "TaskStarted", "FeeEscrowed", "ScriptSent", "CommandExecuted",
                 "FeePaid", "ScriptFinished", "TaskRejected", "TaskAccepted", "TaskFinished", "JobFinished"):
        assert name in kinds, f"no {name} event: {sorted(kinds)}"
    paid = [e for e in seen if isinstance(e, events.FeePaid)]
    assert len(paid) == 7 and sum(e.amount for e in paid) == budget
    assert {e.node for e in paid} <= {i.address for i in net.node_identities}
    await assert_conserved(net)


@pytest.mark.timeout(120)
async def test_an_image_nobody_published_is_refused_before_anything_is_paid(vm_net: tuple[Devnet, Path]) -> None:
    net, _ = vm_net
    assert net.config is not None
    async with Client(config=net.config) as client, Golem(budget=0.01, client=client, progress=False) as golem:
        since = await client.chain.block_number()
        package = await vm.repo(image_hash="0" * 64)
        async def worker(ctx: WorkContext, tasks: AsyncIterator[Task]) -> Any:
            async for _ in tasks:
                yield ctx.new_script()

        with pytest.raises(ValidationError, match="gridtask bundle publish DIR"):
            async for _ in golem.execute_tasks(worker, [Task(1)], payload=package):
                pass
        assert await script_tasks(client, since) == [] and golem.budget.spent == golem.budget.escrowed == 0
