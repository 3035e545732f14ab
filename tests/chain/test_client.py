"""ChainClient's typed calls of issue 8 against the committed contract on a real anvil: the
two-phase start and the sampling check, groups of three, disputes, claims, top-ups, the
deploy settings read back, and every revert reaching the caller as ``TransactionReverted``
with the contract's own reason (or as a ``ValidationError`` before anything is sent)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_abi import encode
from eth_account import Account

from gridtask.chain.anvil import Anvil
from gridtask.chain.client import MAX_DISPUTE_CIPHERTEXT, ChainClient, ChainEvent, from_bytes32
from gridtask.chain.deploy import NetworkParams, deploy
from gridtask.chain.events import EventFollower
from gridtask.crypto import (
    encrypt_result,
    keccak,
    result_digest,
    result_key,
    task_commitment,
    task_id_hash,
    task_key,
)
from gridtask.exceptions import ChainError, ConfigError, TransactionReverted, ValidationError
from gridtask.keys import Identity
from gridtask.types import GroupOutcome, NodeStatus, TaskState, TaskType

pytestmark = pytest.mark.e2e

ETHER = 10**18
FEE = 10**15
MODEL = "echo"
BPS = 10_000


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    """One chain for the module; each test deploys its own contract on it."""
    with Anvil(log_path=tmp_path_factory.mktemp("anvil") / "anvil.log") as chain:
        yield chain


@dataclass
class Net:
    """A fresh contract, a creator and three joined nodes, each with its own client."""

    anvil: Anvil
    address: str
    params: NetworkParams
    creator: ChainClient
    relay: ChainClient
    nodes: list[ChainClient]

    def client(self, identity: Identity) -> ChainClient:
        return ChainClient(self.anvil.url, self.address, identity)

    async def create(self, task_id: bytes, *, models: tuple[str, ...] = (MODEL,),
                     task_type: TaskType = TaskType.ECHO) -> tuple[bytes, bytes]:
        """A CREATED task under ``task_id`` with a fresh nonce; returns (key, nonce)."""
        nonce = os.urandom(32)
        commitment = task_commitment(task_id, nonce)
        await self.creator.create_task(
            task_type=task_type, commitment=commitment, nonce=nonce, models=list(models), min_vram=0,
            required_gpu="", params_hash=keccak(b"params" + nonce), task_size=1, timeout=600, fee=FEE)
        return task_key(self.creator.account, commitment), nonce

    async def node_of(self, key: bytes) -> ChainClient:
        task = await self.creator.get_task(key)
        assert task is not None and task.state == TaskState.STARTED, task
        return next(n for n in self.nodes if n.account == task.node)


@asynccontextmanager
async def network(anvil: Anvil, params: NetworkParams) -> AsyncIterator[Net]:
    """Deploy with ``params`` (the deployer is the relay too), fund a creator, join three nodes."""
    deployer, creator = Identity.generate(), Identity.generate()
    node_ids = [Identity.generate() for _ in range(3)]
    for ident in [deployer, creator, *node_ids]:
        anvil.fund(ident.address, 1000 * ETHER)
    address = await deploy(anvil.url, deployer, deployer.address, params)
    net = Net(anvil, address, params, ChainClient(anvil.url, address, creator),
              ChainClient(anvil.url, address, deployer), [])
    try:
        for ident in node_ids:
            node = net.client(ident)
            net.nodes.append(node)
            await node.join(gpu="cpu", vram=0, models=[MODEL], public_key=ident.encryption_public_key,
                            version=1, stake=params.min_stake)
        yield net
    finally:
        for c in [net.creator, net.relay, *net.nodes]:
            await c.aclose()


@pytest.fixture
async def net(anvil: Anvil) -> AsyncIterator[Net]:
    async with network(anvil, NetworkParams(validation_rate_bps=5000)) as net:  # both draws are common
        yield net


def drawn(h: bytes, created_block_hash: bytes, rate_bps: int) -> bool:
    """SPEC8 §2 (CHANGE 1), written out independently of the contract: keccak(task ID) against
    the low 64 bits of the creation block's hash."""
    rand = int.from_bytes(created_block_hash, "big") & (2**64 - 1)
    return int.from_bytes(keccak(encode(["bytes32", "uint256"], [h, rand])), "big") % BPS < rate_bps


