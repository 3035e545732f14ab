"""The SDK's side of validation groups, the core client under test (``gridtask.sdk._client`` and its parts):
what it sends to the chain and the relay, and what it makes of the answers, against a
chain and relay faked in memory, whose events reach the client as its event stream would
deliver them (``EventPump.on_event``). Paths a devnet cannot take on purpose (two members on
one node, a member that copied a score and delivered garbage, a result too large to
dispute) are here; tests/e2e/test_sdk_groups.py runs the common ones on a real devnet."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from nacl.public import PrivateKey

import gridtask.sdk._pump as sdk_pump
from gridtask.chain.client import MAX_DISPUTE_CIPHERTEXT, ChainEvent, to_bytes32
from gridtask.chain.models import ZERO_ADDRESS, NetworkParams, NodeInfo, TaskInfo
from gridtask.config import NetworkConfig
from gridtask.crypto import encrypt_result, keccak, params_hash, task_id_hash, task_key, unseal
from gridtask.exceptions import GroupFailed, ResultMismatch, TaskInvalidated, TransactionReverted, ValidationError
from gridtask.keys import Identity
from gridtask.params import TaskParams
from gridtask.scoring import canonical_json, score
from gridtask.sdk import Client, ClientState, GroupOutcome, TaskType
from gridtask.sdk._registry import NodeRegistry
from gridtask.types import NodeStatus, TaskState

Answer = Callable[[Any], bytes]  # a node's result for the echo data it was given


def honest(data: Any) -> bytes:
    return canonical_json({"echo": data})


def liar(data: Any) -> bytes:
    return canonical_json({"echo": ["forged", data]})


@dataclass
class FakeTask:
    key: bytes
    commitment: bytes
    nonce: bytes
    fee: int
    task_type: int
    state: TaskState = TaskState.CREATED
    node: str = ZERO_ADDRESS
    score: bytes = bytes(32)
    result_hash: bytes = bytes(32)
    cipher: bytes = b""


@dataclass
class FakeNetwork:
    """The contract and the relay as the SDK sees them, with nodes that answer at once.

    ``pick`` chooses a started task's node from those not excluded (the first free one by
    default); ``answers`` says what each node answers; ``delivers`` may replace what a node
    uploads (a copier's garbage)."""

    account: str
    nodes: dict[str, PrivateKey] = field(default_factory=dict)
    answers: dict[str, Answer] = field(default_factory=dict)
    delivers: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)
    sampled: bool = False
    vram: dict[str, int] = field(default_factory=dict)
    min_vram: dict[bytes, int] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    stalled: set[bytes] = field(default_factory=set)
    pick: Callable[[FakeNetwork, bytes, list[str]], str] | None = None
    tasks: dict[bytes, FakeTask] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    logs: list[ChainEvent] = field(default_factory=list)
    blocks: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    timeout: int = 60  # the stage timeout its TaskCreated logs
    client: Client | None = None  # where its events go, as the client's event stream would bring them
    serves: dict[str, list[str]] = field(default_factory=dict)  # a node's models (else only "echo")
    spec: dict[bytes, tuple[list[bytes], bool, bytes]] = field(default_factory=dict)  # models, any-of, params hash
    ran: dict[bytes, str] = field(default_factory=dict)  # the model each task's node ran

    # ---------------------------------------------------------------- contract

    async def network_params(self) -> NetworkParams:
        return NetworkParams(validation_window=600)

    async def model_node_count(self, model: bytes) -> int:
        return len(self.nodes)

    async def create_task(self, *, task_type: int, commitment: bytes, nonce: bytes, fee: int, min_vram: int,
                          models: list[bytes], params_hash: bytes, any_model: bool = False, **_: Any) -> None:
        key = task_key(self.account, commitment)
        self.min_vram[key] = min_vram
        self.spec[key] = (list(models), any_model, params_hash)
        self.tasks[key] = FakeTask(key, commitment, nonce, fee, task_type)
        self.calls.append(("create", key))
        # no block hash: the client cannot draw the sample itself and asks is_sampled
        self._event("TaskCreated", next(self.blocks), commitment=key, creator=self.account, fee=fee,
                    timeout=self.timeout)

    async def start_task(self, key: bytes, models: Any, min_vram: int, gpu: bytes, exclude: Any = (),
                         any_model: bool = False) -> None:
        assert (list(models), any_model) == self.spec[key][:2], "start: not the requirement it was created with"
        self.calls.append(("start", (key, [e.lower() for e in exclude])))
        task = self.tasks[key]
        assert task.state == TaskState.CREATED
        excluded = [e.lower() for e in exclude]
        if len(excluded) > 2:
            raise TransactionReverted("exclude: at most 2")
        node = (self.pick or first_free)(self, key, excluded)
        task.node, task.state = node, TaskState.STARTED
        self._event("TaskStarted", next(self.blocks), commitment=key, node=node)

    async def is_sampled(self, key: bytes, task_id: bytes, nonce: bytes) -> bool:
        self._open(key, task_id, nonce)
        return self.sampled

    async def get_tasks(self, keys: list[bytes]) -> list[TaskInfo | None]:
        self.calls.append(("get_tasks", keys))
        return [await self.get_task(k) for k in keys]

    async def block_number(self) -> int:
        return next(self.blocks)

    async def get_task(self, key: bytes) -> TaskInfo | None:
        t = self.tasks.get(key)
        if t is None:
            return None
        deadline = 0 if key in self.stalled else 2**40  # a silent node's task is past its deadline
        return TaskInfo(commitment=key, creator=self.account, node=t.node, fee=t.fee, state=t.state,
                        deadline=deadline, timeout=60, score=t.score, result_hash=t.result_hash)

    async def get_node(self, address: str) -> NodeInfo | None:
        return NodeInfo(address=address, status=NodeStatus.BUSY, stake=10**18, gpu="cpu",
                        vram=self.vram.get(address, 0), public_key=bytes(self.nodes[address].public_key), version=1)

    async def get_node_models(self, address: str) -> list[str]:
        return ["echo"]

    async def validate_single_task(self, key: bytes, task_id: bytes, nonce: bytes) -> None:
        self._open(key, task_id, nonce)
        if self.sampled:
            raise TransactionReverted("tasks: task was sampled: validate it as a group of three")
        self.calls.append(("validate_single", key))
        self._deliver(self.tasks[key])

    async def validate_task_group(self, opening: bytes, nonces: list[bytes]) -> list[ChainEvent]:
        keys = [task_key(self.account, keccak(opening + n)) for n in nonces]
        self.calls.append(("validate_group", keys))
        members = [self.tasks[k] for k in keys]
        assert len({m.node for m in members}) == 3, "group: two tasks ran on the same node"
        assert all(m.state in (TaskState.SCORE_READY, TaskState.ERRORED, TaskState.ABORTED) for m in members), \
            "group: a member is still running; abort it after its deadline"
        scored = [m for m in members if m.state == TaskState.SCORE_READY]
        agreeing = [m in scored and sum(m.score == o.score for o in scored) >= 2 for m in members]
        outcome = (GroupOutcome.AGREED if any(agreeing) else
                   GroupOutcome.NO_MAJORITY if len(scored) >= 2 else GroupOutcome.TOO_FEW)
        block = next(self.blocks)
        receipt = [self._event("TaskGroupValidated", block, task_id=opening, outcome=int(outcome), keys=keys,
                               agreeing=sum(1 << i for i, a in enumerate(agreeing) if a), sampled=self.sampled)]
        for member, ok in zip(members, agreeing, strict=True):
            if member.state in (TaskState.ERRORED, TaskState.ABORTED):
                continue
            if outcome != GroupOutcome.AGREED:
                member.state = TaskState.ABORTED
                self._event("TaskAborted", block, commitment=member.key, reason="group: no two results agree")
            elif ok:
                self._deliver(member)
            else:
                member.state = TaskState.INVALIDATED
                receipt.append(self._event("NodeSlashed", block, node=member.node, commitment=member.key,
                                           amount=5 * 10**17, reason="group: score disagrees with the majority"))
                self._event("TaskInvalidated", block, commitment=member.key, node=member.node,
                            reason="group: score disagrees with the majority")
        return receipt

    async def dispute_result(self, key: bytes, task_id: bytes, nonce: bytes, ciphertext: bytes) -> None:
        self._open(key, task_id_hash(task_id), nonce)  # a dispute reveals the task ID itself
        self.calls.append(("dispute", key))
        assert keccak(ciphertext) == self.tasks[key].result_hash
        self.tasks[key].state = TaskState.INVALIDATED
        self._event("TaskInvalidated", next(self.blocks), commitment=key, node=self.tasks[key].node,
                    reason="dispute: result does not match its score")

    async def abort_task(self, key: bytes, reason: str) -> None:
        task = self.tasks[key]
        assert task.state == TaskState.STARTED and key in self.stalled, "aborted before its deadline"
        self.calls.append(("abort", key))
        task.state = TaskState.ABORTED
        self._event("TaskAborted", next(self.blocks), commitment=key, reason=reason)

    def decode_receipt(self, receipt: list[ChainEvent]) -> list[ChainEvent]:
        return receipt

    async def find_logs(self, topics: list[Any], **_: Any) -> list[ChainEvent]:
        name = topics[0]
        if isinstance(name, list):  # the client's node registry: every node as it is now
            return [ChainEvent(name="NodeJoined", block_number=0, transaction_hash=bytes(32), log_index=i, args={
                "node": address, "gpu": to_bytes32("cpu"), "vram": self.vram.get(address, 0),
                "models": [to_bytes32(m) for m in self.serves.get(address, ["echo"])],
                "public_key": bytes(key.public_key)})
                for i, (address, key) in enumerate(self.nodes.items())]
        return [e for e in self.logs if (name is None or e.name == name)
                and (len(topics) < 2 or topics[1] is None or topics[1] in e.args.values())]

    @property
    def events(self) -> Any:
        class Topics:
            @staticmethod
            def topic(name: str) -> str:
                return name
        return Topics()

    # ---------------------------------------------------------------- relay and nodes

    async def upload_params(self, key: bytes, sealed: bytes) -> None:
        """The node gets its parameters, runs them, commits a score and keeps the ciphertext."""
        task = self.tasks[key]
        self.calls.append(("upload", key))
        if task.node in self.silent:  # takes the parameters, never answers: its deadline passes
            self.stalled.add(key)
            return
        params = TaskParams.decode(unseal(sealed, self.nodes[task.node]))
        models, any_model, committed = self.spec[key]
        assert params_hash(params.committed(any_model), task.nonce) == committed, "params hash mismatch"
        assert to_bytes32(params.model) in models and params.model in self.serves.get(task.node, ["echo"]), \
            f"node {task.node} cannot run {params.model}"
        self.ran[key] = params.model
        if "refuse" in params.inputs:  # parameters no node runs: a task error (refunded)
            task.state = TaskState.ERRORED
            self._event("TaskErrorReported", next(self.blocks), commitment=key, error_code=3)
            return
        plain = self.answers.get(task.node, honest)(params.inputs.get("data", params.inputs.get("prompt")))
        cipher = encrypt_result(params.result_key_bytes, plain)
        task.score = score(plain, TaskType(task.task_type))
        task.cipher = self.delivers.get(task.node, lambda c: c)(cipher)
        task.result_hash = keccak(task.cipher)
        task.state = TaskState.SCORE_READY
        self._event("TaskScoreReady", next(self.blocks), commitment=key, node=task.node, score=task.score,
                    result_hash=task.result_hash)

    async def download_result(self, key: bytes) -> bytes:
        self.calls.append(("download", key))
        return self.tasks[key].cipher

    # ---------------------------------------------------------------- helpers

    def _open(self, key: bytes, opening: bytes, nonce: bytes) -> None:
        """The contract's check: ``keccak(task ID)`` and the nonce open the task's commitment."""
        if task_key(self.account, keccak(opening + nonce)) != key:
            raise TransactionReverted("tasks: task ID does not open the commitment")

    def _deliver(self, task: FakeTask) -> None:
        """Validated, and at once delivered by the node and the relay."""
        self._event("TaskValidated", next(self.blocks), commitment=task.key, node=task.node)
        task.state = TaskState.SUCCESS
        self._event("TaskSuccess", next(self.blocks), commitment=task.key, node=task.node, fee=task.fee)

    def _event(self, name: str, block: int, **args: Any) -> ChainEvent:
        event = ChainEvent(name=name, args=args, block_number=block, transaction_hash=block.to_bytes(32, "big"),
                           log_index=len(self.logs))
        self.logs.append(event)
        if self.client is not None:
            self.client._pump.on_event(event)
        return event

    def called(self, what: str) -> list[Any]:
        return [arg for name, arg in self.calls if name == what]


