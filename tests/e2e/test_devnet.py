"""`gridtask devnet` as a user runs it, in a subprocess with real signals: nothing it
started outlives it, a child that dies is reported and restarted, and Ctrl-C stops the
nodes, then the relay, then the chain, in under 5 seconds even with tasks in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gridtask.chain.anvil import free_port
from gridtask.children import PidFile, alive
from gridtask.config import load_config
from gridtask.sdk import Client, TaskState, TaskType

from .conftest import scored_unvalidated

pytestmark = pytest.mark.e2e

STOP_BUDGET_S = 5.0
START_TIMEOUT_S = 120.0


class DevnetProcess:
    """``gridtask devnet --no-demo --node-model echo`` in ``cwd``, its output collected."""

    def __init__(self, cwd: Path, *, nodes: int, port: int) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        self.config = cwd / "config.json"
        env = dict(os.environ, PYTHONUNBUFFERED="1", HOME=str(cwd), COLUMNS="200")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gridtask", "devnet", "--no-demo", "--node-model", "echo",
             "--nodes", str(nodes), "--port", str(port), "--config", str(self.config)],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        for stream, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors)):
            threading.Thread(target=self._collect, args=(stream, into), daemon=True).start()

    @staticmethod
    def _collect(stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))

    @property
    def pid_file(self) -> PidFile:
        return PidFile(self.cwd / ".gridtask" / "devnet" / "devnet.pid")

    def pids(self) -> dict[str, int]:
        return self.pid_file.read()[1]

    def wait_line(self, text: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"no {text!r} in the devnet's output: {self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return "\n".join(self.lines) + "\n--- stderr ---\n" + "\n".join(self.errors[-30:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pid in self.pids().values():  # tidy up whatever a failed test left
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def wait_all_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def test_sigkilled_devnet_leaves_nothing_and_a_new_one_starts(tmp_path: Path) -> None:
    port = free_port()
    first = DevnetProcess(tmp_path, nodes=3, port=port)
    try:
        first.wait_line("devnet running")
        pids = first.pids()
        assert set(pids) == {"chain", "relay", "node0", "node1", "node2"}, pids
        assert all(alive(p) for p in pids.values())
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        killed_at = time.monotonic()
        assert wait_all_gone(list(pids.values()), STOP_BUDGET_S) == [], pids
        print(f"every child of the SIGKILLed devnet gone after {time.monotonic() - killed_at:.2f} s")
    finally:
        first.kill()

    # What another platform (no parent-death signal) would leave: a child still running,
    # named in the stale pid file. The next devnet ends it and says so.
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "gridtask-node"])
    owner, children = first.pid_file.read()
    assert owner == first.proc.pid and not alive(owner)
    first.pid_file.path.write_text(
        first.pid_file.path.read_text().replace('"node2": ', f'"node9": {leftover.pid}, "node2": '))

    second = DevnetProcess(tmp_path, nodes=1, port=port)  # same home, same port
    try:
        second.wait_line("devnet running")
        assert any(f"node9 (pid {leftover.pid})" in line and "ending them" in line for line in second.lines), \
            second.output()
        assert leftover.wait(5) == -signal.SIGKILL

        # A devnet elsewhere on the same port is refused, naming who holds the port.
        third = DevnetProcess(tmp_path / "other", nodes=1, port=port)
        assert third.proc.wait(60) == 1, third.output()
        time.sleep(0.2)
        chain_pid = second.pids()["chain"]
        assert any(f"port {port} is in use by pid {chain_pid}" in line for line in third.errors), third.output()

        os.kill(second.proc.pid, signal.SIGTERM)
        assert second.proc.wait(STOP_BUDGET_S + 2) == 0, second.output()
        assert wait_all_gone(list(second.pids().values()) or [chain_pid], 1) == []
        assert not second.pid_file.path.exists()  # a clean stop leaves no pid file
    finally:
        leftover.kill()
        second.kill()


def test_a_node_that_dies_is_reported_restarted_and_runs_tasks(tmp_path: Path) -> None:
    devnet = DevnetProcess(tmp_path, nodes=1, port=free_port())
    try:
        devnet.wait_line("devnet running")
        old = devnet.pids()["node0"]
        os.kill(old, signal.SIGKILL)
        devnet.wait_line("node0: exited with code -9", timeout=10)
        devnet.wait_line("node0: restarted (pid", timeout=10)
        new = devnet.pids()["node0"]
        assert any(f"node0: restarted (pid {new})" in line for line in devnet.lines), devnet.output()
        assert new != old and alive(new) and not alive(old)

        async def run_a_task() -> object:
            async with Client(config=load_config(devnet.config)) as client:
                # The devnet's only node is the restarted one: it rejoined and runs the task.
                return await client.run(TaskType.ECHO, "echo", {"data": "after a restart"}, timeout=90)

        assert asyncio.run(run_a_task()) == {"echo": "after a restart"}
        # and the relay too
        relay = devnet.pids()["relay"]
        os.kill(relay, signal.SIGKILL)
        devnet.wait_line("relay: restarted (pid", timeout=10)
        assert asyncio.run(run_a_task()) == {"echo": "after a restart"}
    finally:
        devnet.kill()


def test_ctrl_c_stops_nodes_then_relay_then_chain_in_time_with_tasks_in_flight(tmp_path: Path) -> None:
    devnet = DevnetProcess(tmp_path, nodes=2, port=free_port())
    try:
        devnet.wait_line("devnet running")

        async def tasks_in_flight() -> None:
            async with Client(config=load_config(devnet.config)) as client:
                # one scored and never validated: its node waits on the creator
                await scored_unvalidated(client, "held")
                # one whose parameters never come: its node waits on the relay
                waiting = await client.submit(TaskType.ECHO, "echo", {"data": "never sent"})
                await asyncio.sleep(1)
                assert (await client.task(waiting.commitment)).state == TaskState.STARTED  # type: ignore[union-attr]

        asyncio.run(tasks_in_flight())
        pids = devnet.pids()
        started = time.monotonic()
        os.kill(devnet.proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends it
        code = devnet.proc.wait(STOP_BUDGET_S + 5)
        took = time.monotonic() - started
        print(f"devnet stopped in {took:.2f} s with 2 tasks in flight")
        assert code == 0, devnet.output()
        assert took < STOP_BUDGET_S, devnet.output()
        time.sleep(0.3)  # the output thread catches up
        steps = ["stopping 2 node(s)...", "stopped 2 node(s)", "stopping the relay...", "stopped the relay",
                 "stopping the chain...", "stopped the chain"]
        at = [next((i for i, line in enumerate(devnet.lines) if line.startswith(s)), -1) for s in steps]
        assert -1 not in at and at == sorted(at), devnet.output()
        assert not any("killed after" in line for line in devnet.lines), devnet.output()  # all stopped on SIGTERM
        assert [p for p in pids.values() if alive(p)] == []
        for node in ("node0", "node1"):
            assert "stopped" in (tmp_path / ".gridtask" / "devnet" / f"{node}.log").read_text().splitlines()[-1]
    finally:
        devnet.kill()


def test_the_chain_dying_is_reported_and_stops_the_devnet(tmp_path: Path) -> None:
    """The chain cannot be restarted (its state is in anvil's memory): the devnet says so,
    stops the rest in order and exits with an error."""
    devnet = DevnetProcess(tmp_path, nodes=1, port=free_port())
    try:
        devnet.wait_line("devnet running")
        pids = devnet.pids()
        os.kill(pids["chain"], signal.SIGKILL)
        assert devnet.proc.wait(STOP_BUDGET_S + 5) == 1, devnet.output()
        time.sleep(0.3)  # the output thread catches up
        assert any("chain: anvil exited" in line for line in devnet.lines), devnet.output()
        assert any("the devnet's chain exited" in line for line in devnet.errors), devnet.output()
        assert wait_all_gone(list(pids.values()), 1) == []
    finally:
        devnet.kill()