async def test_start_task_then_is_sampled_follows_the_creation_blocks_hash(net: Net) -> None:
    seen = set()
    for _ in range(8):
        task_id = os.urandom(32)
        key, nonce = await net.create(task_id)
        created = await net.creator.block_number()
        h = task_id_hash(task_id)
        with pytest.raises(TransactionReverted, match="tasks: task not started") as before:
            await net.creator.is_sampled(key, h, nonce)
        assert before.value.function == "isSampled"
        created_event = (await net.creator.find_logs([net.creator.events.topic("TaskCreated")], from_block=created))[0]
        assert created_event.task_keys == (key,) and "seed" not in created_event.args
        await net.creator.start_task(key, [MODEL], 0, "")
        assert (await net.creator.get_task(key)).state == TaskState.STARTED  # type: ignore[union-attr]
        sampled = await net.creator.is_sampled(key, h, nonce)
        created_hash = await net.creator.block_hash(created)
        assert created_hash is not None
        assert sampled == drawn(h, created_hash, net.params.validation_rate_bps)
        seen.add(sampled)
        for wrong in (task_id, os.urandom(32)):  # the task ID itself does not open it either
            with pytest.raises(TransactionReverted, match="tasks: task ID does not open the commitment"):
                await net.creator.is_sampled(key, wrong, nonce)
        await (await net.node_of(key)).abort_task(key, "test over")  # frees the node for the next draw
    assert seen == {True, False}, "8 draws at 50% all came out the same (1 in 128)"


async def test_start_task_refuses_other_requirements_and_too_many_exclusions(net: Net) -> None:
    key, _ = await net.create(os.urandom(32))
    with pytest.raises(TransactionReverted, match="tasks: requirements differ from creation") as err:
        await net.creator.start_task(key, [MODEL], 8, "")
    assert err.value.function == "startTask"
    sent = await net.creator.w3.eth.get_transaction_count(net.creator.account, "pending")
    with pytest.raises(ValidationError, match=r"exclude: at most 2 nodes per task \(got 3\)"):
        await net.creator.start_task(key, [MODEL], 0, "", exclude=[n.account for n in net.nodes])
    assert await net.creator.w3.eth.get_transaction_count(net.creator.account, "pending") == sent  # never sent
    await net.creator.start_task(key, [MODEL], 0, "", exclude=[n.account for n in net.nodes[:2]])
    assert (await net.node_of(key)) is net.nodes[2]


