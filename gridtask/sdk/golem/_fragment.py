"""One fragment: a yielded script as gridtask tasks, a try per node until one delivers.

Each try is one gridtask task of ``TaskType.SCRIPT`` on model ``vm`` created by the core
``Client``: its worst-case fee is reserved in the budget first, what its task escrowed is
held while it runs, and it settles as paid or refunded. A try that fails (aborted at its
stage deadline because its node hung, errored, outvoted, not delivered) is followed by a new
task that excludes the nodes it failed on, up to ``max_fragment_tries``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gridtask.chain.client import GROUP_SIZE
from gridtask.exceptions import (
    ChainError,
    GridtaskError,
    RelayError,
    ResultMismatch,
    TaskFailed,
    TaskTimeout,
    TransactionReverted,
    ValidationError,
)
from gridtask.limits import VM_MODEL
from gridtask.retry import Policy
from gridtask.scripts import ScriptResult, ScriptSpec, check_script
from gridtask.sdk._client import TaskHandle
from gridtask.sdk.golem import events
from gridtask.sdk.golem.script import Script
from gridtask.types import TaskType

if TYPE_CHECKING:
    from gridtask.sdk.golem._job import Job

log = logging.getLogger("gridtask.sdk.golem")

STAGES = 4
"""A fragment's stages on chain (queued, running, validated, delivered), each at most its stage
timeout: the longest ``Client.result`` may follow one try (plus ``FOLLOW_MARGIN_S``)."""
FOLLOW_MARGIN_S = 30.0
EXCLUDE_MAX = 2  # the contract's exclude list

FRAGMENT_RETRY = Policy(
    "fragment elsewhere",
    lambda exc: isinstance(exc, TaskFailed | RelayError | ChainError) and not isinstance(exc, TransactionReverted),
    first=0.2, cap=2.0, jitter=0.2)
"""A fragment that failed on chain (aborted, errored, outvoted, a result that did not fit), or whose
relay or chain call failed, is sent again as a new task on another node; ``max_fragment_tries``
bounds the tries."""


class FragmentFailed(GridtaskError):
    """A script failed on every node it was tried on (``max_fragment_tries``); raised in the
    worker at its ``yield``. ``errors`` are the tries' errors, oldest first."""

    def __init__(self, message: str, errors: Sequence[BaseException] = ()) -> None:
        self.errors = list(errors)
        super().__init__(message)




class Fragment:
    """One script as gridtask tasks: a try per node until one delivers, at most ``max_fragment_tries``."""

    def __init__(self, job: Job, script: Script, stage_timeout: int, *, avoid: Sequence[str] = ()) -> None:
        self.job, self.script, self.stage_timeout = job, script, stage_timeout
        payload = job.payload
        self.spec = ScriptSpec(image=payload.image_hash, commands=tuple(c.wire for c in script.commands),
                               timeout=_script_seconds(stage_timeout), memory_mib=payload.memory_mib,
                               disk_mib=payload.disk_mib, cpu_threads=payload.cpu_threads)
        self.inputs = self.spec.to_inputs()
        check_script(self.inputs)  # the node's own rule, before anything is paid
        self.avoid = list(dict.fromkeys(avoid))  # nodes it failed on (or its task was rejected on): kept off
        self.errors: list[BaseException] = []
        self.node = ""
        self.task_id = ""

    async def run(self) -> ScriptResult:
        tries = self.job.golem.max_fragment_tries

        def more(exc: BaseException) -> bool:
            return len(self.errors) < tries and FRAGMENT_RETRY.retry_if(exc)

        try:
            return await dataclasses.replace(FRAGMENT_RETRY, retry_if=more).call(self._try)
        except (TaskFailed, RelayError, ChainError) as exc:
            raise FragmentFailed(
                f"script {self.script.id}: failed on {len(self.errors)} tries ({'; '.join(map(str, self.errors))})",
                self.errors) from exc

    async def _try(self) -> ScriptResult:
        job, fee, attempt = self.job, self.job.golem.fee, len(self.errors) + 1
        held = await job.budget.reserve(fee * (GROUP_SIZE if job.sampling else 1))
        try:
            handle = await job.client.submit(TaskType.SCRIPT, VM_MODEL, self.inputs, fee=fee,
                                             stage_timeout=self.stage_timeout, exclude=self.avoid[-EXCLUDE_MAX:])
        except ValidationError:  # refused before anything was paid
            job.budget.settle(held, 0)
            raise
        except BaseException:  # it may be on chain: count it as paid (the budget must never be passed)
            job.budget.settle(held, held)
            raise
        held = job.budget.shrink(held, fee * len(handle.members))
        self.task_id, self.node = handle.task_id, handle.node
        self._emit(events.FeeEscrowed, handle, amount=held)
        self._emit(events.ScriptSent, handle, attempt=attempt)
        follow = STAGES * handle.stage_timeout + FOLLOW_MARGIN_S
        try:
            output = await job.client.result(handle, timeout=follow)
            result = ScriptResult.from_json(output)
        except BaseException as exc:
            self._failed(handle, held, exc)
            raise
        self.node = handle.node
        job.budget.settle(held, fee)
        self._emit(events.FeePaid, handle, amount=fee)
        if held > fee:
            self._emit(events.FeeRefunded, handle, amount=held - fee)
        return result

    def _emit(self, kind: type[events._ScriptTry], handle: TaskHandle, **fields: Any) -> None:
        """An event about this try: the script, its task on chain and the node it went to."""
        self.job.emit(kind(self.job.id, script=self.script, task_id=handle.task_id, node=handle.node, **fields))

    def _failed(self, handle: TaskHandle, held: int, exc: BaseException) -> None:
        """Settle a try that failed: refunded on chain unless the node may still be paid."""
        job = self.job
        # Refunded on chain: aborted, errored, outvoted, a disputed mismatch. Otherwise (the wait ran
        # out, the job was cancelled, a result that does not parse) the node may still be paid:
        # counted as spent, so that the budget holds whatever happens to it on chain.
        refunded = isinstance(exc, TaskFailed) and not isinstance(exc, TaskTimeout) and not (
            isinstance(exc, ResultMismatch) and not exc.disputed)
        job.budget.settle(held, 0 if refunded else held)
        if refunded:
            self._emit(events.FeeRefunded, handle, amount=held)
        node = handle.node
        if node and node not in self.avoid:
            self.avoid.append(node)
        self.errors.append(exc)
        retrying = isinstance(exc, Exception) and FRAGMENT_RETRY.retry_if(exc) and \
            len(self.errors) < job.golem.max_fragment_tries
        log.warning("job %s: script %d failed on node %s: %s: %s%s", job.id, self.script.id, node or "(none)",
                    type(exc).__name__, exc, "; trying another node" if retrying else "")
        self._emit(events.ScriptFailed, handle, reason=f"{type(exc).__name__}: {exc}", retrying=retrying)


def _script_seconds(stage_timeout: int) -> int:
    """The sandbox's time for the whole script: half the stage, so a script that runs too long
    is stopped (and reported as the task's error) well before its node must give up the task."""
    return max(1, stage_timeout // 2)


__all__ = ["FRAGMENT_RETRY", "Fragment", "FragmentFailed"]
