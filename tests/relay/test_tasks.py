"""The relay's task table alone (``gridtask.relay.tasks``): events in, chain reads counted.

The chain here is ``FakeChain`` (tests/relay/chains.py) and the events are built by hand,
one ``ChainEvent`` per contract event, exactly as the follower decodes them. The table in
a running relay, fed by a real follower on anvil, is tests/e2e/test_relay_events.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gridtask.chain.client import ChainEvent
from gridtask.crypto import keccak
from gridtask.exceptions import ChainError, ChainUnreachable
from gridtask.keys import Identity
from gridtask.relay.tasks import TaskTable, TaskView, follow
from gridtask.types import TaskState

from .chains import RESULT, FakeChain

CREATOR = Identity.generate()
NODE = Identity.generate()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(name: str, key: bytes, *, removed: bool = False, block: int = 1, **args: object) -> ChainEvent:
    base: dict[str, object] = {"commitment": key, "creator": CREATOR.address}
    if name == "TaskAborted":
        base["by"] = NODE.address
    else:
        base["node"] = NODE.address
    if name == "TaskScoreReady":
        base |= {"score": b"\x01" * 32, "result_hash": keccak(RESULT)}
    return ChainEvent(name=name, args=base | args, block_number=block, transaction_hash=b"\0" * 32,
                      log_index=0, block_hash=block.to_bytes(32, "big"), removed=removed)


def following(chain: FakeChain, **kwargs: float) -> TaskTable:
    table = TaskTable(chain, **kwargs)  # type: ignore[arg-type]
    table.following = True
    return table


def fed(state: TaskState, *names: str) -> tuple[bytes, TaskTable]:
    """A following table over a chain holding one task in ``state``, fed that task's events
    ``names`` in this order."""
    chain = FakeChain()
    key = chain.add(CREATOR, NODE, state)
    table = following(chain)
    for name in names:
        table.apply(event(name, key))
    return key, table


async def test_a_started_task_is_known_from_its_event_without_reading_the_chain() -> None:
    key, table = fed(TaskState.STARTED, "TaskStarted")
    view, fresh = await table.lookup(key)
    assert view == TaskView(CREATOR.address, NODE.address, TaskState.STARTED)
    assert not fresh and table.reads == 0


async def test_events_move_a_task_on_and_the_score_brings_the_result_hash() -> None:
    key, table = fed(TaskState.VALIDATED, "TaskStarted", "TaskScoreReady", "TaskValidated")
    view, _ = await table.lookup(key)
    assert view is not None and view.state == TaskState.VALIDATED and view.result_hash == keccak(RESULT)
    assert table.reads == 0


async def test_an_unknown_task_is_read_once_and_then_served_from_the_table() -> None:
    key, table = fed(TaskState.STARTED)
    views = await asyncio.gather(*(table.lookup(key) for _ in range(5)))  # at once: one read
    assert {v for v, _ in views} == {TaskView(CREATOR.address, NODE.address, TaskState.STARTED, keccak(RESULT))}
    assert table.reads == 1
    assert await table.lookup(key) == (views[0][0], False)
    assert table.reads == 1


async def test_a_task_the_chain_does_not_know_is_none_and_not_kept() -> None:
    table = following(FakeChain())
    assert await table.lookup(b"\x07" * 32) == (None, True)
    assert await table.lookup(b"\x07" * 32) == (None, True)
    assert table.reads == 2 and len(table) == 0  # it may be created a moment later


async def test_without_events_every_lookup_reads() -> None:
    chain = FakeChain()
    key = chain.add(CREATOR, NODE, TaskState.STARTED)
    table = TaskTable(chain)
    for _ in range(3):
        _, fresh = await table.lookup(key)
        assert fresh
    assert table.reads == 3 and len(table) == 0


async def test_a_late_event_or_a_stale_read_never_takes_a_task_back() -> None:
    # TaskStarted delivered late (pushed and polled out of order)
    key, table = fed(TaskState.STARTED, "TaskScoreReady", "TaskValidated", "TaskStarted")
    assert (await table.lookup(key))[0].state == TaskState.VALIDATED  # type: ignore[union-attr]
    assert (await table.read(key)).state == TaskState.VALIDATED  # type: ignore[union-attr]  # chain: STARTED


async def test_an_event_taken_back_by_a_reorg_forgets_the_task() -> None:
    key, table = fed(TaskState.STARTED, "TaskStarted", "TaskScoreReady")
    table.apply(event("TaskScoreReady", key, removed=True))
    assert key not in table
    view, fresh = await table.lookup(key)
    assert fresh and view is not None and view.state == TaskState.STARTED


async def test_a_missed_score_makes_the_table_read_the_task_whole() -> None:
    """TaskValidated after a TaskStarted, its TaskScoreReady never seen: the table has no
    result hash to check the upload against, so it forgets the task rather than guess."""
    key, table = fed(TaskState.VALIDATED, "TaskStarted", "TaskValidated")
    assert key not in table
    view, fresh = await table.lookup(key)
    assert fresh and view is not None and view.result_hash == keccak(RESULT)


async def test_later_events_of_an_unseen_task_do_not_add_it() -> None:
    table = following(FakeChain())
    key = b"\x05" * 32
    for name in ("TaskValidated", "TaskSuccess", "TaskAborted", "TaskErrorReported", "TaskInvalidated"):
        table.apply(event(name, key))
    table.apply(event("TaskCreated", key))
    assert len(table) == 0


async def test_ended_tasks_are_evicted_after_a_while_and_read_again_if_asked() -> None:
    chain = FakeChain()
    clock = Clock()
    table = following(chain, ended_ttl_s=60, clock=clock)  # type: ignore[arg-type]
    ended = chain.add(CREATOR, NODE, TaskState.SUCCESS, seed=1)
    live = chain.add(CREATOR, NODE, TaskState.STARTED, seed=2)
    table.apply(event("TaskStarted", ended))
    table.apply(event("TaskScoreReady", ended))
    table.apply(event("TaskSuccess", ended))
    table.apply(event("TaskStarted", live))
    clock.now += 61
    table.apply(event("TaskStarted", b"\x09" * 32))  # any later update sweeps
    assert ended not in table and live in table
    view, fresh = await table.lookup(ended)
    assert fresh and view is not None and view.state == TaskState.SUCCESS


async def test_a_task_untouched_for_long_is_evicted_and_the_table_never_exceeds_its_size() -> None:
    chain = FakeChain()
    clock = Clock()
    table = following(chain, idle_ttl_s=600, max_tasks=100, clock=clock)  # type: ignore[arg-type]
    keys = [bytes([1]) + i.to_bytes(31, "big") for i in range(250)]
    for k in keys:
        table.apply(event("TaskStarted", k))
    assert len(table) == 100 and keys[-1] in table and keys[0] not in table  # least recently used went
    await table.lookup(keys[150])  # used: now the most recent
    clock.now += 601
    table.apply(event("TaskStarted", b"\x02" * 32))
    assert len(table) == 1  # every other entry sat untouched for over idle_ttl_s


async def test_the_relays_own_report_makes_the_task_success_at_once() -> None:
    key, table = fed(TaskState.VALIDATED, "TaskScoreReady", "TaskValidated")
    table.reported(key)
    assert (await table.lookup(key))[0].state == TaskState.SUCCESS  # type: ignore[union-attr]


async def test_a_failed_read_is_raised_to_every_caller_waiting_on_it() -> None:
    chain = FakeChain()
    chain.unreachable = True
    table = following(chain)
    results = await asyncio.gather(*(table.lookup(b"\x01" * 32) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ChainError) for r in results)


class ListSource:
    """Events from a list, then nothing (the stream stays open); counts starts."""

    def __init__(self, events: list[ChainEvent], fail_starts: int = 0) -> None:
        self.events = events
        self.fail_starts = fail_starts
        self.started = 0
        self.stopped = False

    async def start(self) -> ListSource:
        self.started += 1
        if self.started <= self.fail_starts:
            raise ChainUnreachable("chain unreachable at the start")
        return self

    async def stop(self) -> None:
        self.stopped = True

    def __aiter__(self) -> AsyncIterator[ChainEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ChainEvent]:
        for e in self.events:
            yield e
        await asyncio.Event().wait()


async def test_follow_retries_its_start_clears_what_was_read_before_and_feeds_the_table() -> None:
    chain = FakeChain()
    read_before = chain.add(CREATOR, NODE, TaskState.STARTED, seed=1)
    streamed = chain.add(CREATOR, NODE, TaskState.STARTED, seed=2)
    table = TaskTable(chain)
    await table.lookup(read_before)
    source = ListSource([event("TaskStarted", streamed)], fail_starts=1)
    running = asyncio.create_task(follow(table, source))
    for _ in range(100):
        if streamed in table:
            break
        await asyncio.sleep(0.05)
    assert table.following and source.started == 2
    assert streamed in table and read_before not in table
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert source.stopped and not table.following