async def test_a_revert_is_explained_at_its_own_block_without_a_tracer(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider without ``debug_traceTransaction``: the reason comes from replaying the call
    with its block's number and time, so a check that depends on them names the real cause."""

    async def no_tracer(*_: object) -> str:
        raise ChainError("debug_traceTransaction: method not found")

    monkeypatch.setattr(ChainClient, "_traced_reason", no_tracer)
    key, _ = await net.create(os.urandom(32))
    with pytest.raises(TransactionReverted) as err:  # replayed in the creation block, it would say "a later block"
        await net.creator.start_task(key, [MODEL], 8, "")
    assert err.value.reason == "tasks: requirements differ from creation"


async def _group(net: Net, task_type: TaskType = TaskType.ECHO) -> tuple[bytes, list[bytes], list[bytes]]:
    """Three started tasks under one task ID, on three different nodes: (task ID, keys, nonces)."""
    task_id = os.urandom(32)
    keys, nonces, ran_on = [], [], []
    for _ in range(3):
        key, nonce = await net.create(task_id, task_type=task_type)
        await net.creator.start_task(key, [MODEL], 0, "", exclude=ran_on)
        ran_on.append((await net.node_of(key)).account)
        keys.append(key)
        nonces.append(nonce)
    return task_id, keys, nonces


async def test_validate_task_group_revert_reaches_the_caller_with_the_contracts_reason(net: Net) -> None:
    task_id, keys, nonces = await _group(net)
    with pytest.raises(TransactionReverted) as err:
        await net.creator.validate_task_group(task_id_hash(task_id), nonces)
    assert err.value.reason == "group: a member is still running; abort it after its deadline"
    assert err.value.function == "validateTaskGroup"
    with pytest.raises(ValidationError, match=r"exactly 3 tasks \(got 2\)"):
        await net.creator.validate_task_group(task_id_hash(task_id), nonces[:2])
    with pytest.raises(ValidationError, match=r"validateTaskGroup: the arguments \(31 bytes, list\) do not fit"):
        await net.creator.validate_task_group(task_id_hash(task_id)[:31], nonces)
    with pytest.raises(ValidationError, match=r"isSampled: the arguments \(32 bytes, 32 bytes, 33 bytes\)"):
        await net.creator.is_sampled(keys[0], task_id_hash(task_id), nonces[0] + b"\0")


async def _until(follower: EventFollower, name: str, timeout: float = 30) -> AsyncIterator[ChainEvent]:
    """The follower's events up to and including the first called ``name``."""
    while (event := await follower.next(timeout)) is not None:
        yield event
        if event.name == name:
            return
    raise AssertionError(f"no {name} within {timeout}s")


async def test_a_validated_group_decodes_into_events_naming_its_tasks(net: Net) -> None:
    task_id, keys, nonces = await _group(net)
    good, bad = keccak(b"the right answer"), keccak(b"a wrong answer")
    for key, score in zip(keys, [good, good, bad], strict=True):
        await (await net.node_of(key)).submit_score(key, score, keccak(b"ciphertext" + key))
    liar = (await net.creator.get_task(keys[2])).node  # type: ignore[union-attr]
    async with EventFollower(net.creator, ws_url=net.anvil.ws_url) as follower:  # pushed and polled
        await follower.connected.wait()
        receipt = await net.creator.validate_task_group(task_id_hash(task_id), nonces)
        followed = [e async for e in _until(follower, "TaskGroupValidated")]
    in_receipt = net.creator.decode_receipt(receipt)
    assert [(e.name, e.args) for e in followed if e.block_number == receipt["blockNumber"]] == [
        (e.name, e.args) for e in in_receipt], "the follower decodes what the receipt holds"
    events = {e.name: e for e in in_receipt}
    group = events["TaskGroupValidated"]
    assert group.group_outcome == GroupOutcome.AGREED
    assert group.task_keys == tuple(keys)
    assert int(group.args["agreeing"]) == 0b011
    assert events["NodeSlashed"].args["node"] == liar and events["NodeSlashed"].task_keys == (keys[2],)
    states = [(await net.creator.get_task(k)).state for k in keys]  # type: ignore[union-attr]
    assert states == [TaskState.VALIDATED, TaskState.VALIDATED, TaskState.INVALIDATED]


async def test_claim_dispute_and_top_up_reach_the_contract(net: Net) -> None:
    task_id = os.urandom(32)
    key, nonce = await net.create(task_id)
    await net.creator.start_task(key, [MODEL], 0, "")
    node = await net.node_of(key)
    await node.submit_score(key, keccak(b"result"), keccak(b"ciphertext"))
    with pytest.raises(TransactionReverted) as early:  # a time-dependent check, explained at its block's time
        await node.claim_unvalidated(key)
    assert (early.value.function, early.value.reason) == ("claimUnvalidated", "tasks: validation window not passed")
    with pytest.raises(TransactionReverted) as soon:
        await net.creator.dispute_result(key, task_id, nonce, b"\0" * 64)
    assert (soon.value.function, soon.value.reason) == ("disputeResult", "dispute: task not delivered")
    with pytest.raises(ValidationError, match="at most 16,416 bytes can be disputed on chain"):
        await net.creator.dispute_result(key, task_id, nonce, b"\0" * (MAX_DISPUTE_CIPHERTEXT + 1))
    before = await node.get_node(node.account)
    receipt = await node.top_up(3 * ETHER)
    after = await node.get_node(node.account)
    assert before is not None and after is not None and after.stake == before.stake + 3 * ETHER
    topped = next(e for e in node.decode_receipt(receipt) if e.name == "NodeToppedUp")
    assert (topped.args["node"], int(topped.args["stake"])) == (node.account, after.stake)


@pytest.mark.parametrize("honest", [True, False], ids=["honest-node", "lying-node"])
async def test_a_dispute_invalidates_a_lying_node_and_cannot_frame_an_honest_one(anvil: Anvil, honest: bool) -> None:
    async with network(anvil, NetworkParams(validation_rate_bps=0)) as net:
        task_id = os.urandom(32)
        key, nonce = await net.create(task_id)
        await net.creator.start_task(key, [MODEL], 0, "")
        node = await net.node_of(key)
        result = b'{"answer":42}'
        delivered = encrypt_result(result_key(task_id, nonce), result if honest else b'{"answer":41}')
        await node.submit_score(key, result_digest(result), keccak(delivered))
        assert not await net.creator.is_sampled(key, task_id_hash(task_id), nonce)
        await net.creator.validate_single_task(key, task_id_hash(task_id), nonce)
        await net.relay.report_result_uploaded(key)
        if honest:  # the creator loses every way of framing it: true bytes, other bytes, another ID
            with pytest.raises(TransactionReverted) as err:
                await net.creator.dispute_result(key, task_id, nonce, delivered)
            assert err.value.reason == "dispute: the result matches the score"
            forged = encrypt_result(result_key(task_id, nonce), b'{"answer":41}')
            with pytest.raises(TransactionReverted, match="dispute: not the delivered ciphertext"):
                await net.creator.dispute_result(key, task_id, nonce, forged)
            with pytest.raises(TransactionReverted, match="does not open the commitment"):
                await net.creator.dispute_result(key, os.urandom(32), nonce, delivered)
            assert (await net.creator.get_task(key)).state == TaskState.SUCCESS  # type: ignore[union-attr]
            return
        receipt = await net.creator.dispute_result(key, task_id, nonce, delivered)
        events = {e.name: e for e in net.creator.decode_receipt(receipt)}
        assert events["TaskInvalidated"].task_keys == (key,) and events["TaskInvalidated"].args["node"] == node.account
        assert events["NodeSlashed"].args["node"] == node.account
        assert (await net.creator.get_task(key)).state == TaskState.INVALIDATED  # type: ignore[union-attr]


async def test_quit_leaves_at_once_and_says_when_the_stake_is_released(net: Net) -> None:
    node = net.nodes[0]
    receipt = await node.quit()
    quit_event = next(e for e in node.decode_receipt(receipt) if e.name == "NodeQuit")
    info = await node.get_node(node.account)
    assert info is not None and info.status == NodeStatus.LEAVING
    block = await node.w3.eth.get_block(receipt["blockNumber"])
    assert int(quit_event.args["release_at"]) == block["timestamp"] + net.params.unstake_delay == info.release_at


async def test_network_params_reads_every_deploy_parameter_back(anvil: Anvil) -> None:
    chosen = NetworkParams(
        min_stake=2 * ETHER, stake_cap_multiple=7, min_timeout=6, max_timeout=7200, validation_rate_bps=1234,
        validation_window=61, challenge_window=301, unstake_delay=302, slash_bps=4321, min_fee_per_unit=17,
        similarity_bits=tuple(3 + i for i in range(len(TaskType))))
    assert all(getattr(chosen, f.name) != f.default for f in dataclasses.fields(NetworkParams)
               if f.default is not dataclasses.MISSING), "every setting differs from its default"
    deployer = Identity.generate()
    anvil.fund(deployer.address, 100 * ETHER)
    address = await deploy(anvil.url, deployer, deployer.address, chosen)
    async with ChainClient(anvil.url, address, deployer) as chain:
        assert await chain.network_params() == chosen


async def test_deploy_refuses_an_unstake_delay_shorter_than_the_challenge_window_before_sending(
        anvil: Anvil) -> None:
    """The dry run (TaskNetwork's constructor against a stand-in verifier) finds the refusal: not
    even the verifier is deployed, so a bad setting costs nothing."""
    deployer = Identity.generate()
    anvil.fund(deployer.address, 100 * ETHER)
    with pytest.raises(ConfigError, match="config: unstake delay shorter than the challenge window"):
        await deploy(anvil.url, deployer, deployer.address, NetworkParams(challenge_window=600, unstake_delay=599))
    async with ChainClient(anvil.url, deployer.address, deployer) as chain:
        assert await chain.w3.eth.get_transaction_count(chain.account) == 0
    equal = NetworkParams(challenge_window=600, unstake_delay=600)  # the least delay allowed
    address = await deploy(anvil.url, deployer, deployer.address, equal)
    async with ChainClient(anvil.url, address, deployer) as chain:
        assert (await chain.network_params()).unstake_delay == 600
        assert len(await chain.w3.eth.get_code(await chain.verifier_address())) > 0


async def test_an_older_or_missing_contract_is_named_not_misread(anvil: Anvil, tmp_path: Path) -> None:
    """A config file from before issue 8 points at a contract without the new getters (it reverts
    bare, as a Vyper contract without a fallback does): the caller is told what to do."""
    deployer = Identity.generate()
    anvil.fund(deployer.address, 100 * ETHER)
    # init code that deploys the runtime 0x60006000fd: PUSH1 0, PUSH1 0, REVERT (any call reverts bare)
    init = bytes.fromhex("6005600c60003960056000f3" + "60006000fd")
    async with ChainClient(anvil.url, deployer.address, deployer) as chain:
        tx = {"data": "0x" + init.hex(), "gas": 100_000,
              "nonce": await chain.w3.eth.get_transaction_count(chain.account, "pending"),
              "chainId": await chain.w3.eth.chain_id, "gasPrice": 2 * await chain.w3.eth.gas_price}
        signed = Account.from_key(deployer.private_key).sign_transaction(tx)
        receipt = await chain.w3.eth.wait_for_transaction_receipt(
            await chain.w3.eth.send_raw_transaction(signed.raw_transaction))
    old = receipt["contractAddress"]
    async with ChainClient(anvil.url, old, deployer) as chain:
        with pytest.raises(ConfigError, match="not this gridtask's TaskNetwork"):
            await chain.network_params()
    async with ChainClient(anvil.url, "0x" + "42" * 20, deployer) as chain:
        with pytest.raises(ConfigError, match="no contract answers at"):
            await chain.network_params()


EXIT_SCRIPT = """
import asyncio, sys
from gridtask.chain.client import ChainClient
from gridtask.exceptions import ConfigError
from gridtask.keys import Identity

async def main():
    async with ChainClient(sys.argv[1], "0x" + "42" * 20, Identity.generate()) as chain:
        try:
            await chain.network_params()
        except ConfigError:
            print("refused")

asyncio.run(main())
"""


def test_a_process_whose_concurrent_views_all_fail_still_exits(anvil: Anvil) -> None:
    """network_params asks for every setting at once; when they fail together (no contract there),
    none may be left holding web3's session lock, or the interpreter never exits."""
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, anvil.url], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "refused"), done.stderr[-2000:]


