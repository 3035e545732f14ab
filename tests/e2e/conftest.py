"""End-to-end fixtures: a real anvil, the committed contract, the relay and nodes as
separate processes (``gridtask.devnet.Devnet``), and the checks every test makes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr
from web3 import AsyncHTTPProvider, AsyncWeb3

from gridtask.chain.anvil import free_port
from gridtask.chain.client import ChainClient
from gridtask.chain.models import TaskInfo
from gridtask.config import NetworkConfig
from gridtask.devnet import DEVNET_PARAMS, FUNDING, Devnet
from gridtask.keys import Identity
from gridtask.sdk import Client, TaskHandle, TaskType
from gridtask.types import TaskState

from .netcut import CuttableProxy

pytestmark = pytest.mark.e2e

NO_SAMPLING = dataclasses.replace(DEVNET_PARAMS, validation_rate_bps=0)
"""What a test devnet deploys unless the test passes ``params``: the devnet's settings with no
task sampled, so a network of one or two nodes (where a group of three cannot form) behaves
the same in every run. Tests of groups and sampling pass their own ``params``."""


async def start_devnet(tmp_path: Path, **kwargs: object) -> Devnet:
    kwargs.setdefault("params", NO_SAMPLING)
    net = Devnet(home=tmp_path / "devnet", **kwargs)  # type: ignore[arg-type]
    try:
        await net.start()
        await net.wait_nodes()
    except BaseException:
        net.stop()
        raise
    return net


@asynccontextmanager
async def running_devnet(tmp_path: Path, **kwargs: object) -> AsyncIterator[Devnet]:
    """A started devnet, stopped on the way out whatever the test did."""
    net = await start_devnet(tmp_path, **kwargs)
    try:
        yield net
    finally:
        net.stop()


@asynccontextmanager
async def devnet_behind_cuttable_proxy(tmp_path: Path, **kwargs: object) -> AsyncIterator[tuple[Devnet, CuttableProxy]]:
    """A devnet whose relay, nodes and SDK all reach the chain through one proxy the test can
    cut: the chain unreachable for everyone at once, the chain itself intact."""
    port = free_port()
    proxy = CuttableProxy(port).start()
    try:
        async with running_devnet(tmp_path, port=port, rpc_url=proxy.url, ws_url=proxy.ws_url, **kwargs) as net:
            yield net, proxy
    finally:
        proxy.stop()


@pytest.fixture
async def echo_net(tmp_path: Path) -> AsyncIterator[Devnet]:
    """Two echo nodes: fast to start, enough to kill one."""
    async with running_devnet(tmp_path, nodes=2, node_models=["echo"]) as net:
        yield net


@pytest.fixture
async def one_echo_net(tmp_path: Path) -> AsyncIterator[Devnet]:
    """One echo node: what a test that stops or restarts "the" node or the relay needs."""
    async with running_devnet(tmp_path, nodes=1, node_models=["echo"]) as net:
        yield net


@pytest.fixture
def net(echo_net: Devnet) -> Devnet:
    """The devnet ``client`` connects to: ``echo_net``, unless a test module overrides this
    fixture (with ``one_echo_net``, say)."""
    return echo_net


@pytest.fixture
async def client(net: Devnet) -> AsyncIterator[Client]:
    assert net.config is not None
    async with Client(config=net.config) as c:
        yield c


async def ledger(net: Devnet) -> dict[str, int]:
    """The contract's balance beside what it must hold: escrow + stakes + owed balances."""
    assert net.config is not None and net.chain is not None
    async with ChainClient(net.chain.url, net.config.contract, Identity.generate()) as chain:
        head = await chain.block_number()
        events = await chain.get_logs(0, head)
        commitments = {e.commitment for e in events if e.name == "TaskCreated"}
        accounts = {net.relay_identity.address}
        escrow = 0
        states: dict[str, int] = {}
        for c in commitments:
            task = await chain.get_task(c or b"")
            assert task is not None
            states[task.state.name] = states.get(task.state.name, 0) + 1
            accounts |= {task.creator, task.node}
            if not task.state.is_final:
                escrow += task.fee
        nodes = {e.args["node"] for e in events if e.name == "NodeJoined"}
        stakes = 0
        for n in nodes:
            info = await chain.get_node(n)
            stakes += info.stake if info else 0
        accounts |= nodes
        owed = sum([await chain.balance_of(a) for a in accounts if int(a, 16)])
        w3 = AsyncWeb3(AsyncHTTPProvider(net.chain.url))
        balance = await w3.eth.get_balance(net.config.contract)  # type: ignore[arg-type]
        await w3.provider.disconnect()
    return {"balance": balance, "escrow": escrow, "stakes": stakes, "owed": owed, **states}


