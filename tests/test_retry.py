"""The named retry policies: what they retry, when they give up, how fast a stop event ends them."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from web3.exceptions import TransactionNotFound

from gridtask import retry
from gridtask.exceptions import (
    ChainError,
    ChainUnreachable,
    NotReady,
    RelayError,
    RelayUnavailable,
    TransactionReverted,
)
from gridtask.retry import Interrupted, Policy

FAST = Policy("test", retry.chain_transient, first=0.01, cap=0.05, budget=None)


class Flaky:
    """Fails ``failures`` times with ``exc``, then returns ``value``."""

    def __init__(self, failures: int, exc: BaseException, value: object = "ok") -> None:
        self.failures, self.exc, self.value, self.calls = failures, exc, value, 0

    async def __call__(self) -> object:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return self.value


async def test_retries_a_transient_failure_until_it_succeeds() -> None:
    flaky = Flaky(3, ChainUnreachable("down"))
    assert await FAST.call(flaky, timeout=5) == "ok"
    assert flaky.calls == 4


async def test_a_lambda_returning_a_coroutine_is_awaited() -> None:
    flaky = Flaky(2, ChainUnreachable("down"), value=42)
    assert await FAST.call(lambda: flaky(), timeout=5) == 42
    assert flaky.calls == 3


async def test_a_failure_the_policy_does_not_retry_is_raised_at_once() -> None:
    flaky = Flaky(3, TransactionReverted("tasks: zero fee"))
    with pytest.raises(TransactionReverted, match="zero fee"):
        await FAST.call(flaky, timeout=5)
    assert flaky.calls == 1


async def test_gives_up_at_the_deadline_with_the_last_failure_and_tries_at_the_deadline() -> None:
    slow = Policy("slow", retry.chain_transient, first=10.0, cap=10.0)
    flaky = Flaky(100, ChainUnreachable("still down"))
    started = time.monotonic()
    with pytest.raises(ChainUnreachable, match="still down"):
        await slow.call(flaky, timeout=0.3)
    took = time.monotonic() - started
    # the 10 s back-off is clipped to the deadline, and one last try happens there
    assert 0.25 <= took < 2.0
    assert flaky.calls == 2


async def test_an_absolute_deadline_and_a_timeout_the_earliest_wins() -> None:
    flaky = Flaky(10**6, ChainUnreachable("down"))
    started = time.monotonic()
    with pytest.raises(ChainUnreachable):
        await FAST.call(flaky, deadline=time.monotonic() + 0.2, timeout=30)
    assert time.monotonic() - started < 2.0


async def test_the_policy_budget_applies_when_no_deadline_is_named() -> None:
    budgeted = Policy("budgeted", retry.chain_transient, first=0.01, cap=0.02, budget=0.2)
    started = time.monotonic()
    with pytest.raises(ChainUnreachable):
        await budgeted.call(Flaky(10**6, ChainUnreachable("down")))
    assert 0.15 <= time.monotonic() - started < 2.0


async def test_on_give_up_is_called_once_with_the_last_failure_and_its_value_returned() -> None:
    seen: list[BaseException] = []

    async def abort(exc: BaseException) -> str:
        seen.append(exc)
        return "aborted"

    out = await retry.NOT_READY.call(Flaky(10**6, NotReady("task not ready", status=404)),
                                     timeout=0.2, on_give_up=abort)
    assert out == "aborted"
    assert len(seen) == 1 and isinstance(seen[0], NotReady)


async def test_on_give_up_is_not_called_for_a_final_failure() -> None:
    async def abort(exc: BaseException) -> str:
        raise AssertionError("not a give-up")

    with pytest.raises(RelayError, match="forbidden"):
        await retry.NOT_READY.call(Flaky(1, RelayError("forbidden", status=403)), timeout=5, on_give_up=abort)


async def test_a_stop_event_interrupts_a_long_wait_at_once() -> None:
    patient = Policy("patient", retry.chain_transient, first=30.0, cap=30.0)
    stop = asyncio.Event()
    flaky = Flaky(10**6, ChainUnreachable("down"))
    asyncio.get_running_loop().call_later(0.1, stop.set)
    started = time.monotonic()
    with pytest.raises(Interrupted):
        await patient.call(flaky, stop=stop)  # no deadline, no budget: only the event ends it
    assert time.monotonic() - started < 1.0
    assert flaky.calls == 1


async def test_a_stop_event_already_set_makes_no_attempt() -> None:
    stop = asyncio.Event()
    stop.set()
    flaky = Flaky(0, ChainUnreachable("down"))
    with pytest.raises(Interrupted):
        await FAST.call(flaky, stop=stop)
    assert flaky.calls == 0


async def test_attempts_iterator_retries_and_reraises_the_last_failure() -> None:
    calls = 0
    with pytest.raises(ChainUnreachable):
        async for attempt in FAST.attempts(timeout=0.2):
            with attempt:
                calls += 1
                raise ChainUnreachable("down")
    assert calls > 2

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(Interrupted):
        async for attempt in FAST.attempts(stop=stop):
            with attempt:
                raise ChainUnreachable("down")


async def test_backoff_grows_up_to_the_cap() -> None:
    stamps: list[float] = []

    async def fail() -> None:
        stamps.append(time.monotonic())
        raise ChainUnreachable("down")

    growing = Policy("growing", retry.chain_transient, first=0.02, factor=2.0, cap=0.08)
    with pytest.raises(ChainUnreachable):
        await growing.call(fail, timeout=0.6)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert gaps[0] < gaps[2]  # it grows
    assert max(gaps[:-1]) < 0.08 + 0.1  # and is capped (with room for a loaded machine)


@pytest.mark.parametrize(
    ("exc", "policy", "retried"),
    [
        (ChainUnreachable("x"), retry.CHAIN_UNREACHABLE, True),
        (ChainError("insufficient funds"), retry.CHAIN_UNREACHABLE, False),
        (TransactionReverted("r"), retry.CHAIN_UNREACHABLE, False),
        (TransactionNotFound("x"), retry.RECEIPT_WAIT, True),
        (ChainUnreachable("x"), retry.RECEIPT_WAIT, True),
        (RelayUnavailable("down"), retry.RELAY_TRANSIENT, True),
        (RelayError("boom", status=502), retry.RELAY_TRANSIENT, True),
        (RelayError("bad signature", status=401), retry.RELAY_TRANSIENT, False),
        (NotReady("task not ready", status=404), retry.RELAY_TRANSIENT, False),
        (NotReady("task not ready", status=404), retry.NOT_READY, True),
        (RelayUnavailable("down"), retry.NOT_READY, True),
        (RelayError("forbidden", status=403), retry.NOT_READY, False),
        (retry.Resign("nonce too low"), retry.RESIGN, True),
        (ChainUnreachable("x"), retry.RESIGN, False),
        (ChainUnreachable("x"), retry.EVENT_POLL, True),
        (ChainError("refused"), retry.EVENT_POLL, False),
        (OSError("connection reset"), retry.EVENT_PUSH, True),
    ],
)
def test_what_each_named_policy_retries(exc: BaseException, policy: Policy, retried: bool) -> None:
    assert policy.retry_if(exc) is retried
    assert retry.POLICIES[policy.name] is policy


async def test_expected_failures_are_logged_quietly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gridtask.retry")
    await retry.NOT_READY.call(Flaky(2, NotReady("task not ready", status=404)), timeout=5)
    await FAST.call(Flaky(1, ChainUnreachable("down")), timeout=5)
    levels = {(r.levelno, "NotReady" in r.getMessage()) for r in caplog.records}
    assert (logging.DEBUG, True) in levels
    assert (logging.WARNING, False) in levels
    assert (logging.WARNING, True) not in levels
