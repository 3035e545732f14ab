"""Mistaken input and failed tasks, as a user meets them on a real devnet: what no node would
run is refused before anything is paid, a task error says why in words, ``withdraw`` with
nothing owed says so, and no key ever reaches a log line."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3

import gridtask.sdk._checks as sdk_checks
from gridtask.config import save_config
from gridtask.devnet import Devnet
from gridtask.exceptions import TaskErrored
from gridtask.node.executors.tiny_llm import build_tiny_llm
from gridtask.sdk import Client, NoNodeWarning, TaskState, TaskType
from gridtask.types import TaskErrorCode

from .conftest import assert_all_ended_and_conserved, gridtask_async, ledger, start_devnet

pytestmark = pytest.mark.e2e

async def sent_transactions(net: Devnet, address: str) -> int:
    assert net.chain is not None
    w3 = AsyncWeb3(AsyncHTTPProvider(net.chain.url))
    try:
        return await w3.eth.get_transaction_count(address)  # type: ignore[arg-type]
    finally:
        await w3.provider.disconnect()


@pytest.fixture
def config_file(echo_net: Devnet, tmp_path: Path) -> Path:
    assert echo_net.config is not None
    return save_config(echo_net.config, tmp_path / "config.json")


@pytest.fixture(scope="module")
def served_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, Path]]:
    """One node serving echo and a language model ("fake-llm", behind a server that is not
    there: every task below must be refused before it could reach it)."""
    tmp = tmp_path_factory.mktemp("refusals")
    net = asyncio.run(start_devnet(tmp, nodes=1, node_models=["echo", "openai:fake-llm=http://127.0.0.1:9"]))
    try:
        assert net.config is not None
        yield net, save_config(net.config, tmp / "config.json")
    finally:
        net.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "hi", "-m", "fake-llm", "--timeout", "0"], "timeout: must be a positive number of seconds (got 0.0)"),
        (["run", "hi", "-m", "fake-llm", "--timeout=-3"], "timeout: must be a positive number of seconds (got -3.0)"),
        (["run", "hi", "-m", "fake-llm", "--fee", "0"], "fee: must be a positive number of ETH (got 0.0)"),
        (["run", "hi", "-m", "fake-llm", "--max-tokens", "500"], "max_tokens: at most 128 (got 500)"),
        (["run", "x" * 100_001, "-m", "fake-llm"], "prompt: at most 100000 characters (got 100001)"),
        (["run", "hi", "-m", "echo"], "model: 'echo' runs echo tasks, not text-generation tasks"),
        (["embed", "a", "-m", "echo"], "model: 'echo' runs echo tasks, not embedding tasks"),
        (["embed", "a", "-m", "fake-llm"], "model: 'fake-llm' runs text-generation tasks, not embedding tasks"),
        (["embed", *["t"] * 300], "texts: at most 256 per task (got 300)"),
        (["run", "hi", "-m", "fake-llm", "--validate", "sometimes"],
         "validate: one of 'sampled', 'always' (got 'sometimes')"),
        (["run", "hi", "-m", "fake-llm", "--fee", "1e-12"],
         "fee: at least 1000000000 wei for a task of size 1, the network's minimum of 1000000000 wei per unit "
         "(got 1000000)"),
    ],
)
async def test_cli_refuses_before_paying(served_net: tuple[Devnet, Path], args: list[str], message: str) -> None:
    """Each of these is a model the network serves: without the check, the task would be paid."""
    net, config_file = served_net
    assert net.config is not None
    creator = Client(config=net.config).identity.address
    sent, book = await sent_transactions(net, creator), await ledger(net)
    proc = await gridtask_async(config_file, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert await sent_transactions(net, creator) == sent  # no createTask, no fee
    assert await ledger(net) == book


async def test_withdraw_with_nothing_owed_says_so(echo_net: Devnet, client: Client, config_file: Path) -> None:
    assert await client.chain.balance_of() == 0
    sent = await sent_transactions(echo_net, client.identity.address)
    proc = await gridtask_async(config_file, "withdraw")
    assert proc.returncode == 0, proc.stderr
    assert f"nothing to withdraw: the contract owes {client.identity.address} nothing" in proc.stderr
    assert await sent_transactions(echo_net, client.identity.address) == sent
    assert await client.withdraw() == 0
    # once something is owed (a refunded task), it is taken out and said so
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoNodeWarning)
        handle = await client.submit(TaskType.LLM, "nobody-serves-it", {"prompt": "x"}, fee=10**15)
    await client.chain.cancel_task(handle.commitment)
    assert await client.chain.balance_of() == 10**15
    proc = await gridtask_async(config_file, "withdraw")
    assert proc.returncode == 0 and "withdrew 0.001 ETH" in proc.stderr, proc.stderr
    assert await client.chain.balance_of() == 0


async def test_a_task_error_names_the_limit_it_breaks(
    echo_net: Devnet, client: Client, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that did not check (an older SDK, another program) pays for echo data over the
    node's limit: the node reports a task error, and the SDK names the limit it broke."""
    monkeypatch.setattr(sdk_checks, "check_task", lambda *args: None)
    owed = await client.chain.balance_of()
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "x" * 1_000_001}, fee=5555 * 10**9)
    monkeypatch.undo()
    with pytest.raises(TaskErrored) as errored:
        await client.result(handle, timeout=60)
    assert errored.value.code == TaskErrorCode.INVALID_PARAMETERS
    assert errored.value.message == "data: at most 1000000 characters of JSON (got 1000003)"
    assert "data: at most 1000000 characters of JSON (got 1000003)" in str(errored.value)
    assert await client.chain.balance_of() == owed + 5555 * 10**9
    # `task show` has no parameters to re-check: it gives the code's documented meaning
    proc = await gridtask_async(config_file, "task", "show", handle.task_id)
    assert proc.returncode == 0, proc.stderr
    assert "state   ERRORED" in proc.stdout
    assert f"error   {TaskErrorCode.INVALID_PARAMETERS.explanation} (task error 3" in proc.stdout
    await assert_all_ended_and_conserved(echo_net, expect=TaskState.ERRORED)