def first_free(net: FakeNetwork, key: bytes, excluded: list[str]) -> str:
    busy = {t.node.lower() for t in net.tasks.values() if t.state == TaskState.STARTED}
    vram = net.min_vram.get(key, 0)
    models, any_model, _ = net.spec[key]

    def fits(node: str) -> bool:  # every model of the task, or any one of an any-of task's
        served = {to_bytes32(m) for m in net.serves.get(node, ["echo"])}
        return not served.isdisjoint(models) if any_model else served >= set(models)

    return next(n for n in net.nodes if n.lower() not in excluded and n.lower() not in busy
                and net.vram.get(n, 0) >= vram and fits(n))


@pytest.fixture
def app() -> Identity:
    return Identity.generate()


@pytest.fixture
def net(app: Identity) -> FakeNetwork:
    network = FakeNetwork(account=app.address)
    for _ in range(4):
        address = Identity.generate().address
        network.nodes[address] = PrivateKey.generate()
        network._event("NodeJoined", next(network.blocks), node=address)
    return network


@pytest.fixture
def client(app: Identity, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setattr(sdk_pump, "WAKE_CHECK_S", 0.001)
    config = NetworkConfig(rpc_url="http://127.0.0.1:9", contract="0x" + "11" * 20, relay_url="http://127.0.0.1:9",
                           private_key="0x" + app.private_key.hex())
    c = Client(config=config)
    c._chain, c._relay, c.state = net, net, ClientState.OPENED  # type: ignore[assignment]
    c._registry = NodeRegistry(net)  # type: ignore[arg-type]
    net.client = c
    return c


def node(net: FakeNetwork, index: int) -> str:
    return list(net.nodes)[index]


async def test_a_lone_task_excludes_the_nodes_of_the_two_tasks_before_it(client: Client, net: FakeNetwork) -> None:
    used = []
    for i in range(4):
        handle = await client.submit(TaskType.ECHO, "echo", {"data": i})
        assert handle.sampled is False and not handle.is_group
        assert await client.result(handle) == {"echo": i}
        used.append(handle.node.lower())
    excludes = [exclude for _, exclude in net.called("start")]
    assert excludes == [[], [used[0]], [used[1], used[0]], [used[2], used[1]]]
    assert len(set(used[:3])) == 3 and used[3] != used[2]
    assert len(net.called("validate_single")) == 4  # alone, opening the commitment (the fake checks it)
    assert net.called("get_tasks") == []  # every state came with its event: nothing read


async def test_a_missed_event_is_a_gap_read_once_its_stage_deadline_passes(client: Client, net: FakeNetwork) -> None:
    """The stream loses the TaskScoreReady: the task looks STARTED until its stage deadline
    passes with no news; then the client reads the chain once (every member in one call) and
    goes on from what it finds."""
    net.timeout = 1
    lost = []
    deliver = client._pump.on_event

    def lossy(event: ChainEvent) -> None:
        if event.name == "TaskScoreReady":
            lost.append(event)
            return
        deliver(event)

    net.client = None
    client._pump.on_event = lossy  # type: ignore[method-assign]
    net.client = client
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "gap"})
    assert await client.result(handle) == {"echo": "gap"}
    assert len(lost) == 1
    assert net.called("get_tasks") == [[handle.commitment]]


