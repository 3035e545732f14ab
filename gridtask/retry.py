"""Every retry in gridtask, by name, on tenacity.

A ``Policy`` says which failures are worth another try and how long to wait between
tries (exponential back-off, capped, with optional jitter). Each use says when to give
up: an absolute ``deadline`` (``time.monotonic()``), a ``timeout`` from now, or the
policy's own ``budget``; and a ``stop`` event (an ``asyncio.Event``) interrupts the
wait at once, so a daemon that is told to exit is out of every retry loop within
milliseconds (``Interrupted``). The last try happens at the deadline itself: sleeps are
clipped to it, never past it.

    fetched = await NOT_READY.call(lambda: relay.download_params(commitment),
                                   deadline=until_wall(task.deadline), stop=should_exit,
                                   on_give_up=abort)

    async for attempt in CHAIN_UNREACHABLE.attempts(timeout=30, stop=should_exit):
        with attempt:
            await chain.get_task(commitment)

A failure the policy does not retry is raised at once; once the deadline has passed,
the last failure is raised as it is (or ``on_give_up(last_failure)`` is returned).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity
from tenacity import AsyncRetrying, RetryCallState
from web3.exceptions import TransactionNotFound

from gridtask.exceptions import ChainError, ChainUnreachable, GridtaskError, NotReady, RelayError, RelayUnavailable

log = logging.getLogger("gridtask.retry")

T = TypeVar("T")


class Interrupted(GridtaskError):
    """A retry loop was left because its stop event was set (the process is shutting down)."""


class Resign(ChainError):
    """The chain refused a signed transaction's nonce or fees (another transaction of the same
    account took the nonce, or the base fee rose): sign it again with fresh ones."""


@dataclass(frozen=True)
class Policy:
    """What is worth retrying and how long to wait between tries.

    ``first`` is the first wait, multiplied by ``factor`` after each try up to ``cap``;
    ``jitter`` adds up to that many seconds at random (so processes that failed together
    do not retry in lock-step). ``budget`` is how long to keep trying when the caller
    names no deadline (``None``: until the stop event). Retries of failures that are
    expected in normal operation (a long poll's "not ready") are logged at ``quiet_level``.
    """

    name: str
    retry_if: Callable[[BaseException], bool]
    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0
    budget: float | None = None
    expected: tuple[type[BaseException], ...] = ()
    quiet_level: int = logging.DEBUG

    def deadline(self, *, deadline: float | None = None, timeout: float | None = None) -> float | None:
        """The monotonic instant to give up at: the earliest of those named, else the budget's."""
        candidates = [d for d in (deadline, None if timeout is None else time.monotonic() + timeout) if d is not None]
        if candidates:
            return min(candidates)
        return None if self.budget is None else time.monotonic() + self.budget

    def attempts(
        self, *, deadline: float | None = None, timeout: float | None = None, stop: asyncio.Event | None = None,
    ) -> AsyncRetrying:
        """``async for attempt in policy.attempts(...): with attempt: ...`` — the last failure is
        re-raised when the deadline passes; ``Interrupted`` when ``stop`` is set."""
        return self._retrying(self.deadline(deadline=deadline, timeout=timeout), stop, reraise=True)

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        deadline: float | None = None,
        timeout: float | None = None,
        stop: asyncio.Event | None = None,
        on_give_up: Callable[[BaseException], Awaitable[T]] | None = None,
    ) -> T:
        """Await ``fn()`` until it succeeds, fails for good, or the deadline passes.

        ``on_give_up(last_failure)``, if given, is awaited once the deadline has passed and its
        value returned; otherwise the last failure is raised."""
        retrying = self._retrying(self.deadline(deadline=deadline, timeout=timeout), stop, reraise=False)

        async def attempt() -> T:  # tenacity awaits only what it sees is a coroutine function
            return await fn()

        try:
            return await retrying(attempt)
        except tenacity.RetryError as gave_up:
            last = gave_up.last_attempt.exception()
            assert last is not None
            if on_give_up is not None:
                log.info("%s: giving up (%s)", self.name, last)
                return await on_give_up(last)
            raise last from None

    # ------------------------------------------------------------ tenacity wiring

    def _retrying(self, deadline: float | None, stop: asyncio.Event | None, *, reraise: bool) -> AsyncRetrying:
        backoff: Any = tenacity.wait_exponential(multiplier=self.first, exp_base=self.factor, max=self.cap)
        if self.jitter:
            backoff = backoff + tenacity.wait_random(0, self.jitter)

        def wait(state: RetryCallState) -> float:
            pause = float(backoff(state))
            return pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic()))

        def give_up(state: RetryCallState) -> bool:
            return deadline is not None and time.monotonic() >= deadline

        async def sleep(seconds: float) -> None:
            if stop is None:
                await asyncio.sleep(seconds)
                return
            try:
                await asyncio.wait_for(stop.wait(), seconds)
            except TimeoutError:
                return
            raise Interrupted(f"{self.name}: stopped")

        async def before(state: RetryCallState) -> None:
            if stop is not None and stop.is_set():
                raise Interrupted(f"{self.name}: stopped")

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            level = self.quiet_level if isinstance(exc, self.expected) else logging.WARNING
            log.log(level, "%s: %s; try %d again in %.2fs", self.name, _describe(exc),
                    state.attempt_number + 1, state.upcoming_sleep)

        return AsyncRetrying(
            retry=tenacity.retry_if_exception(self.retry_if),
            wait=wait,
            stop=give_up,
            sleep=sleep,
            before=before,
            before_sleep=before_sleep,
            reraise=reraise,
        )