@pytest.mark.slow
async def test_cli_prints_a_task_error_and_generated_text_is_utf8(echo_net: Devnet, config_file: Path) -> None:
    """A prompt within the network's limits but longer than the tiny model's context: the
    node refuses it, the CLI says why; and a real answer from the tiny model is valid text."""
    tiny = build_tiny_llm(echo_net.home / "tiny")
    echo_net.add_node([f"llm:tiny-llm={tiny}"])
    await echo_net.wait_nodes()
    proc = await gridtask_async(config_file, "run", "word " * 3000, "--model", "tiny-llm", "--timeout", "90")
    assert proc.returncode == 1, proc.stderr
    assert TaskErrorCode.INVALID_PARAMETERS.explanation in proc.stderr
    assert "(task error 3; the fee was refunded)" in proc.stderr and "Traceback" not in proc.stderr
    for prompt in ["Hey there!", "héllo wörld", "日本語"]:
        proc = await gridtask_async(config_file, "run", prompt, "--model", "tiny-llm", "--timeout", "90")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() and "\ufffd" not in proc.stdout
    await assert_all_ended_and_conserved(echo_net, expect=TaskState.SUCCESS)


async def test_no_key_in_any_log_of_a_whole_task(echo_net: Devnet, client: Client,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert echo_net.config is not None
    app_key = echo_net.config.private_key.get_secret_value().removeprefix("0x").lower()
    assert await client.run(TaskType.ECHO, "echo", {"data": "secret-free"}, timeout=60) == {"echo": "secret-free"}
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "honest"})
    handle.params = handle.params.replace(b"honest", b"forged")  # and an error path
    with pytest.raises(TaskErrored):
        await client.result(handle, timeout=60)
    text = (caplog.text + repr(client) + repr(client.config) + str(client.config)).lower()
    assert any(r.name.startswith("gridtask") for r in caplog.records)  # the SDK did log the tasks
    assert app_key not in text
    # nor in what the daemons wrote (their keys came from GRIDTASK_PRIVATE_KEY)
    daemon_logs = "".join(p.read_text(errors="replace") for p in echo_net.home.glob("*.log")).lower()
    assert daemon_logs
    for identity in [echo_net.relay_identity, *echo_net.node_identities]:
        assert identity.private_key.hex() not in daemon_logs
    assert app_key not in daemon_logs