async def test_a_caller_can_keep_a_task_off_a_node_a_retry_left(client: Client, net: FakeNetwork) -> None:
    """``exclude`` (a retry elsewhere) comes first in the start's exclude list, before the
    client's recent nodes; the list stays at two."""
    first = await client.submit(TaskType.ECHO, "echo", {"data": 0})
    assert await client.result(first) == {"echo": 0}
    retry = await client.submit(TaskType.ECHO, "echo", {"data": 0}, exclude=[node(net, 2)])
    assert await client.result(retry) == {"echo": 0}
    assert net.called("start")[-1][1] == [node(net, 2).lower(), first.node.lower()]
    assert retry.node not in (node(net, 2), first.node)


async def test_the_exclude_list_leaves_a_node_to_run_the_task(client: Client, net: FakeNetwork) -> None:
    """Two nodes serve the model: a task excludes at most one, or it could never run."""
    for extra in list(net.nodes)[2:]:
        del net.nodes[extra]
    for i in range(3):
        await client.run(TaskType.ECHO, "echo", {"data": i})
    assert [len(e) for _, e in net.called("start")] == [0, 1, 1]


async def test_a_sampled_task_becomes_a_group_on_three_nodes_and_returns_the_originals_result(
    client: Client, net: FakeNetwork
) -> None:
    net.sampled = True
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "x"})
    assert handle.is_group and len(handle.members) == 3
    starts = dict(net.called("start"))
    original, first, second = handle.members
    assert starts[first.key] == [original.node.lower()]
    assert starts[second.key] == [original.node.lower(), first.node.lower()]
    assert await client.result(handle) == {"echo": "x"}
    assert net.called("validate_group") == [[m.key for m in handle.members]]
    assert net.called("validate_single") == []
    assert handle.group is not None and handle.group.outcome == GroupOutcome.AGREED
    assert handle.delivered_by is original
    # every agreeing member's delivery was checked, not only the one returned
    assert sorted(net.called("download")) == sorted(m.key for m in handle.members)
    # salted apart: three commitments, three result keys
    params = [TaskParams.decode(m.params) for m in handle.members]
    assert len({p.result_key for p in params}) == 3 and len({m.key for m in handle.members}) == 3


