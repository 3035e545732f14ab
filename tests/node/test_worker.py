"""The node's task worker, one module on its own: the chain and the relay are stand-ins that
record what the worker asks of them (the e2e tests run the same paths on a real anvil).

What is checked here is the node's side of SPEC8: the result is encrypted under the task's
result key and the commitment is ``keccak`` of that ciphertext; the score is the task type's;
a result whose ``submitScore`` failed is committed again from disk without running the task
twice; a task the node cannot finish is aborted *before* its stage's deadline; a scored task
whose creator let the validation window pass is claimed.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from gridtask.chain.client import ChainEvent, to_bytes32
from gridtask.chain.models import TaskInfo
from gridtask.crypto import decrypt_result, keccak, params_hash, result_key, seal, unseal
from gridtask.exceptions import ChainError, NotReady
from gridtask.keys import Identity
from gridtask.node import worker as worker_module
from gridtask.node.executors.base import ExecutorSet
from gridtask.node.executors.echo import EchoExecutor
from gridtask.node.worker import TaskWorker, abort_at
from gridtask.params import TaskParams
from gridtask.scoring import canonical_json, score
from gridtask.types import TaskErrorCode, TaskState, TaskType

NODE = Identity.generate()
CREATOR = "0x" + "11" * 20


@dataclass
class FakeChain:
    """What the worker calls on ``ChainClient``, recorded; ``fail_submits`` makes that many fail."""

    identity: Identity = NODE
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    fail_submits: int = 0
    created: ChainEvent | None = None  # the task's TaskCreated log, at block CREATED_AT
    events: Any = field(default_factory=lambda: FakeCodec())

    async def find_logs(self, topics: list[Any], *, from_block: int | None = None, to_block: int | None = None,
                        first: bool = False) -> list[ChainEvent]:
        self.calls.append(("find_logs", (topics, from_block, to_block, first)))
        found = self.created
        if found is None or topics != ["TaskCreated", found.commitment]:
            return []
        inside = (from_block is None or from_block <= found.block_number) and (
            to_block is None or found.block_number <= to_block)
        return [found] if inside else []

    async def submit_score(self, key: bytes, score: bytes, result_hash: bytes) -> None:
        self.calls.append(("submit_score", (key, score, result_hash)))
        if self.fail_submits:
            self.fail_submits -= 1
            raise ChainError("submitScore: no receipt (the chain went away)")

    async def abort_task(self, key: bytes, reason: str) -> None:
        self.calls.append(("abort_task", (key, reason, time.time())))

    async def report_task_error(self, key: bytes, code: int) -> None:
        self.calls.append(("report_task_error", (key, code)))

    async def claim_unvalidated(self, key: bytes) -> None:
        self.calls.append(("claim_unvalidated", (key,)))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]


class FakeCodec:
    def topic(self, name: str) -> str:
        return name


CREATED_AT = 1_000


@dataclass
class FakeRelay:
    params: bytes | None = None  # None: the creator never uploads (NotReady until the wait ends)
    uploads: list[bytes] = field(default_factory=list)

    async def download_params(self, key: bytes, *, wait: float = 0) -> bytes:
        if self.params is None:
            await asyncio.sleep(wait)
            raise NotReady("task not ready")
        return self.params

    async def upload_result(self, key: bytes, data: bytes) -> None:
        self.uploads.append(data)


class CountingEcho(EchoExecutor):
    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.runs, self.delay = 0, delay

    async def run(self, model: str, inputs: dict) -> dict:
        self.runs += 1
        await asyncio.sleep(self.delay)
        return await super().run(model, inputs)


@dataclass
class Setup:
    worker: TaskWorker
    chain: FakeChain
    relay: FakeRelay
    executor: CountingEcho
    task: TaskInfo
    key: bytes  # the result key, as the application derives it


def make(tmp_path: Path, *, uploaded: bool = True, delay: float = 0.0, timeout: int = 60) -> Setup:
    task_id, nonce, commitment = os.urandom(32), os.urandom(32), os.urandom(32)
    k = result_key(task_id, nonce)
    plain = TaskParams(task_type=TaskType.ECHO, model="echo", inputs={"data": "hi"}, result_key=k.hex()).encode()
    chain, relay = FakeChain(), FakeRelay(seal(plain, NODE.encryption_public_key) if uploaded else None)
    executor = CountingEcho(delay)
    worker = TaskWorker(chain, relay, ExecutorSet([executor]), tmp_path / "results")  # type: ignore[arg-type]
    chain.created = ChainEvent(name="TaskCreated", block_number=CREATED_AT, transaction_hash=b"", log_index=0, args={
        "commitment": commitment, "task_type": int(TaskType.ECHO), "nonce": nonce,
        "model_ids": [to_bytes32("echo")], "params_hash": params_hash(plain, nonce)})
    worker.seen_at(commitment, CREATED_AT + 1)  # started in the next block
    task = TaskInfo(commitment=commitment, creator=CREATOR, node=NODE.address, fee=10**15, state=TaskState.STARTED,
                    deadline=int(time.time()) + timeout, timeout=timeout, score=bytes(32), result_hash=bytes(32))
    return Setup(worker, chain, relay, executor, task, k)


async def test_result_is_encrypted_under_the_result_key_and_its_ciphertext_hash_committed(tmp_path: Path) -> None:
    s = make(tmp_path)
    await s.worker.advance(s.task)
    [(key, committed_score, result_hash)] = s.chain.named("submit_score")
    plain = canonical_json({"echo": "hi"})
    assert key == s.task.commitment
    assert committed_score == score(plain, TaskType.ECHO)
    # Delivery uploads exactly the committed ciphertext, which the result key opens.
    validated = replace(s.task, state=TaskState.VALIDATED, score=committed_score, result_hash=result_hash)
    await s.worker.advance(validated)
    [delivered] = s.relay.uploads
    assert keccak(delivered) == result_hash
    assert decrypt_result(s.key, delivered) == plain
    assert not list((tmp_path / "results").iterdir())  # delivered: the saved copy is dropped


@pytest.mark.parametrize("any_model", [True, False])
async def test_an_any_of_tasks_hash_covers_its_parameters_with_the_model_left_open(tmp_path: Path,
                                                                                  any_model: bool) -> None:
    """An any-of task's creator names the model (echo) after the hash went on chain with the
    model left open ("*"): the node runs it. The same hash on an all-of task is a mismatch."""
    s = make(tmp_path)
    created = s.chain.created
    assert created is not None
    plain = unseal(s.relay.params or b"", NODE.encryption_private_key)
    open_hash = params_hash(TaskParams.decode(plain).committed(True), created.args["nonce"])
    created.args.update(model_ids=[to_bytes32("other"), to_bytes32("echo")], params_hash=open_hash,
                        any_model=any_model)
    await s.worker.advance(s.task)
    if any_model:
        assert len(s.chain.named("submit_score")) == 1 and s.executor.runs == 1
    else:
        assert s.chain.named("report_task_error") == [(s.task.commitment, TaskErrorCode.PARAMETERS_HASH_MISMATCH)]
        assert s.executor.runs == 0


async def test_a_failed_submit_score_commits_the_saved_bytes_again_without_running_twice(tmp_path: Path) -> None:
    s = make(tmp_path)
    s.chain.fail_submits = 1
    with pytest.raises(ChainError):
        await s.worker.advance(s.task)
    await s.worker.advance(s.task)  # still STARTED on chain: the daemon calls it again
    first, second = s.chain.named("submit_score")
    assert first == second
    assert s.executor.runs == 1


async def test_parameters_that_never_come_are_given_up_before_the_deadline(tmp_path: Path) -> None:
    s = make(tmp_path, uploaded=False, timeout=8)
    await s.worker.advance(s.task)
    [(key, reason, at)] = s.chain.named("abort_task")
    assert reason == "node: parameters never arrived"
    assert abort_at(s.task) <= at < s.task.deadline  # in time: the contract does not pause the node
    assert s.task.deadline - at >= worker_module.MIN_ABORT_MARGIN_S - 0.5


async def test_a_task_still_running_at_its_give_up_time_is_aborted_before_the_deadline(tmp_path: Path) -> None:
    s = make(tmp_path, delay=30, timeout=8)
    await s.worker.advance(s.task)
    [(_, reason, at)] = s.chain.named("abort_task")
    assert reason == "node: ran out of time"
    assert at < s.task.deadline
    assert not s.chain.named("submit_score")


def test_the_abort_margin_is_a_quarter_of_short_stages_and_capped_for_long_ones_before_scoring_only() -> None:
    task = TaskInfo(commitment=bytes(32), creator=CREATOR, node=NODE.address, fee=1, state=TaskState.STARTED,
                    deadline=1000, timeout=8, score=bytes(32), result_hash=bytes(32))
    assert abort_at(task) == 998
    assert abort_at(replace(task, timeout=3600)) == 1000 - worker_module.ABORT_MARGIN_S
    assert abort_at(replace(task, timeout=5)) == 1000 - worker_module.MIN_ABORT_MARGIN_S
    # Validated: the contract lets the node abort only past the deadline (and pauses it).
    assert abort_at(replace(task, state=TaskState.VALIDATED)) > 1000


async def test_a_score_left_unvalidated_past_its_window_is_claimed(tmp_path: Path) -> None:
    s = make(tmp_path)
    await s.worker.advance(s.task)
    scored = replace(s.task, state=TaskState.SCORE_READY, deadline=int(time.time()) + 60)
    await s.worker.advance(scored)
    assert not s.chain.named("claim_unvalidated")  # the creator may still validate
    await s.worker.advance(replace(scored, deadline=int(time.time()) - 1))
    assert s.chain.named("claim_unvalidated") == [(s.task.commitment,)]
    assert not s.chain.named("abort_task")  # claimed, not given up
    assert not list((tmp_path / "results").iterdir())


async def test_the_task_created_log_is_fetched_by_its_key_over_the_start_window_only(tmp_path: Path) -> None:
    """The node follows no TaskCreated: for its own task it asks for that one log by topic, over
    the 256 blocks before the block it started in (one request), and keeps it for the task."""
    s = make(tmp_path)
    await s.worker.advance(s.task)
    [(topics, lo, hi, first)] = s.chain.named("find_logs")
    assert topics == ["TaskCreated", s.task.commitment]
    assert (lo, hi, first) == (CREATED_AT + 1 - worker_module.START_WINDOW, CREATED_AT + 1, False)
    assert s.chain.named("submit_score")  # the spec it found was the task's: its hash matched
    assert (await s.worker.spec(s.task.commitment)).params_hash == s.chain.created.args["params_hash"]  # type: ignore[union-attr]
    assert len(s.chain.named("find_logs")) == 1  # kept


async def test_without_its_start_block_the_task_created_log_is_searched_newest_first(tmp_path: Path) -> None:
    """After a restart that lost the block (or a reorg that moved the creation out of the window)."""
    s = make(tmp_path)
    started = CREATED_AT + 10 * worker_module.START_WINDOW  # the creation is not in the window before it
    s.worker.seen_at(s.task.commitment, started)
    spec = await s.worker.spec(s.task.commitment)
    assert spec.models == ["echo"]
    window, whole = s.chain.named("find_logs")
    assert window[1:] == (started - worker_module.START_WINDOW, started, False)
    assert whole[1:] == (None, None, True)
