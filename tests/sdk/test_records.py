"""``TaskRecords`` alone: what a client believes about its tasks from their events, and when
it must read the chain instead (events out of order, a reorg, a stage deadline with no news)."""

from __future__ import annotations

import time

import pytest

import gridtask.sdk._records as records_module
from gridtask.chain.client import ChainEvent
from gridtask.sdk._records import TaskRecords, moves_on
from gridtask.types import TaskState

KEY = b"\x11" * 32
NODE = "0x" + "22" * 20
CREATOR = "0x" + "33" * 20


def event(name: str, index: int, *, removed: bool = False, **args: object) -> ChainEvent:
    return ChainEvent(name=name, args={"commitment": KEY, **args}, block_number=index,
                      transaction_hash=bytes([index]) * 32, log_index=index, block_hash=bytes([index]) * 32,
                      removed=removed)


def created(index: int = 1, timeout: int = 60) -> ChainEvent:
    return event("TaskCreated", index, creator=CREATOR, fee=5, timeout=timeout)


@pytest.fixture
def records() -> TaskRecords:
    r = TaskRecords()
    r.watch(KEY, KEY)
    return r


def test_events_in_order_make_the_record_without_a_read(records: TaskRecords) -> None:
    records.on_event(created())
    records.on_event(event("TaskStarted", 2, node=NODE))
    records.on_event(event("TaskScoreReady", 3, node=NODE, score=b"\x01" * 32, result_hash=b"\x02" * 32))
    info = records.known[KEY]
    assert (info.state, info.node, info.fee, info.score) == (TaskState.SCORE_READY, NODE, 5, b"\x01" * 32)
    assert not records.doubtful(KEY, 1.0)
    assert records.creation_hash(KEY) == bytes([1]) * 32  # the sample is drawn from it
    assert records.wake[KEY].is_set()


def test_a_late_event_never_takes_a_state_back_and_a_repeat_changes_nothing(records: TaskRecords) -> None:
    records.on_event(created())
    records.on_event(event("TaskSuccess", 5, node=NODE, fee=5))
    records.on_event(event("TaskValidated", 4, node=NODE))  # pushed late
    assert records.known[KEY].state == TaskState.SUCCESS
    records.on_event(event("TaskInvalidated", 6, node=NODE, reason="dispute"))  # a dispute after delivery
    records.on_event(event("TaskInvalidated", 6, node=NODE, reason="dispute"))
    assert records.known[KEY].state == TaskState.INVALIDATED
    assert records.event(KEY, "TaskInvalidated") is not None
    assert [moves_on(TaskState.ABORTED, s) for s in TaskState] == [False] * len(TaskState)


def test_an_event_before_the_creation_or_taken_back_by_a_reorg_is_a_gap(records: TaskRecords) -> None:
    records.on_event(event("TaskStarted", 2, node=NODE))  # the other filter's log came first
    assert records.doubtful(KEY, 1.0)
    records.on_event(created())
    records.on_event(event("TaskStarted", 2, node=NODE))
    assert records.doubtful(KEY, 1.0)  # still: only a read clears it
    records.read(KEY, records.known[KEY])
    assert not records.doubtful(KEY, 1.0)
    records.on_event(created(1))  # once more, marked removed: the creation block was reorged away
    records.on_event(ChainEvent(name="TaskCreated", args={"commitment": KEY}, block_number=1,
                                transaction_hash=bytes([1]) * 32, log_index=1, block_hash=bytes([1]) * 32,
                                removed=True))
    assert records.doubtful(KEY, 1.0) and records.creation_hash(KEY) is None


def test_a_stage_past_its_deadline_with_no_news_is_read_once_per_recheck(
        records: TaskRecords, monkeypatch: pytest.MonkeyPatch) -> None:
    records.on_event(created(timeout=60))
    records.on_event(event("TaskStarted", 2, node=NODE))
    assert not records.doubtful(KEY, 1.0)
    later = time.time() + 62  # past the deadline and its grace
    monkeypatch.setattr(records_module.time, "time", lambda: later)
    assert records.doubtful(KEY, 1.0)
    records.read(KEY, records.known[KEY])
    assert not records.doubtful(KEY, 1.0)  # read just now: not again before the recheck
    assert records.doubtful(KEY, 0.0)


def test_unfollowed_tasks_are_ignored_and_forgetting_frees_everything(records: TaskRecords) -> None:
    other = TaskRecords()
    other.on_event(created())
    assert other.known == {}
    records.on_event(created())
    records.forget([KEY])
    assert records.known == {} and KEY not in records.wake and records.creation_hash(KEY) is None


async def test_a_sender_gets_its_transactions_events_even_when_they_came_first(records: TaskRecords) -> None:
    records.on_event(created(7))
    assert [e.name for e in await records.confirm(bytes([7]) * 32, 0.01) or []] == ["TaskCreated"]
    assert await records.confirm(bytes([8]) * 32, 0.01) is None  # none came: the caller reads the receipt