async def test_validate_always_creates_three_before_starting_any(client: Client, net: FakeNetwork) -> None:
    handle = await client.submit(TaskType.ECHO, "echo", {"data": 1}, validate="always")
    assert [name for name, _ in net.calls[:4]] == ["create", "create", "create", "start"]
    assert handle.sampled is False and len(handle.members) == 3
    assert await client.result(handle) == {"echo": 1}


async def test_an_outvoted_original_gives_an_agreeing_members_result(client: Client, net: FakeNetwork) -> None:
    net.sampled = True
    net.answers[node(net, 0)] = liar  # the original lands on node 0 (the first free one)
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "truth"})
    assert handle.original.node == node(net, 0)
    assert await client.result(handle) == {"echo": "truth"}
    group = handle.group
    assert group is not None and group.agreeing == (False, True, True)
    assert group.slashed == {node(net, 0): 5 * 10**17}
    assert handle.delivered_by is handle.members[1] and handle.node == handle.members[1].node
    assert "node " + node(net, 0) + " slashed" in group.describe()


async def test_no_majority_is_a_typed_error_with_the_refund(client: Client, net: FakeNetwork) -> None:
    net.sampled = True
    net.answers[node(net, 0)] = liar
    net.answers[node(net, 1)] = lambda data: canonical_json({"echo": "other"})
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "?"}, fee=10**15)
    with pytest.raises(GroupFailed) as failed:
        await client.result(handle)
    assert failed.value.outcome == GroupOutcome.NO_MAJORITY
    assert failed.value.reason == "group: no two results agree"
    assert failed.value.refunded == 3 * 10**15
    assert "ended NO_MAJORITY" in str(failed.value) and "submit it again" in str(failed.value)


