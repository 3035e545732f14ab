"""One task on a node, from its parameters to its delivered result.

The chain is the source of truth: ``TaskWorker.advance`` reads the task's state and
does the one thing that state asks of the node, so a node that restarts mid-task
simply calls it again. The encrypted result is written to disk before its hash is
committed, because sealing is randomized: only those exact bytes match the commitment.
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
from gridtask.crypto import keccak, params_hash, seal, unseal
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
from gridtask.types import TaskErrorCode, TaskState

log = logging.getLogger("gridtask.node")

SPEC_CACHE = 1024
PARAMS_WAIT_S = 5.0  # long poll: the relay answers the moment the creator uploads


@dataclass(frozen=True)
class TaskSpec:
    """What ``TaskCreated`` says about a task: its public requirements."""

    task_type: int
    nonce: bytes
    models: list[str]
    params_hash: bytes


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

    def remember(self, event: ChainEvent) -> None:
        """Keep what a ``TaskCreated`` says, so a task that starts here needs no log search."""
        self._specs[event.commitment or b""] = _spec_of(event)
        while len(self._specs) > SPEC_CACHE:
            self._specs.popitem(last=False)

    async def advance(self, task: TaskInfo) -> None:
        """Do what the task's current state asks of its node (nothing if it waits on others)."""
        if task.state == TaskState.STARTED:
            await self._execute(task)
        elif task.state == TaskState.VALIDATED:
            await self._deliver(task)
        elif task.state == TaskState.SCORE_READY:
            await self.give_up_if_late(task, "node: validation deadline passed")

    # ------------------------------------------------------------ execute and score

    async def _execute(self, task: TaskInfo) -> None:
        name = task.commitment.hex()[:10]
        saved = self._saved(task.commitment)
        if saved is not None:
            # Sealing is randomized: after a failed or unconfirmed submitScore, commit the
            # same bytes again rather than running the task twice.
            sealed, committed_score = saved
            await self.chain.submit_score(task.commitment, committed_score, keccak(sealed))
            log.info("task %s: score submitted (saved result)", name)
            return
        spec = await self.spec(task.commitment)
        ciphertext = await self._fetch_params(task)
        if ciphertext is None:
            return
        log.info("task %s: parameters fetched", name)
        try:
            plain = unseal(ciphertext, self.chain.identity.encryption_private_key)
        except CryptoError:
            return await self._error(task, TaskErrorCode.UNDECRYPTABLE)
        if params_hash(plain, spec.nonce) != spec.params_hash:
            return await self._error(task, TaskErrorCode.PARAMETERS_HASH_MISMATCH)
        try:
            params = TaskParams.decode(plain)
        except ValueError as exc:
            log.info("task %s: parameters refused: %s", name, exc)
            return await self._error(task, TaskErrorCode.INVALID_PARAMETERS)
        try:
            if params.model not in spec.models or params.task_type != spec.task_type:
                raise InvalidTaskParameters(
                    f"parameters ask for {params.model!r}, the task for {spec.models}",
                    code=TaskErrorCode.UNKNOWN_MODEL,
                )
            executor = self.executors.find(params.task_type, params.model)
            log.info("task %s: running %s on %s", name, params.task_type.name, params.model)
            result = await executor.run(params.model, params.inputs)
        except InvalidTaskParameters as exc:
            log.info("task %s: parameters refused: %s", name, exc)
            return await self._error(task, exc.code)
        except Exception as exc:  # the node's own failure: not the task's fault
            log.exception("task %s: local failure", name)
            return await self._abort(task, f"node: local failure: {type(exc).__name__}"[:64])
        plain_result = canonical_json(result)
        sealed = seal(plain_result, params.reply_key_bytes)
        result_score = score(plain_result)
        self._save(task.commitment, sealed, result_score)
        await self.chain.submit_score(task.commitment, result_score, keccak(sealed))
        log.info("task %s: score submitted", name)

    async def _fetch_params(self, task: TaskInfo) -> bytes | None:
        """The encrypted parameters, retrying "task not ready" until the stage's deadline;
        ``None`` when there are none (yet): the node gave up, or the relay refused."""
        reason = "node: parameters never arrived"

        async def give_up(_: BaseException) -> None:
            await self.give_up_if_late(task, reason)

        try:
            return await retry.NOT_READY.call(
                lambda: self.relay.download_params(task.commitment, wait=PARAMS_WAIT_S),
                deadline=retry.until_wall(task.deadline), stop=self.stop, on_give_up=give_up)
        except RelayError as exc:  # refused for good: tried again on the next wake, until the deadline
            log.warning("task %s: parameters refused by the relay: %s", task.commitment.hex()[:10], exc)
            await self.give_up_if_late(task, reason)
            return None

    # ------------------------------------------------------------ deliver

    async def _deliver(self, task: TaskInfo) -> None:
        name = task.commitment.hex()[:10]
        saved = self._saved(task.commitment)
        if saved is None or keccak(saved[0]) != task.result_hash:
            # Nothing deliverable: free the node once the stage's deadline allows it.
            log.error("task %s: validated but the committed result is lost", name)
            await self.give_up_if_late(task, "node: result lost")
            return
        reason = "node: delivery deadline passed"

        async def upload() -> bool:
            await self.relay.upload_result(task.commitment, saved[0])
            return True

        async def give_up(_: BaseException) -> bool:
            await self.give_up_if_late(task, reason)
            return False

        try:
            if await retry.RELAY_TRANSIENT.call(
                upload, deadline=retry.until_wall(task.deadline), stop=self.stop, on_give_up=give_up
            ):
                log.info("task %s: result delivered", name)
                self._forget(task.commitment)
        except RelayError as exc:  # refused: delivered meanwhile, ended, or tried again on the next wake
            current = await self.chain.get_task(task.commitment)
            if current is not None and current.state == TaskState.VALIDATED:
                log.warning("task %s: upload refused (%s); retrying", name, exc)
                await self.give_up_if_late(current, reason)

    # ------------------------------------------------------------ giving up

    async def give_up_if_late(self, task: TaskInfo, reason: str) -> bool:
        """The node's one rule for giving up on a task: once the stage's deadline has
        passed, abort it (the fee goes back to its creator and the node is free again).
        Returns whether it gave up; before the deadline, the caller keeps trying."""
        if time.time() <= task.deadline:
            return False
        log.info("task %s: giving up, aborting (%s)", task.commitment.hex()[:10], reason)
        await self._abort(task, reason)
        return True

    # ------------------------------------------------------------ helpers

    def known_spec(self, commitment: bytes) -> TaskSpec | None:
        return self._specs.get(commitment)

    async def spec(self, commitment: bytes) -> TaskSpec:
        """The task's ``TaskCreated``: seen live, or searched for (after a restart)."""
        if commitment in self._specs:
            return self._specs[commitment]
        events = await self.chain.find_logs([self.chain.events.topic("TaskCreated"), commitment], first=True)
        if not events:
            raise ChainError(f"no TaskCreated event for task 0x{commitment.hex()}")
        return _spec_of(events[0])

    async def _error(self, task: TaskInfo, code: TaskErrorCode) -> None:
        log.info("task %s: reporting task error %s", task.commitment.hex()[:10], code.name)
        await self._end_task(self.chain.report_task_error(task.commitment, int(code)), task)

    async def _abort(self, task: TaskInfo, reason: str) -> None:
        await self._end_task(self.chain.abort_task(task.commitment, reason), task)

    @staticmethod
    async def _end_task(send: Awaitable[object], task: TaskInfo) -> None:
        try:
            await send
        except TransactionReverted as exc:  # someone else ended it first
            log.info("task %s: %s refused: %s", task.commitment.hex()[:10], exc.function, exc.reason)

    def _result_path(self, commitment: bytes) -> Path:
        return self.results_dir / f"{commitment.hex()}.bin"

    def _save(self, commitment: bytes, sealed: bytes, result_score: bytes) -> None:
        """Score and sealed bytes together, atomically: the score is the first 32 bytes."""
        path = self._result_path(commitment)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(result_score + sealed)
        tmp.replace(path)

    def _saved(self, commitment: bytes) -> tuple[bytes, bytes] | None:
        path = self._result_path(commitment)
        if not path.exists():
            return None
        raw = path.read_bytes()
        return raw[32:], raw[:32]

    def _forget(self, commitment: bytes) -> None:
        self._result_path(commitment).unlink(missing_ok=True)


def _spec_of(event: ChainEvent) -> TaskSpec:
    args = event.args
    return TaskSpec(
        task_type=int(args["task_type"]), nonce=bytes(args["nonce"]),
        models=[from_bytes32(m) for m in args["model_ids"]], params_hash=bytes(args["params_hash"]),
    )
