"""The Golem layer's own rules, over a stand-in for the core client (one module under test:
``gridtask.sdk.golem``; the real chain, relay and nodes are in tests/e2e/test_golem*.py).

The stand-in plays a network of named nodes: it picks a node for each fragment (never one in
the exclude list), lets a test decide what each node does with it, and checks the budget's
rule, escrowed + spent <= budget, at every submission and every end."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from gridtask.exceptions import TaskAborted, TaskErrored, ValidationError
from gridtask.scripts import ScriptResult, check_script
from gridtask.sdk.golem import (
    BudgetExceeded,
    CommandExecutionError,
    FragmentFailed,
    Golem,
    Task,
    TaskStatus,
    WorkContext,
    events,
    vm,
)

IMAGE = "cd" * 32
FEE = 10**15


@dataclass
class FakeNetwork:
    """The core client, as the Golem layer uses it."""

    nodes: list[str]
    behaviour: Callable[[str, dict], Any] = lambda node, inputs: None  # raise to fail on that node
    sampling: int = 0
    golem: Golem | None = None
    submitted: list[tuple[str, list[str]]] = field(default_factory=list)  # (node, exclude)
    in_flight: int = 0
    most_in_flight: int = 0
    _turn: itertools.count = field(default_factory=itertools.count)

    # -- what Golem calls
    async def open(self) -> None: ...
    async def aclose(self) -> None: ...

    @property
    def relay(self) -> Any:
        async def get_bundle(image: str) -> bytes:
            return b"bundle"
        return SimpleNamespace(get_bundle=get_bundle)

    @property
    def chain(self) -> Any:
        async def network_params() -> Any:
            return SimpleNamespace(validation_rate_bps=self.sampling, min_timeout=5, validation_window=60)
        return SimpleNamespace(network_params=network_params)

    async def serving(self, models: list[str]) -> int:
        return len(self.nodes)

    async def submit(self, task_type: Any, model: str, inputs: dict, *, fee: int, stage_timeout: int,
                     exclude: list[str]) -> Any:
        check_script(inputs)
        self.check_budget()
        allowed = [n for n in self.nodes if n not in exclude[:len(self.nodes) - 1]]  # the core client's cap
        node = allowed[next(self._turn) % len(allowed)]
        self.submitted.append((node, list(exclude)))
        return SimpleNamespace(task_id=f"0x{len(self.submitted):064x}", node=node, members=[object()],
                               stage_timeout=stage_timeout, inputs=inputs)

    async def result(self, handle: Any, *, timeout: float) -> Any:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.check_budget()
            await asyncio.sleep(0.01)
            self.behaviour(handle.node, handle.inputs)
            results = []
            for c in handle.inputs["commands"]:
                if c["op"] == "run":
                    code = 1 if c["args"][-1] == "fail" else 0
                    results.append({"op": "run", "exit_code": code, "stdout": f"{handle.node}:{c['args'][-1]}",
                                    "stderr": "boom" if code else ""})
                    if code:
                        return {"results": results, "failed": {"index": len(results) - 1, "message": "exit 1"}}
                else:
                    results.append({"op": c["op"], **({"data": "aGk="} if c["op"] == "download" else {})})
            return {"results": results, "failed": None}
        finally:
            self.in_flight -= 1

    def check_budget(self) -> None:
        assert self.golem is not None
        b = self.golem.budget
        assert b.escrowed + b.spent <= b.total, b


async def golem_on(net: FakeNetwork, budget: float = 1.0, **kwargs: Any) -> tuple[Golem, list[events.Event]]:
    seen: list[events.Event] = []
    golem = Golem(budget=budget, client=net, event_consumer=seen.append, progress=False, **kwargs)  # type: ignore[arg-type]
    net.golem = golem
    await golem.start()
    return golem, seen


async def echo_worker(ctx: WorkContext, tasks: AsyncIterator[Task]) -> Any:
    async for task in tasks:
        script = ctx.new_script()
        result = script.run("/bin/echo", str(task.data))
        yield script
        task.accept_result((await result).stdout)


async def collect(golem: Golem, worker: Any, data: list[Any], **kwargs: Any) -> list[Task]:
    package = await vm.repo(image_hash=IMAGE)
    return [t async for t in golem.execute_tasks(worker, [Task(d) for d in data], payload=package, **kwargs)]


async def test_every_task_comes_back_with_its_result_and_the_budget_pays_one_fee_each() -> None:
    net = FakeNetwork(["n1", "n2", "n3"])
    golem, seen = await golem_on(net)
    done = await collect(golem, echo_worker, list(range(7)))
    assert sorted(t.data for t in done) == list(range(7))
    assert all(t.result == f"{node}:{t.data}" for t in done for node in [t.result.split(":")[0]])
    assert golem.budget.spent == 7 * FEE and golem.budget.escrowed == 0
    assert net.most_in_flight <= 6  # two fragments per node serving vm, at most


async def test_a_fragment_that_fails_on_a_node_goes_to_another_and_the_budget_holds() -> None:
    def bad_n1(node: str, inputs: dict) -> None:
        if node == "n1":
            raise TaskAborted("creator: no progress by the STARTED deadline", fee=FEE)

    net = FakeNetwork(["n1", "n2"], behaviour=bad_n1)
    golem, seen = await golem_on(net, budget=0.01)
    done = await collect(golem, echo_worker, list(range(4)))
    assert len(done) == 4 and all(not t.result.startswith("n1") for t in done)
    retried = [i for i, (node, exclude) in enumerate(net.submitted) if "n1" in exclude]
    assert retried, net.submitted  # a try after n1 failed kept the fragment off n1
    failed = [e for e in seen if isinstance(e, events.ScriptFailed)]
    assert failed and all(e.node == "n1" and e.retrying for e in failed)
    assert golem.budget.spent == 4 * FEE  # the aborted tries were refunded
    assert golem.budget.refunded == len(failed) * FEE


async def test_a_fragment_failing_everywhere_raises_in_the_worker_after_its_tries() -> None:
    def always(node: str, inputs: dict) -> None:
        raise TaskErrored(12, message="payload failed")

    caught: list[BaseException] = []

    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task]) -> Any:
        async for task in tasks:
            script = ctx.new_script()
            script.run("/bin/true")
            try:
                yield script
            except FragmentFailed as exc:
                caught.append(exc)
                task.reject_result("no node could run it")

    net = FakeNetwork(["n1", "n2", "n3"], behaviour=always)
    golem, seen = await golem_on(net, max_fragment_tries=3)
    assert await collect(golem, worker, ["x"]) == []
    assert len(caught) == 1 and len(caught[0].errors) == 3  # type: ignore[attr-defined]
    # each try excluded the nodes it had failed on: three tries, three different nodes
    assert [exclude for _, exclude in net.submitted] == [[], [net.submitted[0][0]], [n for n, _ in net.submitted[:2]]]
    assert len({node for node, _ in net.submitted}) == 3
    assert golem.budget.spent == 0


async def test_reject_with_retry_runs_the_task_again_up_to_the_limit() -> None:
    tries: dict[str, int] = {}

    async def picky(ctx: WorkContext, tasks: AsyncIterator[Task]) -> Any:
        async for task in tasks:
            script = ctx.new_script()
            script.run("/bin/echo", task.data)
            yield script
            tries[task.data] = tries.get(task.data, 0) + 1
            if task.data == "never" or tries[task.data] < 2:
                task.reject_result("not good enough", retry=True)
            else:
                task.accept_result(task.data)

    net = FakeNetwork(["n1", "n2"])
    golem, seen = await golem_on(net, max_task_tries=3)
    done = await collect(golem, picky, ["twice", "never"])
    assert [t.data for t in done] == ["twice"] and tries == {"twice": 2, "never": 3}
    assert len(set(done[0].nodes)) == 2  # its second try ran on another node than the one it was rejected on
    rejected = [e for e in seen if isinstance(e, events.TaskRejected)]
    assert [(e.task.data, e.retry) for e in rejected].count(("never", True)) == 2
    final = [e for e in seen if isinstance(e, events.TaskFailed)]
    assert [e.task.data for e in final] == ["never"] and final[0].task.status == TaskStatus.FAILED
    assert golem.budget.spent == 5 * FEE  # every delivered try was paid for


async def test_a_failed_command_is_raised_at_the_yield_and_a_worker_that_dies_gives_its_task_back() -> None:
    async def worker(ctx: WorkContext, tasks: AsyncIterator[Task]) -> Any:
        async for task in tasks:
            script = ctx.new_script()
            script.run("/bin/sh", "-c", "fail" if task.tries == 1 else "fine")
            yield script  # the first try raises CommandExecutionError here: uncaught, the worker dies
            task.accept_result(task.tries)

    net = FakeNetwork(["n1"])
    golem, seen = await golem_on(net)
    done = await collect(golem, worker, ["a"])
    assert [t.result for t in done] == [2]
    died = [e for e in seen if isinstance(e, events.WorkerFinished) and e.error is not None]
    assert len(died) == 1 and isinstance(died[0].error, CommandExecutionError)
    assert "boom" in str(died[0].error)
    executed = [e for e in seen if isinstance(e, events.CommandExecuted)]
    assert [e.success for e in executed] == [False, True]


async def test_events_tell_the_job_in_order() -> None:
    net = FakeNetwork(["n1"])
    golem, seen = await golem_on(net)
    await collect(golem, echo_worker, ["only"])
    names = [type(e).__name__ for e in seen]
    order = ["JobStarted", "TaskStarted", "FeeEscrowed", "ScriptSent", "FeePaid", "CommandExecuted",
             "ScriptFinished", "TaskFinished", "TaskAccepted", "JobFinished"]
    assert [n for n in names if n in order] == order, names
    finished = seen[-1]
    assert isinstance(finished, events.JobFinished) and (finished.accepted, finished.spent) == (1, FEE)


async def test_the_budget_is_never_passed_when_the_network_may_sample_a_group() -> None:
    """With sampling on, a fragment holds three fees until its task is on chain (a group's two
    extra fees), one once it is: seven fees pay for five fragments, and a sixth does not fit."""
    net = FakeNetwork(["n1", "n2", "n3"], sampling=1000)
    golem, _ = await golem_on(net, budget=7 * FEE / 10**18)
    done = await collect(golem, echo_worker, list(range(5)))
    assert len(done) == 5 and golem.budget.spent == 5 * FEE
    with pytest.raises(BudgetExceeded, match="left"):
        await collect(golem, echo_worker, ["one more than the budget holds"] * 1)


async def test_the_payloads_needs_travel_with_every_script() -> None:
    """What ``vm.repo`` asks for is in the inputs each node checks (``check_script``), not only
    in the SDK: memory and disk size the sandbox, CPU threads decide which node may run it."""
    seen: list[dict] = []
    net = FakeNetwork(["n1"], behaviour=lambda node, inputs: seen.append(inputs))
    golem, _ = await golem_on(net)
    package = await vm.repo(image_hash=IMAGE, min_mem_gib=1, min_storage_gib=0.5, min_cpu_threads=4)
    done = [t async for t in golem.execute_tasks(echo_worker, [Task(1)], payload=package)]
    assert len(done) == 1 and len(seen) == 1
    spec = check_script(seen[0])
    assert (spec.memory_mib, spec.disk_mib, spec.cpu_threads) == (1024, 512, 4)


async def test_stream_output_prints_each_commands_output(capsys: pytest.CaptureFixture[str]) -> None:
    net = FakeNetwork(["n1"])
    golem, _ = await golem_on(net, stream_output=True)
    done = await collect(golem, echo_worker, ["hello", "fail"])
    out, err = capsys.readouterr()
    assert [t.data for t in done] == ["hello"]
    assert "n1:hello\n" in out and "n1:fail\n" in out and "boom\n" in err  # the failed command's too
    quiet, _ = await golem_on(FakeNetwork(["n1"]))
    await collect(quiet, echo_worker, ["hush"])
    assert "hush" not in capsys.readouterr().out


async def test_bad_input_is_refused_before_anything_is_paid() -> None:
    net = FakeNetwork(["n1"])
    golem, _ = await golem_on(net)
    with pytest.raises(ValidationError, match="image"):
        await vm.repo(image_hash="not-a-hash")
    with pytest.raises(ValidationError, match="min_mem_gib"):
        await vm.repo(image_hash=IMAGE, min_mem_gib=64)

    async def outside(ctx: WorkContext, tasks: AsyncIterator[Task]) -> Any:
        async for _ in tasks:
            script = ctx.new_script()
            script.upload_bytes(b"x", "/etc/passwd")
            yield script

    with pytest.raises(ValidationError, match="outside the VM's work directory"):
        await collect(golem, outside, [1], timeout=timedelta(seconds=30))
    assert net.submitted == [] and golem.budget.spent == 0


def test_a_result_reads_back_as_written() -> None:
    raw = {"results": [{"op": "run", "exit_code": 0, "stdout": "x", "stderr": ""}, {"op": "upload"},
                       {"op": "download", "data": "aGk="}], "failed": None}
    assert ScriptResult.from_json(raw).to_json() == raw


def test_the_progress_bar_shows_done_running_failed_and_spent() -> None:
    import io

    from rich.console import Console

    from gridtask.sdk.golem import Budget, ProgressBar

    out = io.StringIO()
    budget = Budget(10 * FEE)
    bar = ProgressBar(budget, console=Console(file=out, force_terminal=True, width=150))
    task, other = Task("a"), Task("b")
    bar(events.JobStarted("1", tasks=2))
    bar(events.TaskStarted("1", task=task))
    bar(events.TaskStarted("1", task=other))
    budget.spent = 3 * FEE
    bar(events.TaskFinished("1", task=task))
    bar(events.TaskAccepted("1", task=task))
    bar(events.TaskFinished("1", task=other))
    bar(events.TaskRejected("1", task=other, reason="bad", retry=False))
    assert (bar.done, bar.running, bar.failed) == (1, 0, 1)
    assert "running 0 · failed 1 · spent 0.003 ETH" in bar.status()
    bar(events.JobFinished("1", accepted=1, failed=1, spent=3 * FEE))
    assert "1/2" in out.getvalue() and "spent 0.003 ETH" in out.getvalue()