async def test_two_members_on_one_node_get_a_replacement(client: Client, net: FakeNetwork) -> None:
    """The second extra lands on the first extra's node (the queue gave it there before the
    first's node was known): it gets no parameters, and a new member takes its place."""
    net.sampled = True
    starts = 0

    def pick(n: FakeNetwork, key: bytes, excluded: list[str]) -> str:
        nonlocal starts
        starts += 1
        if starts == 3:  # ignores the exclude list, as a queue without it would
            return node(n, 1)
        return first_free(n, key, excluded)

    net.pick = pick
    # the first extra finishes before the second starts, so its node is free again
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "d"})
    assert await client.result(handle) == {"echo": "d"}
    assert len(handle.spares) == 1 and handle.replacements == 1
    spare = handle.spares[0]
    assert spare.node == node(net, 1) and spare.key not in net.called("upload")
    nodes = [m.node for m in handle.members]
    assert len(set(nodes)) == 3
    assert net.called("validate_group") == [[m.key for m in handle.members]]
    replacement = handle.members[2]
    assert dict(net.called("start"))[replacement.key] == [m.node.lower() for m in handle.members[:2]]


async def test_a_delivery_that_does_not_fit_its_score_is_disputed(client: Client, net: FakeNetwork) -> None:
    garbage = encrypt_result(bytes(32), b"garbage")
    net.delivers[node(net, 0)] = lambda cipher: garbage
    handle = await client.submit(TaskType.ECHO, "echo", {"data": 5})
    with pytest.raises(ResultMismatch) as mismatch:
        await client.result(handle)
    assert mismatch.value.disputed and mismatch.value.node == node(net, 0)
    assert net.called("dispute") == [handle.commitment]
    assert "was slashed and the fee" in str(mismatch.value)
    # following it again: it is INVALIDATED on chain now, a typed error with the contract's reason
    with pytest.raises(TaskInvalidated, match="dispute: result does not match its score") as invalid:
        await client.result(handle)
    assert invalid.value.node == node(net, 0) and net.called("dispute") == [handle.commitment]


