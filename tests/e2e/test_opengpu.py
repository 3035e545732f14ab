"""OpenGPU on a real devnet: anvil with TaskNetwork and the SourceRegistry, the relay holding
the bundles, nodes serving every source (``--sources all``) in their bubblewrap sandbox.

The sources are published before the nodes start (they load them at start-up); the quick start
example publishes its own while the nodes run (they announce it with ``addModels``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3

import gridtask.sdk.opengpu as ogpu
from gridtask.chain.anvil import rpc_call
from gridtask.chain.client import ChainClient
from gridtask.config import NetworkConfig, save_config
from gridtask.devnet import Devnet
from gridtask.exceptions import TaskErrored
from gridtask.keys import Identity
from gridtask.limits import source_model
from gridtask.node.sandbox import sandbox_available
from gridtask.sdk import Client, TaskType
from gridtask.types import TaskErrorCode, TaskState

from .conftest import assert_conserved, funded_account, start_devnet

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not sandbox_available(), reason="no bubblewrap sandbox here")]

ROOT = Path(__file__).resolve().parents[2]
ADDER = ROOT / "tests" / "sdk" / "opengpu_sources" / "adder"
CHAT = ROOT / "examples" / "opengpu_source"
PAYMENT = 10**15
SEED_QUICK_START = '''
import time  # (the seed uses time without importing it)
import gridtask.sdk.opengpu as ogpu  # was: import ogpu.client
from web3 import Web3

# 1. Configure chain
ogpu.client.ChainConfig.set_chain(ogpu.client.ChainId.OGPU_TESTNET)

# 2. Create task
task_info = ogpu.client.TaskInfo(
    source="{source}",
    config=ogpu.client.TaskInput(
        function_name="text2text",
        data={{"messages": [{{"role": "user", "content": "Hello!"}}]}}
    ),
    expiryTime=int(time.time()) + 600,
    payment=Web3.to_wei(0.01, "ether")
)

# 3. Publish task
task_address = ogpu.client.publish_task(task_info)
print(f"✅ Task published: {{task_address}}")
'''


def _info(where: Path, delivery: ogpu.client.DeliveryMethod, *, name: str = "adder") -> ogpu.client.SourceInfo:
    return ogpu.client.SourceInfo(
        name=name, description="test source", logoUrl="", imageEnvs=ogpu.client.ImageEnvironments(cpu=str(where)),
        minPayment=PAYMENT, minAvailableLockup=0, maxExpiryDuration=3600, deliveryMethod=delivery)


def _call(source: str, function: str, data: dict, *, expiry_s: int = 300, payment: int = PAYMENT,
          responses: int = 2) -> ogpu.client.TaskInfo:
    return ogpu.client.TaskInfo(source=source, config=ogpu.client.TaskInput(function_name=function, data=data),
                                expiryTime=int(time.time()) + expiry_s, payment=payment, responses=responses)


class World:
    """The devnet, its config file, and the sources published before its nodes started."""

    def __init__(self, net: Devnet, config_file: Path, sources: dict[str, str]) -> None:
        self.net, self.config_file, self.sources = net, config_file, sources

    @property
    def config(self) -> NetworkConfig:
        assert self.net.config is not None
        return self.net.config


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("opengpu")
    net = asyncio.run(start_devnet(tmp, nodes=0))
    try:
        assert net.config is not None
        ogpu.client.ChainConfig.set_config(net.config)
        sources = {
            "first": ogpu.client.publish_source(_info(ADDER, ogpu.client.DeliveryMethod.FIRST_RESPONSE)).address,
            "manual": ogpu.client.publish_source(_info(ADDER, ogpu.client.DeliveryMethod.MANUAL_CONFIRMATION)).address,
            "chat": ogpu.client.publish_source(_info(CHAT, ogpu.client.DeliveryMethod.FIRST_RESPONSE,
                                                     name="hello-chat")).address,
        }
        for _ in range(3):
            net.add_node(["echo"])
        asyncio.run(net.wait_nodes())
        for address in sources.values():
            ogpu.client.Source(address).wait_until_served(timeout=120, nodes=3)
        yield World(net, save_config(net.config, tmp / "config.json"), sources)
    finally:
        ogpu.client.ChainConfig.set_config(None)
        net.stop()


async def _chain_state(world: World, task: str) -> TaskState:
    async with ChainClient.from_config(world.config, Identity.generate()) as chain:
        info = await chain.get_task(bytes.fromhex(task.removeprefix("0x")))
        assert info is not None
        return info.state


async def _tx_count(world: World, address: str) -> int:
    w3 = AsyncWeb3(AsyncHTTPProvider(world.config.rpc_url))
    try:
        return int(await w3.eth.get_transaction_count(address))  # type: ignore[arg-type]
    finally:
        await w3.provider.disconnect()


def test_first_response_runs_in_a_nodes_sandbox_and_finalizes(world: World) -> None:
    start = asyncio.run(_block(world))
    task = ogpu.client.publish_task(_call(world.sources["first"], "add", {"a": 20, "b": 22}))
    assert task.wait(timeout=180) == ogpu.client.TaskStatus.FINALIZED
    (response,) = task.get_responses()
    assert response.fetch_data() == {"total": 42, "ready": True}
    assert task.get_confirmed_response() == response and response.is_confirmed()
    assert asyncio.run(_chain_state(world, task.address)) == TaskState.SUCCESS
    published, attempted, submitted = asyncio.run(_first_of_each_watcher(world.sources["first"], task.address, start))
    assert published.task == task.address and published.source == world.sources["first"]
    assert attempted.task == task.address and attempted.provider == response.provider
    assert submitted.task == task.address and submitted.block_number >= attempted.block_number
    asyncio.run(assert_conserved(world.net))


async def _first_of_each_watcher(source: str, task: str, start: int) -> list[object]:
    """The first event each watcher yields from ``start`` (an async generator each, as ogpu's)."""

    async def first(generator: Any) -> object:
        async for event in generator:
            return event
        raise AssertionError("the watcher ended")

    watchers = [
        ogpu.client.watch_task_published(source, from_block=start, poll_interval=0.2),
        ogpu.client.watch_attempted(task, from_block=start, poll_interval=0.2),
        ogpu.client.watch_response_submitted(task, from_block=start, poll_interval=0.2),
    ]
    return list(await asyncio.wait_for(asyncio.gather(*(first(w) for w in watchers)), 30))


def test_manual_confirmation_gets_two_nodes_responses_and_records_the_choice(world: World) -> None:
    start = asyncio.run(_block(world))
    task = ogpu.client.publish_task(_call(world.sources["manual"], "add", {"a": 1, "b": 2}, responses=2))
    assert task.wait(timeout=240) == ogpu.client.TaskStatus.RESPONDED
    responses = task.get_responses()
    assert len(responses) == 2 and len({r.provider for r in responses}) == 2  # two different nodes
    assert all(r.fetch_data() == {"total": 3, "ready": True} for r in responses)
    assert task.get_confirmed_response() is None
    chosen = responses[1]
    assert ogpu.client.confirm_response(chosen.address) == chosen.address
    assert task.get_status() == ogpu.client.TaskStatus.FINALIZED and task.get_confirmed_response() == chosen
    with pytest.raises(ogpu.errors.ResponseAlreadyConfirmedError):
        responses[0].confirm()
    confirmed = asyncio.run(_confirmed_on_chain(world, task.address))
    assert confirmed == chosen.address
    statuses = asyncio.run(_statuses(task.address, start, until=ogpu.client.TaskStatus.FINALIZED))
    assert statuses[0] == ogpu.client.TaskStatus.NEW and ogpu.client.TaskStatus.ATTEMPTED in statuses
    assert ogpu.client.TaskStatus.RESPONDED in statuses
    changes = asyncio.run(_first(ogpu.client.watch_response_status_changed(chosen.address, from_block=start,
                                                                           poll_interval=0.2), 2))
    assert [c.status for c in changes] == [ogpu.client.ResponseStatus.SUBMITTED, ogpu.client.ResponseStatus.CONFIRMED]
    assert all(c.response == chosen.address for c in changes) and changes[0].block_number <= changes[1].block_number
    asyncio.run(assert_conserved(world.net))


def test_nodes_that_serve_a_source_are_its_registrations(world: World) -> None:
    """ogpu's ``watch_registered``: each node announcing the source's model, numbered from the
    source's first registration whatever block a watcher starts from."""
    source = world.sources["first"]
    seen = asyncio.run(_first(ogpu.client.watch_registered(source, from_block=0, poll_interval=0.2), 3))
    assert [e.registrant_id for e in seen] == [0, 1, 2]
    assert len({e.provider for e in seen}) == 3 and all(e.source == source for e in seen)
    later = seen[-1].block_number
    (resumed,) = asyncio.run(_first(ogpu.client.watch_registered(source, from_block=later, poll_interval=0.2), 1))
    first_there = next(e for e in seen if e.block_number >= later)
    assert (resumed.provider, resumed.registrant_id) == (first_there.provider, seen.index(first_there))


async def _first(watcher: Any, count: int) -> list[Any]:
    """The first ``count`` events an async-generator watcher yields (30 s at most)."""
    got: list[Any] = []

    async def collect() -> None:
        async for event in watcher:
            got.append(event)
            if len(got) == count:
                return

    await asyncio.wait_for(collect(), 30)
    return got


async def _block(world: World) -> int:
    async with ChainClient.from_config(world.config, Identity.generate()) as chain:
        return await chain.block_number()


async def _confirmed_on_chain(world: World, task: str) -> str:
    runtime = ogpu.client._Runtime.get()
    raw = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
        runtime.registry.confirmed(runtime.client.identity.address, bytes.fromhex(task.removeprefix("0x"))),
        runtime.loop))
    return "0x" + raw.hex()