def until_wall(timestamp: float) -> float:
    """A wall-clock instant (a deadline on chain, in Unix seconds) as a monotonic deadline."""
    return time.monotonic() + (timestamp - time.time())


def _describe(exc: BaseException | None) -> str:
    return f"{type(exc).__name__}: {exc}" if exc is not None else "no result"


# ---------------------------------------------------------------- what is transient


def chain_transient(exc: BaseException) -> bool:
    """The chain did not answer: the same call may succeed later."""
    return isinstance(exc, ChainUnreachable)


def receipt_pending(exc: BaseException) -> bool:
    """No receipt yet (not mined), or the chain did not answer the question."""
    return isinstance(exc, TransactionNotFound | ChainUnreachable)


def relay_transient(exc: BaseException) -> bool:
    """The relay is down or failed on its side (5xx); a 4xx refusal is final."""
    if isinstance(exc, RelayUnavailable):
        return True
    return isinstance(exc, RelayError) and not isinstance(exc, NotReady) and exc.status >= 500


def relay_not_ready(exc: BaseException) -> bool:
    """Nothing there yet ("task not ready"), or the relay is briefly away."""
    return isinstance(exc, NotReady) or relay_transient(exc)


# ---------------------------------------------------------------- the named policies

#: An RPC call whose endpoint did not answer (event polls, views, resending signed bytes).
CHAIN_UNREACHABLE = Policy("chain unreachable", chain_transient, first=0.2, cap=2.0, jitter=0.1, budget=60.0)
#: Waiting for a sent transaction's receipt: quick at first (anvil mines at once), then patient.
RECEIPT_WAIT = Policy("receipt wait", receipt_pending, first=0.02, factor=1.5, cap=1.0, budget=60.0,
                      expected=(TransactionNotFound,))
#: A relay that is down or answers 5xx (uploads, deliveries).
RELAY_TRANSIENT = Policy("relay transient", relay_transient, first=0.05, factor=1.5, cap=1.0, jitter=0.05,
                         budget=60.0)
#: A long poll for something another party has yet to do (parameters, a result): until a deadline.
NOT_READY = Policy("not ready", relay_not_ready, first=0.02, factor=1.5, cap=0.5, expected=(NotReady,))

#: A transaction whose nonce or fees no longer fit: signed again, jittered so that two processes
#: sharing a key do not collide in lock-step.
RESIGN = Policy("nonce taken", lambda exc: isinstance(exc, Resign), first=0.02, cap=0.5, jitter=0.1, budget=60.0)
#: The event follower's poll: the chain may be away for long; until the follower stops.
EVENT_POLL = Policy("event poll", chain_transient, first=0.2, cap=2.0, jitter=0.1)
#: The event follower's push socket: reconnect after any failure, until the follower stops.
EVENT_PUSH = Policy("event push", lambda exc: isinstance(exc, Exception), first=0.2, cap=2.0, jitter=0.1,
                    expected=(Exception,))

POLICIES = {p.name: p for p in (CHAIN_UNREACHABLE, RECEIPT_WAIT, RELAY_TRANSIENT, NOT_READY, RESIGN, EVENT_POLL,
                                EVENT_PUSH)}

__all__ = [
    "CHAIN_UNREACHABLE", "EVENT_POLL", "EVENT_PUSH", "NOT_READY", "POLICIES", "RECEIPT_WAIT", "RELAY_TRANSIENT",
    "RESIGN", "Interrupted", "Policy", "Resign", "chain_transient", "receipt_pending", "relay_not_ready",
    "relay_transient", "until_wall",
]