async def test_a_delivery_too_large_to_dispute_says_so(client: Client, net: FakeNetwork) -> None:
    net.delivers[node(net, 0)] = lambda cipher: b"\1" * (MAX_DISPUTE_CIPHERTEXT + 32)
    handle = await client.submit(TaskType.ECHO, "echo", {"data": 5})
    with pytest.raises(ResultMismatch, match=f"over the {MAX_DISPUTE_CIPHERTEXT} a dispute on chain takes") as m:
        await client.result(handle)
    assert not m.value.disputed and net.called("dispute") == []


async def test_a_copier_in_an_agreeing_group_is_disputed_and_the_original_returned(
    client: Client, net: FakeNetwork
) -> None:
    """An extra that committed the right score but delivered garbage agrees in the vote;
    its delivery is checked all the same, and disputed."""
    net.sampled = True
    net.delivers[node(net, 2)] = lambda cipher: encrypt_result(bytes(32), b"nothing")
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "real"})
    copier = next(m for m in handle.members if m.node == node(net, 2))
    assert await client.result(handle) == {"echo": "real"}
    assert net.called("dispute") == [copier.key]
    assert copier.rejected is not None and copier.rejected.disputed


async def test_a_fee_under_the_networks_minimum_is_refused_before_paying(client: Client, net: FakeNetwork) -> None:
    from gridtask.exceptions import ValidationError

    with pytest.raises(ValidationError, match=r"fee: at least 3000000000 wei for a task of size 3"):
        await client.submit(TaskType.ECHO, "echo", {"data": 1}, fee=10**9, size=3)
    assert net.calls == []