async def _statuses(task: str, from_block: int, until: ogpu.client.TaskStatus) -> list[ogpu.client.TaskStatus]:
    seen: list[ogpu.client.TaskStatus] = []

    async def collect() -> None:
        async for event in ogpu.client.watch_task_status_changed(task, from_block=from_block, poll_interval=0.2):
            seen.append(event.status)
            if event.status == until:
                return

    await asyncio.wait_for(collect(), 30)
    return seen


def test_the_quick_start_example_runs_in_one_command(world: World) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "opengpu_quickstart.py"), "--prompt", "hi there"],
                         env={**os.environ, "GRIDTASK_CONFIG": str(world.config_file)}, capture_output=True,
                         text=True, timeout=420, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "served by" in out.stdout
    assert out.stdout.count("You said 'hi there' (2 words).") == 2  # two nodes' responses
    assert "task FINALIZED" in out.stdout
    asyncio.run(assert_conserved(world.net))


def test_the_seeds_quick_start_runs_with_only_imports_and_address_changed(world: World, tmp_path: Path) -> None:
    script = tmp_path / "seed_quickstart.py"
    script.write_text(SEED_QUICK_START.format(source=world.sources["chat"]))
    out = subprocess.run([sys.executable, str(script)], env={**os.environ, "GRIDTASK_CONFIG": str(world.config_file)},
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    task = out.stdout.split("Task published: ")[1].split()[0]
    # The script exits after publishing: at exit the SDK waits until its task ends (it seals the
    # parameters to the node), so by now the node has been paid.
    assert asyncio.run(_chain_state(world, task)) == TaskState.SUCCESS
    asyncio.run(assert_conserved(world.net))


def test_typed_errors_refuse_before_anything_is_sent(world: World) -> None:
    source = world.sources["first"]
    identity, config = funded_account(world.net, amount=PAYMENT // 2)
    key = config.private_key.get_secret_value()
    me = asyncio.run(_tx_count(world, ogpu.client._Runtime.get().client.identity.address))
    before = asyncio.run(assert_conserved(world.net))["balance"]
    cases: list[tuple[type[Exception], ogpu.client.TaskInfo, str | None]] = [
        (ogpu.errors.TaskExpiredError, _call(source, "add", {"a": 1, "b": 1}, expiry_s=-5), None),
        (ogpu.errors.PaymentBelowMinimumError, _call(source, "add", {"a": 1, "b": 1}, payment=PAYMENT - 1), None),
        (ogpu.errors.UnknownFunctionError, _call(source, "ad", {"a": 1, "b": 1}), None),
        (ogpu.errors.InvalidTaskDataError, _call(source, "add", {"a": "one", "b": 1}), None),
        (ogpu.errors.ExpiryTooLongError, _call(source, "add", {"a": 1, "b": 1}, expiry_s=7200), None),
        (ogpu.errors.InsufficientBalanceError, _call(source, "add", {"a": 1, "b": 1}), key),
    ]
    for kind, info, private_key in cases:
        with pytest.raises(kind) as caught:
            ogpu.client.publish_task(info, private_key=private_key)
        assert "nothing was sent" in str(caught.value) or kind is ogpu.errors.TaskExpiredError, caught.value
    assert asyncio.run(_tx_count(world, ogpu.client._Runtime.get().client.identity.address)) == me
    assert asyncio.run(_tx_count(world, identity.address)) == 0
    assert asyncio.run(assert_conserved(world.net))["balance"] == before  # nothing escrowed


def test_bad_data_is_refused_again_by_the_node(world: World) -> None:
    """A client that skips the SDK's checks (the core Client, by hand) reaches the node, which
    refuses the call in its sandbox, or a fee under the source's minPayment (read from the
    registry) before running it: a task error with its code, the fee refunded."""

    async def go() -> list[tuple[int, str]]:
        codes = []
        async with Client(config=world.config) as client:
            model = source_model(world.sources["first"])
            for function, data, fee in (("nope", {"a": 1}, PAYMENT), ("add", {"a": "one", "b": 1}, PAYMENT),
                                        ("add", {"a": 1, "b": 2}, PAYMENT - 1)):
                handle = await client.submit(TaskType.SOURCE, model, {"source": world.sources["first"],
                                                                      "function": function, "data": data},
                                             fee=fee)
                with pytest.raises(TaskErrored) as caught:
                    await client.result(handle, timeout=120)
                codes.append((caught.value.code, function))
        return codes

    assert asyncio.run(go()) == [(TaskErrorCode.UNKNOWN_FUNCTION, "nope"), (TaskErrorCode.INVALID_PARAMETERS, "add"),
                                 (TaskErrorCode.INVALID_PARAMETERS, "add")]
    asyncio.run(assert_conserved(world.net))


def test_a_call_that_fails_in_the_sandbox_fails_the_task_and_refunds(world: World) -> None:
    task = ogpu.client.publish_task(_call(world.sources["first"], "explode", {"a": 7, "b": 1}))
    assert task.wait(timeout=180) == ogpu.client.TaskStatus.FAILED
    assert "failed in the node's sandbox" in (task.get_error() or ""), task.get_error()  # PAYLOAD_FAILED's words
    assert task.get_refunded() == PAYMENT
    with pytest.raises(ogpu.errors.TaskFailedError) as caught:
        task.result()
    assert caught.value.code == TaskErrorCode.PAYLOAD_FAILED
    asyncio.run(assert_conserved(world.net))


def test_an_expired_task_refunds_its_payment(world: World) -> None:
    runtime = ogpu.client._Runtime.get()
    me = runtime.client.identity.address
    owed_before = asyncio.run(_owed(world, me))
    task = ogpu.client.publish_task(_call(world.sources["first"], "nap", {"seconds": 120}, expiry_s=12))
    status = task.wait(timeout=180)
    assert status == ogpu.client.TaskStatus.EXPIRED, task.get_error()
    assert task.get_responses() == [] and task.get_refunded() == PAYMENT
    assert asyncio.run(_chain_state(world, task.address)) == TaskState.ABORTED
    assert asyncio.run(_owed(world, me)) == owed_before + PAYMENT  # the payment is back in its balance
    with pytest.raises(ogpu.errors.TaskExpiredError, match="refunded"):
        task.result()
    asyncio.run(assert_conserved(world.net))


def _wait_for_logs(world: World, text: str, timeout: float) -> None:
    """Until every node's log says ``text`` (what a node loaded is seen nowhere else)."""
    deadline = time.monotonic() + timeout
    logs = [world.net.home / f"{name}.log" for name in world.net.processes if name.startswith("node")]
    while not all(text in log.read_text() for log in logs):
        assert time.monotonic() < deadline, f"not every node logged {text!r}"
        time.sleep(0.3)


async def _owed(world: World, address: str) -> int:
    async with ChainClient.from_config(world.config, Identity.generate()) as chain:
        return await chain.balance_of(address)


def test_receipt_timeout_when_the_transaction_is_not_mined(world: World) -> None:
    """Mining stopped after the source was read and before createTask was mined: the typed error,
    which says the transaction was broadcast."""
    assert world.net.chain is not None
    _, config = funded_account(world.net)
    key = config.private_key.get_secret_value()
    ogpu.client.Source(world.sources["first"], key).get_params()  # the runtime is up before mining stops
    rpc_call(world.net.chain.url, "evm_setAutomine", [False])
    try:
        with pytest.raises(ogpu.errors.TxReceiptTimeoutError, match="was broadcast"):
            ogpu.client.publish_task(_call(world.sources["first"], "add", {"a": 1, "b": 1}), private_key=key,
                                     receipt_timeout=3)
    finally:
        rpc_call(world.net.chain.url, "evm_setAutomine", [True])
        rpc_call(world.net.chain.url, "evm_mine", [])
    asyncio.run(assert_conserved(world.net))


def test_only_the_owner_changes_a_source_and_an_inactive_one_takes_no_task(world: World) -> None:
    source = ogpu.client.publish_source(_info(ADDER, ogpu.client.DeliveryMethod.FIRST_RESPONSE, name="short-lived"))
    _, config = funded_account(world.net)
    stranger = config.private_key.get_secret_value()
    with pytest.raises(ogpu.errors.NotSourceOwnerError):
        ogpu.client.update_source(source.address, _info(CHAT, ogpu.client.DeliveryMethod.FIRST_RESPONSE),
                                  private_key=stranger)
    # The owner replaces the code: the nodes (serving it since it was published) load the new bundle.
    source.wait_until_served(timeout=60, nodes=3)
    source.update(_info(CHAT, ogpu.client.DeliveryMethod.FIRST_RESPONSE, name="short-lived"))
    new_bundle = source.get_params().bundleHash.removeprefix("0x")[:12]
    _wait_for_logs(world, f"source {source.address}: serving ['text2text'] (bundle {new_bundle})", timeout=60)
    task = ogpu.client.publish_task(_call(source.address, "text2text", {"messages": [{"role": "user",
                                                                                     "content": "new code"}]}))
    assert task.result(timeout=120) == {"role": "assistant", "content": "You said 'new code' (2 words)."}
    with pytest.raises(ogpu.errors.NotSourceOwnerError):
        ogpu.client.inactivate_source(source.address, private_key=stranger)
    assert source.get_status() == ogpu.client.SourceStatus.ACTIVE
    source.inactivate()
    assert source.get_status() == ogpu.client.SourceStatus.INACTIVE
    with pytest.raises(ogpu.errors.SourceInactiveError):
        ogpu.client.publish_task(_call(source.address, "add", {"a": 1, "b": 1}))


def test_a_task_no_node_took_is_canceled_and_refunded(world: World, tmp_path: Path) -> None:
    """A source that loads on its publisher's machine but not in any node's sandbox: no node
    serves it, its task waits in the queue (NEW), and cancel() takes the payment back."""
    code = tmp_path / "main.py"
    code.write_text((ADDER / "main.py").read_text().replace(
        "STATE = {", 'Path("/etc/hostname").read_text()  # not in the sandbox\nSTATE = {').replace(
        "import time\n", "import time\nfrom pathlib import Path\n"))
    source = ogpu.client.publish_source(_info(code, ogpu.client.DeliveryMethod.FIRST_RESPONSE, name="unloadable"))
    with pytest.warns(UserWarning, match="no node serves"):
        task = ogpu.client.publish_task(_call(source.address, "add", {"a": 1, "b": 1}))
    assert task.get_status() == ogpu.client.TaskStatus.NEW
    task.cancel()
    assert task.get_status() == ogpu.client.TaskStatus.CANCELED
    assert task.get_refunded() == PAYMENT
    assert asyncio.run(_chain_state(world, task.address)) == TaskState.ABORTED
    with pytest.raises(ogpu.errors.TaskAlreadyFinalizedError):
        ogpu.client.cancel_task(task)
    asyncio.run(assert_conserved(world.net))
