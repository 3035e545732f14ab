"""Watching a task's life from outside, like httpx's ``event_hooks``.

    def step(s: TaskStep) -> None:
        print(s.name, s.task_id[:10], s.detail)

    async with Client(event_hooks={"step": [step]}) as client: ...

Each hook is called (awaited when it is a coroutine function) at every step of every task
the client follows, in order, on the client's own event loop. A hook that raises is logged
and the task goes on: an observer must never cost a paid task its result.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gridtask.exceptions import ValidationError

if TYPE_CHECKING:
    from gridtask.sdk._handle import Member, TaskHandle

log = logging.getLogger("gridtask.sdk")

#: Every step a task passes, in the order a task that succeeds passes them ("failed" and
#: "retry" may come anywhere). ``member_key`` says which task on chain: a validation
#: group's three members each pass "created" to "downloaded".
STEP_NAMES = (
    "created",  # createTask is on chain (detail: block, tx_started_at = when it was sent)
    "started",  # the member has a node (detail: node) or waits in the queue (detail: queued=True)
    "params_uploaded",  # its parameters, sealed to its node, are on the relay
    "scored",  # its node committed a score (TaskScoreReady seen)
    "validated",  # validateSingleTask / validateTaskGroup is on chain (detail: tx_started_at)
    "delivered",  # the relay holds the result and paid the node (TaskSuccess seen)
    "downloaded",  # the result was fetched, decrypted and checked against its score
    "done",  # result() returns (member_key: the member whose result it is)
    "failed",  # result() raises (detail: error = the exception's type name, message)
    "retry",  # something is tried again (detail: what, why)
)

HOOK_EVENTS = ("step",)


@dataclass(frozen=True)
class TaskStep:
    """One step of one task: ``task_id`` is the task's key (0x-hex, its name on chain, the
    original's for every member of a group), ``member_key`` the member's key on chain,
    ``name`` one of ``STEP_NAMES``, ``at`` a ``time.perf_counter()`` reading."""

    task_id: str
    member_key: bytes
    name: str
    at: float
    detail: dict[str, Any] = field(default_factory=dict)


StepHook = Callable[[TaskStep], Awaitable[None] | None]


class Hooks:
    """The hooks of one client, by event name (only ``"step"`` for now)."""

    def __init__(self, event_hooks: Mapping[str, Sequence[StepHook]] | None = None) -> None:
        self._hooks: dict[str, list[StepHook]] = {name: [] for name in HOOK_EVENTS}
        for name, hooks in (event_hooks or {}).items():
            if name not in self._hooks:
                raise ValidationError(f"event_hooks: unknown event {name!r}; one of {list(HOOK_EVENTS)}")
            if callable(hooks) or not all(callable(h) for h in hooks):
                raise ValidationError(f"event_hooks[{name!r}]: must be a list of callables")
            self._hooks[name] = list(hooks)

    def __bool__(self) -> bool:
        return any(self._hooks.values())

    async def step(self, task_id: str, member_key: bytes, name: str, **detail: Any) -> None:
        """Tell every step hook (at once: ``at`` is taken before any hook runs)."""
        hooks = self._hooks["step"]
        if not hooks:
            return
        assert name in STEP_NAMES, name
        event = TaskStep(task_id=task_id, member_key=member_key, name=name, at=time.perf_counter(), detail=detail)
        for hook in hooks:
            try:
                out = hook(event)
                if inspect.isawaitable(out):
                    await out
            except Exception:
                log.exception("event hook %r failed at step %s of task %s", hook, name, task_id[:10])

    async def tell(self, handle: TaskHandle, member: Member, name: str, **detail: Any) -> None:
        """A step of one member of ``handle``: told once per member ("retry" and "failed" every time)."""
        if name not in ("retry", "failed"):
            if name in member.steps:
                return
            member.steps.add(name)
        await self.step(handle.task_id, member.key, name, **detail)
