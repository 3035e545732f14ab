"""The chains the relay's tests run against: an in-memory fake, and the real contract.

Both implement the relay's ``RelayChain`` (``get_task``, ``report_result_uploaded``) and
``add(creator, node, state, result=..., seed=...)``, which brings a task to ``state`` and
returns the ID the relay is asked about. ``ContractChain`` does it with the committed
``TaskNetwork`` bytecode in titanoboa's in-process EVM, by the real calls of each party
(join, createTask, startTask, submitScore, validateSingleTask, reportResultUploaded,
abortTask, reportTaskError), so the relay's guards are checked against what the contract really
records, not against what a fake assumes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

from eth_abi import encode

from gridtask.chain.artifact import abi, bytecode
from gridtask.chain.deploy import VERIFIER, NetworkParams, constructor_args
from gridtask.chain.models import ZERO_ADDRESS, TaskInfo
from gridtask.crypto import keccak, task_commitment, task_id_hash, task_key
from gridtask.exceptions import ChainError, TransactionReverted
from gridtask.keys import Identity
from gridtask.types import TaskState

RESULT = b"sealed result bytes"
ETHER = 10**18


class FakeChain:
    """In-memory stand-in for the web3 client: tasks by ID, reports recorded, faults on demand."""

    def __init__(self) -> None:
        self.tasks: dict[bytes, TaskInfo] = {}
        self.reported: list[bytes] = []
        self.report_error: Exception | None = None
        self.unreachable = False

    async def get_task(self, commitment: bytes) -> TaskInfo | None:
        if self.unreachable:
            raise ChainError("connection refused")
        return self.tasks.get(commitment)

    async def report_result_uploaded(self, commitment: bytes) -> None:
        if self.report_error is not None:
            raise self.report_error
        self.reported.append(commitment)
        self.set_state(commitment, TaskState.SUCCESS)

    def add(
        self,
        creator: Identity,
        node: Identity | None,
        state: TaskState,
        *,
        result: bytes = RESULT,
        seed: int = 1,
    ) -> bytes:
        commitment = keccak(seed.to_bytes(32, "big"))
        self.tasks[commitment] = TaskInfo(
            commitment=commitment,
            creator=creator.address,
            node=node.address if node else ZERO_ADDRESS,
            fee=10**18,
            state=state,
            deadline=0,
            timeout=60,
            score=b"\x00" * 32,
            result_hash=keccak(result),
        )
        return commitment

    def set_state(self, commitment: bytes, state: TaskState) -> None:
        self.tasks[commitment] = dataclasses.replace(self.tasks[commitment], state=state)


def _b32(text: str) -> bytes:
    return text.encode().ljust(32, b"\0")


class ContractChain:
    """The committed TaskNetwork bytecode in titanoboa; every party acts by its own calls."""

    _nonces = itertools.count(1)

    def __init__(self) -> None:
        import boa

        self._boa = boa
        self.relay = boa.env.generate_address("relay")
        verifier, _ = boa.env.deploy_code(bytecode=bytes.fromhex(bytecode(VERIFIER).removeprefix("0x")))
        params = NetworkParams(max_timeout=3600, validation_rate_bps=0)  # nothing sampled: one node per task
        constructor = encode(*constructor_args(params, self.relay, str(verifier)))
        address, _ = boa.env.deploy_code(bytecode=bytes.fromhex(bytecode().removeprefix("0x")) + constructor)
        self.contract = boa.loads_abi(json.dumps(abi()), name="TaskNetwork").at(address)
        self.reported: list[bytes] = []
        self._joined: set[str] = set()

    # ------------------------------------------------------------ RelayChain

    async def get_task(self, commitment: bytes) -> TaskInfo | None:
        creator, node, fee, state, deadline, timeout, score, result_hash = self.contract.getTask(commitment)
        if int(state) == 0:
            return None
        return TaskInfo(
            commitment=commitment, creator=str(creator), node=str(node), fee=int(fee),
            state=TaskState(int(state)), deadline=int(deadline), timeout=int(timeout),
            score=bytes(score), result_hash=bytes(result_hash),
        )

    async def report_result_uploaded(self, commitment: bytes) -> None:
        from boa import BoaError

        try:
            with self._boa.env.prank(self.relay):
                self.contract.reportResultUploaded(commitment)
        except BoaError as exc:
            raise TransactionReverted(str(exc).splitlines()[0], function="reportResultUploaded") from None
        self.reported.append(commitment)

    # ------------------------------------------------------------ parties

    def add(
        self,
        creator: Identity,
        node: Identity | None,
        state: TaskState,
        *,
        result: bytes = RESULT,
        seed: int = 1,
    ) -> bytes:
        """A new task brought to ``state``; ``node=None`` leaves it queued (nobody serves it)."""
        env = self._boa.env
        model = f"m-{node.address[2:14].lower()}" if node else "served-by-nobody"
        if node is not None:
            self._join(node, model)
        env.set_balance(creator.address, 100 * ETHER)
        nonce = keccak(b"relay-test-nonce" + next(self._nonces).to_bytes(8, "big") + seed.to_bytes(8, "big"))
        opening = task_id_hash(keccak(b"task" + nonce))  # what the creator reveals to validate
        commitment = task_commitment(keccak(b"task" + nonce), nonce)
        with env.prank(creator.address):
            self.contract.createTask(
                0, commitment, nonce, [_b32(model)], 0, b"\0" * 32, b"\x22" * 32, 1, 600, False, value=ETHER // 100
            )
        task_id = task_key(creator.address, commitment)
        env.time_travel(blocks=1)  # the creation block's hash selects the node
        with env.prank(creator.address):
            self.contract.startTask(task_id, [_b32(model)], 0, b"\0" * 32, [], False)
        if node is None:
            assert TaskState(self.contract.getTask(task_id)[3]) == TaskState.QUEUED
            return task_id
        assert TaskState(self.contract.getTask(task_id)[3]) == TaskState.STARTED
        with env.prank(node.address):
            if state == TaskState.ABORTED:
                self.contract.abortTask(task_id, "node gave up")
            elif state == TaskState.ERRORED:
                self.contract.reportTaskError(task_id, 3)
            elif state >= TaskState.SCORE_READY:
                self.contract.submitScore(task_id, b"\x01" * 32, keccak(result))
        if state in (TaskState.VALIDATED, TaskState.SUCCESS):
            with env.prank(creator.address):
                self.contract.validateSingleTask(task_id, opening, nonce)
        if state == TaskState.SUCCESS:
            with env.prank(self.relay):
                self.contract.reportResultUploaded(task_id)
        assert TaskState(self.contract.getTask(task_id)[3]) == state
        return task_id

    def _join(self, node: Identity, model: str) -> None:
        if node.address in self._joined:
            return
        self._boa.env.set_balance(node.address, 10 * ETHER)
        with self._boa.env.prank(node.address):
            self.contract.join(_b32("cpu"), 0, [_b32(model)], node.encryption_public_key, 1, value=ETHER)
        self._joined.add(node.address)