async def test_scoring_frees_the_node_which_takes_queued_work_in_the_same_transaction(anvil: Anvil) -> None:
    """SPEC8 liveness: a node is busy only while it computes. submit_score's gas covers the queue
    scan, and validating the scored task later leaves the node busy with its new one."""
    async with network(anvil, NetworkParams(validation_rate_bps=0)) as net:
        started = []
        for _ in range(3):
            task_id = os.urandom(32)
            key, nonce = await net.create(task_id)
            await net.creator.start_task(key, [MODEL], 0, "")
            started.append((task_id, key, nonce))
        waiting, _ = await net.create(os.urandom(32))
        await net.creator.start_task(waiting, [MODEL], 0, "")
        assert (await net.creator.get_task(waiting)).state == TaskState.QUEUED  # type: ignore[union-attr]
        task_id, key, nonce = started[0]
        node = await net.node_of(key)
        receipt = await node.submit_score(key, keccak(b"result"), keccak(b"ciphertext"))
        taken = [e for e in node.decode_receipt(receipt) if e.name == "TaskStarted"]
        assert [(e.commitment, e.args["node"]) for e in taken] == [(waiting, node.account)]
        await net.creator.validate_single_task(key, task_id_hash(task_id), nonce)
        info = await node.get_node(node.account)
        assert info is not None and info.status == NodeStatus.BUSY  # still running the task it took