async def test_a_group_whose_nodes_all_refuse_the_parameters_is_a_task_error(client: Client, net: FakeNetwork) -> None:
    """The parameters are at fault, not the nodes: the user gets the task error, not a group failure."""
    from gridtask.exceptions import TaskErrored

    net.sampled = True
    handle = await client.submit(TaskType.ECHO, "echo", {"data": 1, "refuse": True})
    with pytest.raises(TaskErrored) as errored:
        await client.result(handle)
    assert errored.value.code == 3
    assert len(net.called("validate_group")) == 1  # settled all the same (TOO_FEW)


async def test_only_one_node_has_the_vram_so_no_node_is_excluded(client: Client, net: FakeNetwork) -> None:
    """model_node_count counts every echo node; the task needs VRAM only one has: excluding
    it would leave the task nowhere to run."""
    big = node(net, 3)
    net.vram[big] = 8000
    for i in range(3):
        assert await client.run(TaskType.ECHO, "echo", {"data": i}, min_vram=8000) == {"echo": i}
    assert [e for _, e in net.called("start")] == [[], [], []]
    assert {net.tasks[k].node for k, _ in net.called("start")} == {big}


async def test_requirements_are_matched_from_the_node_logs_without_a_request_per_node(
    client: Client, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task with a VRAM floor is matched against the nodes' NodeJoined logs (one search for
    the whole registry, kept a while), never by reading each node: submitting costs no
    per-node request however many nodes there are, and node keys come from the same logs."""
    for _ in range(20):
        address = Identity.generate().address
        net.nodes[address] = PrivateKey.generate()
    big = node(net, 3)
    net.vram[big] = 8000

    async def refused(*args: Any) -> Any:
        raise AssertionError("a request per node")

    for name in ("get_node", "get_node_models", "model_node_count"):
        monkeypatch.setattr(net, name, refused)
    searches = 0
    find_logs = net.find_logs

    async def counted(topics: list[Any], **kw: Any) -> list[ChainEvent]:
        nonlocal searches
        searches += isinstance(topics[0], list)
        return await find_logs(topics, **kw)

    monkeypatch.setattr(net, "find_logs", counted)
    for i in range(3):
        assert await client.run(TaskType.ECHO, "echo", {"data": i}, min_vram=8000) == {"echo": i}
    assert await client.serving(["echo"], min_vram=8000) == 1 and await client.serving(["echo"]) == 24
    assert searches == 1


async def test_a_member_silent_past_its_deadline_is_aborted_and_the_group_goes_on(
    client: Client, net: FakeNetwork
) -> None:
    net.sampled = True
    net.timeout = 1  # the client suspects a stall 1 s after the last news of a member, and reads it
    net.silent.add(node(net, 1))  # the first extra's node
    handle = await client.submit(TaskType.ECHO, "echo", {"data": "on"})
    silent = handle.members[1]
    assert silent.node == node(net, 1)
    assert await client.result(handle) == {"echo": "on"}
    assert net.called("abort") == [silent.key]
    assert net.called("validate_group") == [[m.key for m in handle.members]]  # only after the abort
    assert handle.group is not None and handle.group.agreeing == (True, False, True)
    assert handle.group.outcome == GroupOutcome.AGREED and handle.group.slashed == {}


async def test_a_stage_longer_than_half_the_validation_window_warns_only_where_groups_form(
    client: Client, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group member that stalls for two stages must be over before a scored member may claim
    its fee unvalidated: the SDK warns about a longer stage, but only on a network that samples
    (or for validate="always"), where a group can form at all."""
    import warnings

    from gridtask.sdk import StageTimeoutWarning

    for _ in range(4):  # five tasks stay started below: enough free nodes for them all
        address = Identity.generate().address
        net.nodes[address] = PrivateKey.generate()
        net._event("NodeJoined", next(net.blocks), node=address)
    with pytest.warns(StageTimeoutWarning, match="over half the network's validation window"):
        await client.submit(TaskType.ECHO, "echo", {"data": 1}, stage_timeout=301)  # window 600 s, rate 10%
    monkeypatch.setattr(net, "network_params", lambda: _params(validation_window=600, validation_rate_bps=0))
    client._network = None  # read once per client: a client of the network that samples nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error", StageTimeoutWarning)
        await client.submit(TaskType.ECHO, "echo", {"data": 2}, stage_timeout=301)
    with pytest.warns(StageTimeoutWarning):
        await client.submit(TaskType.ECHO, "echo", {"data": 3}, stage_timeout=301, validate="always")


