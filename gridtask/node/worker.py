"""One task on a node, from its parameters to its delivered result.

The chain is the source of truth: ``TaskWorker.advance`` reads the task's state and
does the one thing that state asks of the node, so a node that restarts mid-task
simply calls it again. The encrypted result is written to disk before its hash is
committed, so a node that restarts after running a task commits (and later delivers)
those same bytes instead of running the task a second time.

The result is encrypted under the task's result key (from the parameters) with the
keccak-CTR cipher of ``gridtask.crypto``; the node commits ``keccak`` of that ciphertext
with the score, and the relay checks the delivery against it. The creator can therefore
prove on chain that a delivered result does not fit its score (a dispute), and nobody
can make an honest node's ciphertext say anything else.

Deadlines. A task whose parameters never came (or that the node cannot finish) is aborted
*before* its deadline (``abort_at``): the contract pauses a node whose task is aborted past
it. Once scored, the deadline is the creator's validation window: past it the node claims
its fee (``claimUnvalidated``). Once validated, the node delivers until the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from gridtask import retry
from gridtask.chain.client import ChainClient, ChainEvent, from_bytes32
from gridtask.chain.models import TaskInfo
from gridtask.crypto import encrypt_result, keccak, params_hash, unseal
from gridtask.exceptions import (
    ChainError,
    CryptoError,
    RelayError,
    TransactionReverted,
)
from gridtask.node.executors.base import ExecutorSet, InvalidTaskParameters
from gridtask.params import TaskParams
from gridtask.relay.client import RelayClient
from gridtask.scoring import canonical_json, score
from gridtask.types import TaskErrorCode, TaskState, TaskType

log = logging.getLogger("gridtask.node")

SPEC_CACHE = 1024
#: A task starts (or is queued) within this many blocks of its creation: selection reads the
#: creation block's hash, which the chain keeps for 256 blocks. Its TaskCreated is searched there.
START_WINDOW = 256
PARAMS_WAIT_S = 5.0  # long poll: the relay answers the moment the creator uploads
#: How long before its stage's deadline the node gives up on a task it cannot finish: room for
#: the abort to be mined in time (a few blocks), at most a quarter of the stage (short test stages).
ABORT_MARGIN_S = 10.0
MIN_ABORT_MARGIN_S = 2.0


def abort_at(task: TaskInfo) -> float:
    """The wall-clock instant the node gives up on a task in its own stage.

    Before scoring (STARTED): early enough that the abort lands before the deadline, so an
    honest node whose parameters never came is not paused for it. Once validated, the
    contract lets the node abort only past the deadline, and pauses it then: a node that
    cannot deliver what it committed keeps trying until the end, and loses its turn."""
    if task.state == TaskState.VALIDATED:
        return task.deadline + 1.0
    margin = min(ABORT_MARGIN_S, max(MIN_ABORT_MARGIN_S, task.timeout / 4))
    return task.deadline - margin


@dataclass(frozen=True)
class TaskSpec:
    """What ``TaskCreated`` says about a task: its public requirements."""

    task_type: int
    nonce: bytes
    models: list[str]
    params_hash: bytes
    any_model: bool = False  # any one of ``models`` will do: the params name the one this node serves


class TaskWorker:
    """Drives the node's side of tasks; shared by every task of one node."""

    def __init__(
        self, chain: ChainClient, relay: RelayClient, executors: ExecutorSet, results_dir: Path,
        *, stop: asyncio.Event | None = None,
    ) -> None:
        self.chain = chain
        self.relay = relay
        self.executors = executors
        self.results_dir = results_dir
        self.stop = stop or asyncio.Event()  # set when the node stops: every retry wait ends at once
        results_dir.mkdir(parents=True, exist_ok=True)
        self._specs: OrderedDict[bytes, TaskSpec] = OrderedDict()
        self._anchors: OrderedDict[bytes, int] = OrderedDict()  # key -> block of its TaskStarted / TaskQueued

    def seen_at(self, commitment: bytes, block: int) -> None:
        """The block of a task's ``TaskStarted`` (or ``TaskQueued``): its ``TaskCreated`` is at most
        START_WINDOW blocks before it, so ``spec`` searches only there."""
        self._anchors[commitment] = block
        while len(self._anchors) > SPEC_CACHE:
            self._anchors.popitem(last=False)

    async def advance(self, task: TaskInfo) -> TaskState | None:
        """Do what the task's current state asks of its node (nothing if it waits on others).

        Returns the state the node's own step left the task in, when its transaction says so
        (scored: SCORE_READY; an error reported: ERRORED; aborted: ABORTED; delivered: still
        VALIDATED, until the relay's report ends it), so that the caller need not read it
        again; None when it does not know (nothing done, a refusal, a give-up)."""
        if task.state == TaskState.STARTED:
            return await self._execute(task)
        if task.state == TaskState.VALIDATED:
            return await self._deliver(task)
        if task.state == TaskState.SCORE_READY:
            await self._claim_if_unvalidated(task)
        return None

    # ------------------------------------------------------------ execute and score

    async def _execute(self, task: TaskInfo) -> TaskState | None:
        name = task.commitment.hex()[:10]
        saved = self._saved(task.commitment)
        if saved is not None:
            # After a failed or unconfirmed submitScore, or a restart: commit the saved bytes
            # rather than running the task twice.
            cipher, committed_score = saved
            await self.chain.submit_score(task.commitment, committed_score, keccak(cipher))
            log.info("task %s: score submitted (saved result)", name)
            return TaskState.SCORE_READY
        spec = await self.spec(task.commitment)
        ciphertext = await self._fetch_params(task)
        if ciphertext is None:
            return None
        log.info("task %s: parameters fetched", name)
        try:
            plain = unseal(ciphertext, self.chain.identity.encryption_private_key)
        except CryptoError:
            return await self._error(task, TaskErrorCode.UNDECRYPTABLE)
        params: TaskParams | None = None
        try:
            params = TaskParams.decode(plain)
        except ValueError as exc:
            refusal = str(exc)
        # An any-of task's hash covers its parameters with the model left open (TaskParams.committed).
        committed = params.committed(spec.any_model) if params is not None and spec.any_model else plain
        if params_hash(committed, spec.nonce) != spec.params_hash:
            return await self._error(task, TaskErrorCode.PARAMETERS_HASH_MISMATCH)
        if params is None:
            log.info("task %s: parameters refused: %s", name, refusal)
            return await self._error(task, TaskErrorCode.INVALID_PARAMETERS)
        try:
            if params.model not in spec.models or params.task_type != spec.task_type:
                raise InvalidTaskParameters(
                    f"parameters ask for {params.model!r}, the task for {spec.models}",
                    code=TaskErrorCode.UNKNOWN_MODEL,
                )
            executor = self.executors.find(params.task_type, params.model)
            admit = getattr(executor, "admit", None)
            if admit is not None:  # an executor's own rule for the task (an OpenGPU source's minPayment)
                await admit(params.model, task.fee)
            log.info("task %s: running %s on %s", name, params.task_type.name, params.model)
            result = await asyncio.wait_for(executor.run(params.model, params.inputs),
                                            max(0.0, abort_at(task) - time.time()))
        except InvalidTaskParameters as exc:
            log.info("task %s: parameters refused: %s", name, exc)
            return await self._error(task, exc.code)
        except TimeoutError:  # still running at abort_at: abort in time rather than be paused
            log.warning("task %s: not finished before its deadline; aborting it", name)
            return await self._abort(task, "node: ran out of time")
        except Exception as exc:  # the node's own failure: not the task's fault
            log.exception("task %s: local failure", name)
            return await self._abort(task, f"node: local failure: {type(exc).__name__}"[:64])
        plain_result = canonical_json(result)
        cipher = encrypt_result(params.result_key_bytes, plain_result)
        result_score = score(plain_result, TaskType(spec.task_type))
        self._save(task.commitment, cipher, result_score)
        await self.chain.submit_score(task.commitment, result_score, keccak(cipher))
        log.info("task %s: score submitted", name)
        return TaskState.SCORE_READY

    async def _fetch_params(self, task: TaskInfo) -> bytes | None:
        """The encrypted parameters, retrying "task not ready" until ``abort_at``; ``None``
        when there are none (yet): the node gave up, or the relay refused."""
        reason = "node: parameters never arrived"
        give_up_at = abort_at(task)

        async def give_up(_: BaseException) -> None:
            await self._give_up(task, reason)

        def download() -> Awaitable[bytes]:  # the long poll never runs past the give-up instant
            return self.relay.download_params(
                task.commitment, wait=max(0.0, min(PARAMS_WAIT_S, give_up_at - time.time())))

        try:
            return await retry.NOT_READY.call(
                download, deadline=retry.until_wall(give_up_at), stop=self.stop, on_give_up=give_up)
        except RelayError as exc:  # refused for good: tried again on the next wake, until the deadline
            log.warning("task %s: parameters refused by the relay: %s", task.commitment.hex()[:10], exc)
            await self.give_up_if_late(task, reason)
            return None

    # ------------------------------------------------------------ deliver

    async def _deliver(self, task: TaskInfo) -> TaskState | None:
        name = task.commitment.hex()[:10]
        saved = self._saved(task.commitment)
        if saved is None or keccak(saved[0]) != task.result_hash:
            # Nothing deliverable: free the node once the contract lets it (past the deadline).
            log.error("task %s: validated but the committed result is lost", name)
            await self.give_up_if_late(task, "node: result lost")
            return None
        reason = "node: could not deliver in time"

        async def upload() -> bool:
            await self.relay.upload_result(task.commitment, saved[0])
            return True

        async def give_up(_: BaseException) -> bool:
            await self._give_up(task, reason)
            return False

        try:
            if await retry.RELAY_TRANSIENT.call(
                upload, deadline=retry.until_wall(abort_at(task)), stop=self.stop, on_give_up=give_up
            ):
                log.info("task %s: result delivered", name)
                self.forget(task.commitment)
                return TaskState.VALIDATED
        except RelayError as exc:  # refused: delivered meanwhile, ended, or tried again on the next wake
            current = await self.chain.get_task(task.commitment)
            if current is not None and current.state == TaskState.VALIDATED:
                log.warning("task %s: upload refused (%s); retrying", name, exc)
                await self.give_up_if_late(current, reason)
        return None

    # ------------------------------------------------------------ giving up

    async def give_up_if_late(self, task: TaskInfo, reason: str) -> bool:
        """The node's one rule for giving up on a task in its own stage: from ``abort_at`` on
        (shortly before the deadline), abort it; the fee goes back to its creator and the node
        is free again, not paused. Returns whether it gave up; before then, the caller keeps
        trying."""
        if time.time() < abort_at(task):
            return False
        await self._give_up(task, reason)
        return True

    async def _give_up(self, task: TaskInfo, reason: str) -> None:
        """Abort now: ``give_up_if_late`` decided, or a retry whose deadline is ``abort_at`` ran out."""
        log.info("task %s: giving up before its deadline, aborting (%s)", task.commitment.hex()[:10], reason)
        await self._abort(task, reason)

    async def _claim_if_unvalidated(self, task: TaskInfo) -> None:
        """Scored, and the creator let the validation window pass: claim the fee. The
        creator may still validate until then (the claim is refused; the task moves on)."""
        if time.time() <= task.deadline:
            return
        name = task.commitment.hex()[:10]
        try:
            await self.chain.claim_unvalidated(task.commitment)
        except TransactionReverted as exc:  # validated meanwhile, or the chain's clock is behind
            log.info("task %s: claimUnvalidated refused: %s", name, exc.reason)
            return
        log.info("task %s: not validated within its window: claimed the fee (%d wei)", name, task.fee)
        self.forget(task.commitment)

    # ------------------------------------------------------------ helpers

    async def spec(self, commitment: bytes) -> TaskSpec:
        """The task's requirements, from its ``TaskCreated``: the node follows only its own events,
        so it asks for this one log by its key (topic1), over the START_WINDOW blocks before the
        task started or was queued here (one ``eth_getLogs``); without that block (a restart), or
        if a reorg moved it, newest blocks first from the head. Kept for the task's later steps."""
        if commitment in self._specs:
            return self._specs[commitment]
        topics = [self.chain.events.topic("TaskCreated"), commitment]
        anchor = self._anchors.get(commitment)
        events = [] if anchor is None else await self.chain.find_logs(
            topics, from_block=max(0, anchor - START_WINDOW), to_block=anchor)
        if not events:
            events = await self.chain.find_logs(topics, first=True)
        if not events:
            raise ChainError(f"no TaskCreated event for task 0x{commitment.hex()}")
        self._specs[commitment] = spec = _spec_of(events[0])
        while len(self._specs) > SPEC_CACHE:
            self._specs.popitem(last=False)
        return spec

    async def _error(self, task: TaskInfo, code: TaskErrorCode) -> TaskState | None:
        log.info("task %s: reporting task error %s", task.commitment.hex()[:10], code.name)
        return await self._end_task(self.chain.report_task_error(task.commitment, int(code)), task, TaskState.ERRORED)

    async def _abort(self, task: TaskInfo, reason: str) -> TaskState | None:
        return await self._end_task(self.chain.abort_task(task.commitment, reason), task, TaskState.ABORTED)

    @staticmethod
    async def _end_task(send: Awaitable[object], task: TaskInfo, ends_as: TaskState) -> TaskState | None:
        """Send the transaction that ends the task: ``ends_as`` once mined, None if refused."""
        try:
            await send
        except TransactionReverted as exc:  # someone else ended it first
            log.info("task %s: %s refused: %s", task.commitment.hex()[:10], exc.function, exc.reason)
            return None
        return ends_as

    def _result_path(self, commitment: bytes) -> Path:
        return self.results_dir / f"{commitment.hex()}.bin"

    def _save(self, commitment: bytes, cipher: bytes, result_score: bytes) -> None:
        """Score and ciphertext together, atomically: the score is the first 32 bytes."""
        path = self._result_path(commitment)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(result_score + cipher)
        tmp.replace(path)

    def _saved(self, commitment: bytes) -> tuple[bytes, bytes] | None:
        path = self._result_path(commitment)
        if not path.exists():
            return None
        raw = path.read_bytes()
        return raw[32:], raw[:32]

    def forget(self, commitment: bytes) -> None:
        """Drop a task's saved result and what was kept about it: it was delivered, or it ended."""
        self._result_path(commitment).unlink(missing_ok=True)
        self._specs.pop(commitment, None)
        self._anchors.pop(commitment, None)


def _spec_of(event: ChainEvent) -> TaskSpec:
    args = event.args
    return TaskSpec(
        task_type=int(args["task_type"]), nonce=bytes(args["nonce"]),
        models=[from_bytes32(m) for m in args["model_ids"]], params_hash=bytes(args["params_hash"]),
        any_model=bool(args.get("any_model", False)),
    )