async def test_add_and_remove_models_reach_the_contract_and_its_event(net: Net) -> None:
    """ChainClient.add_models / remove_models on a real chain: getNodeModels follows, the
    receipt decodes into NodeModelsChanged, and a refused change carries the readable reason
    (the contract reverts with a short code; the client expands it)."""
    node = net.nodes[0]
    receipt = await node.add_models(["src:" + "ab" * 14, "vm"])
    event = next(e for e in node.decode_receipt(receipt) if e.name == "NodeModelsChanged")
    assert event.args["node"] == node.account
    assert [from_bytes32(m) for m in event.args["added"]] == ["src:" + "ab" * 14, "vm"]
    assert event.args["removed"] == []
    assert await node.get_node_models(node.account) == [MODEL, "src:" + "ab" * 14, "vm"]
    assert await node.model_node_count("vm") == 1
    receipt = await node.remove_models(["vm"])
    event = next(e for e in node.decode_receipt(receipt) if e.name == "NodeModelsChanged")
    assert ([from_bytes32(m) for m in event.args["removed"]], event.args["added"]) == (["vm"], [])
    assert await node.get_node_models(node.account) == [MODEL, "src:" + "ab" * 14]
    with pytest.raises(TransactionReverted) as err:
        await node.remove_models(["vm"])
    assert (err.value.function, err.value.reason) == ("removeModels", "nodes: model not served")
    with pytest.raises(TransactionReverted) as err:
        await node.add_models([MODEL])
    assert err.value.reason == "nodes: model already served"