async def _params(**fields: Any) -> NetworkParams:
    return NetworkParams(**fields)


# ---------------------------------------------------------------- any-of tasks


async def test_an_any_of_task_runs_the_first_listed_model_its_node_serves(client: Client, net: FakeNetwork) -> None:
    """No node serves model-a: the task goes on chain needing any one of [model-a, model-b]
    (created and started so), lands on a node serving model-b, and its parameters name
    model-b, under the hash committed with the model left open (the fake node checks both)."""
    for address in net.nodes:
        net.serves[address] = ["model-b"]
    handle = await client.submit(TaskType.LLM, ["model-a", "model-b"], {"prompt": "hi"}, any_model=True)
    assert net.spec[handle.commitment][:2] == ([to_bytes32("model-a"), to_bytes32("model-b")], True)
    assert await client.result(handle) == {"echo": "hi"}
    assert net.ran == {handle.commitment: "model-b"} and handle.model_run == "model-b"


async def test_a_sampled_any_of_task_makes_its_group_on_the_model_its_original_ran(
    client: Client, net: FakeNetwork
) -> None:
    """The original lands on a node serving only model-b; the two members added once it was
    sampled need model-b alone (all-of), so the three run one model and agree, although
    their nodes serve model-a too, the first listed."""
    net.sampled = True
    first, *others = net.nodes
    net.serves[first] = ["model-b"]
    for address in others:
        net.serves[address] = ["model-a", "model-b"]
    handle = await client.submit(TaskType.LLM, ["model-a", "model-b"], {"prompt": "hi"}, any_model=True)
    assert await client.result(handle) == {"echo": "hi"}
    assert handle.is_group and handle.group is not None and handle.group.agreed
    assert [net.ran[m.key] for m in handle.members] == ["model-b"] * 3
    assert [net.spec[m.key][:2] for m in handle.members[1:]] == [([to_bytes32("model-b")], False)] * 2


async def test_an_any_of_task_validated_as_a_group_from_the_start_is_refused_before_paying(client: Client) -> None:
    client.state = ClientState.UNOPENED
    with pytest.raises(ValidationError, match="any_model: a task validated by a group from the start"):
        await client.submit(TaskType.LLM, ["model-a", "model-b"], {"prompt": "hi"}, any_model=True,
                            validate="always")


async def test_a_replacement_in_an_any_of_group_needs_the_originals_model_too(client: Client, net: FakeNetwork) -> None:
    net.sampled = True
    first, *others = net.nodes
    net.serves[first] = ["model-b"]
    for address in others:
        net.serves[address] = ["model-a", "model-b"]
    starts = 0

    def pick(n: FakeNetwork, key: bytes, excluded: list[str]) -> str:
        nonlocal starts
        starts += 1
        return node(n, 1) if starts == 3 else first_free(n, key, excluded)  # the second extra: a duplicate

    net.pick = pick
    handle = await client.submit(TaskType.LLM, ["model-a", "model-b"], {"prompt": "hi"}, any_model=True)
    assert await client.result(handle) == {"echo": "hi"}
    assert handle.replacements == 1 and len({m.node for m in handle.members}) == 3
    assert [net.ran[m.key] for m in handle.members] == ["model-b"] * 3
    assert net.spec[handle.members[2].key][:2] == ([to_bytes32("model-b")], False)