async def assert_conserved(net: Devnet) -> dict[str, int]:
    """Money is conserved: the contract holds exactly escrow + stakes + owed balances.
    The one place this rule is checked; every e2e test ends with it (or the helper below)."""
    book = await ledger(net)
    assert book["balance"] == book["escrow"] + book["stakes"] + book["owed"], book
    return book


async def assert_all_ended_and_conserved(net: Devnet, *, expect: TaskState = TaskState.SUCCESS) -> dict[str, int]:
    book = await assert_conserved(net)
    unfinished = {k: v for k, v in book.items() if k in {s.name for s in TaskState if not s.is_final}}
    assert not unfinished, f"tasks not ended: {book}"
    assert book.get(expect.name, 0) > 0, book
    return book


async def wait_state(client: Client, task_id: str | bytes, state: TaskState, timeout: float = 60) -> None:
    """Poll the chain until the task (ID or commitment) is in ``state``; fail saying where it is."""
    for _ in range(int(timeout / 0.1)):
        info = await client.task(task_id)
        if info is not None and info.state == state:
            return
        await asyncio.sleep(0.1)
    info = await client.task(task_id)
    shown = task_id.hex() if isinstance(task_id, bytes) else task_id
    raise AssertionError(f"task {shown} never reached {state.name}; it is {info.state.name if info else None}")


async def scored_unvalidated(client: Client, data: str) -> tuple[TaskHandle, TaskInfo]:
    """An echo task that its node has scored and its creator has not validated: the SDK's own
    steps up to the score (the parameters uploaded by hand), and no further. Returns the handle
    and the task as it was once STARTED (its node)."""
    handle = await client.submit(TaskType.ECHO, "echo", {"data": data})
    await wait_state(client, handle.commitment, TaskState.STARTED)
    info = await client.task(handle.commitment)
    assert info is not None
    await client._transfer.upload_params(handle, handle.original, info, deadline=float("inf"))
    await wait_state(client, handle.commitment, TaskState.SCORE_READY)
    return handle, info


def funded_account(net: Devnet, amount: int = FUNDING) -> tuple[Identity, NetworkConfig]:
    """A fresh account with ``amount`` wei on the devnet's chain, and the devnet's config with its
    key: for a node or a second application the test runs itself."""
    assert net.config is not None and net.chain is not None
    identity = Identity.generate()
    net.chain.fund(identity.address, amount)
    return identity, net.config.model_copy(update={"private_key": SecretStr("0x" + identity.private_key.hex())})


GRIDTASK = Path(sys.executable).with_name("gridtask")
"""The installed ``gridtask`` console script, as a user runs it."""


def run_gridtask(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real ``gridtask`` executable in its own process, without the caller's GRIDTASK_*
    variables: only there does an uncaught exception print its traceback to stderr, as a
    user would see it (typer's CliRunner catches it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDTASK_")}
    return subprocess.run([str(GRIDTASK), *args], capture_output=True, text=True, env=env, timeout=timeout)


async def gridtask_async(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``run_gridtask`` with ``--config``, in a thread: the test's event loop (and whatever
    it is running) keeps going while the command runs."""
    return await asyncio.to_thread(run_gridtask, *args, "--config", str(config), timeout=timeout)
