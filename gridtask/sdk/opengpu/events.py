"""Watchers (ogpu's ``ogpu.events``): async generators of a source's or a task's events on chain,
from ``from_block`` (None: the head), polled every ``poll_interval`` seconds.

A task's "address" is its key on chain, public: any process can watch any task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from gridtask.chain.client import ChainClient, to_bytes32
from gridtask.keys import Identity
from gridtask.limits import source_model
from gridtask.sdk.opengpu.client import ZERO, ChainConfig, Task, TaskStatus

__all__ = [
    "AttemptedEvent", "ResponseSubmittedEvent", "TaskPublishedEvent", "TaskStatusChangedEvent", "watch_attempted",
    "watch_response_submitted", "watch_task_published", "watch_task_status_changed",
]


@dataclass(frozen=True)
class TaskPublishedEvent:
    task: str
    source: str
    block_number: int
    transaction_hash: str
    log_index: int


@dataclass(frozen=True)
class AttemptedEvent:
    task: str
    provider: str
    suggested_payment: int
    block_number: int
    transaction_hash: str
    log_index: int


@dataclass(frozen=True)
class ResponseSubmittedEvent:
    response: str
    task: str
    block_number: int
    transaction_hash: str
    log_index: int


@dataclass(frozen=True)
class TaskStatusChangedEvent:
    task: str
    status: TaskStatus
    block_number: int
    transaction_hash: str
    log_index: int


_EVENT_STATUS = {"TaskCreated": TaskStatus.NEW, "TaskQueued": TaskStatus.NEW, "TaskStarted": TaskStatus.ATTEMPTED,
                 "TaskScoreReady": TaskStatus.RESPONDED, "TaskSuccess": TaskStatus.FINALIZED,
                 "TaskErrorReported": TaskStatus.FAILED, "TaskInvalidated": TaskStatus.FAILED}


async def _logs(names: list[str], key: bytes | None, from_block: int | None,
                poll_interval: float) -> AsyncIterator[Any]:
    """Every log of these TaskNetwork events (for one task key, or all), from ``from_block``
    (None: the head), polled every ``poll_interval`` seconds; for ever."""
    config = ChainConfig.config()
    chain = ChainClient.from_config(config, Identity.generate())
    try:
        next_block = from_block if from_block is not None else await chain.block_number()
        topics: list[Any] = [[chain.events.topic(n) for n in names]]
        if key is not None:
            topics.append(key)
        while True:
            head = await chain.block_number()
            if head >= next_block:
                for event in await chain.find_logs(topics, from_block=next_block, to_block=head):
                    yield event
                next_block = head + 1
            await asyncio.sleep(poll_interval)
    finally:
        await chain.aclose()


def _key(task: str | Task) -> bytes:
    return bytes.fromhex(str(task).removeprefix("0x"))


async def watch_task_published(source_address: str, *, from_block: int | None = None,
                               poll_interval: float = 2.0) -> AsyncIterator[TaskPublishedEvent]:
    """Tasks published to a source: ``TaskCreated`` events whose model is the source's."""
    model = to_bytes32(source_model(source_address))
    async for event in _logs(["TaskCreated"], None, from_block, poll_interval):
        if model in [bytes(m) for m in event.args.get("model_ids", [])]:
            yield TaskPublishedEvent("0x" + bytes(event.commitment or ZERO).hex(), to_checksum_address(source_address),
                                     event.block_number, "0x" + event.transaction_hash.hex(), event.log_index)


async def watch_attempted(task: str | Task, *, from_block: int | None = None,
                          poll_interval: float = 2.0) -> AsyncIterator[AttemptedEvent]:
    """A node took the task (``TaskStarted``)."""
    async for event in _logs(["TaskStarted"], _key(task), from_block, poll_interval):
        yield AttemptedEvent(str(task), str(event.args["node"]), 0, event.block_number,
                             "0x" + event.transaction_hash.hex(), event.log_index)


async def watch_response_submitted(task: str | Task, *, from_block: int | None = None,
                                   poll_interval: float = 2.0) -> AsyncIterator[ResponseSubmittedEvent]:
    """The node committed its response (``TaskScoreReady``: its score, and its result's hash)."""
    async for event in _logs(["TaskScoreReady"], _key(task), from_block, poll_interval):
        yield ResponseSubmittedEvent(str(task), str(task), event.block_number, "0x" + event.transaction_hash.hex(),
                                     event.log_index)


async def watch_task_status_changed(task: str | Task, *, from_block: int | None = None,
                                    poll_interval: float = 2.0) -> AsyncIterator[TaskStatusChangedEvent]:
    """Each change of the task's status on chain (an abort reads EXPIRED: the SDK aborts only a
    task whose time ran out, or CANCELED when its reason says so)."""
    names = [*_EVENT_STATUS, "TaskAborted"]
    async for event in _logs(names, _key(task), from_block, poll_interval):
        if event.name == "TaskAborted":
            status = TaskStatus.CANCELED if "cancel" in str(event.args.get("reason", "")) else TaskStatus.EXPIRED
        else:
            status = _EVENT_STATUS[event.name]
        yield TaskStatusChangedEvent(str(task), status, event.block_number, "0x" + event.transaction_hash.hex(),
                                     event.log_index)
