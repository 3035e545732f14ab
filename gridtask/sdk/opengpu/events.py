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
from gridtask.sdk.opengpu.client import ZERO, ChainConfig, ResponseStatus, Task, TaskStatus, _Registry

__all__ = [
    "AttemptedEvent", "RegisteredEvent", "ResponseStatusChangedEvent", "ResponseSubmittedEvent",
    "TaskPublishedEvent", "TaskStatusChangedEvent", "watch_attempted", "watch_registered",
    "watch_response_status_changed", "watch_response_submitted", "watch_task_published",
    "watch_task_status_changed",
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


@dataclass(frozen=True)
class ResponseStatusChangedEvent:
    response: str
    status: ResponseStatus
    block_number: int
    transaction_hash: str
    log_index: int


@dataclass(frozen=True)
class RegisteredEvent:
    provider: str
    registrant_id: int
    source: str
    block_number: int
    transaction_hash: str
    log_index: int


_EVENT_STATUS = {"TaskCreated": TaskStatus.NEW, "TaskQueued": TaskStatus.NEW, "TaskStarted": TaskStatus.ATTEMPTED,
                 "TaskScoreReady": TaskStatus.RESPONDED, "TaskSuccess": TaskStatus.FINALIZED,
                 "TaskErrorReported": TaskStatus.FAILED, "TaskInvalidated": TaskStatus.FAILED}


async def _logs(names: list[str], key: bytes | None, from_block: int | None, poll_interval: float, *,
                registry: list[str] | None = None) -> AsyncIterator[Any]:
    """Every log of these TaskNetwork events (for one task key, or all) and of the ``registry``'s
    events named, in chain order, from ``from_block`` (None: the head), polled every
    ``poll_interval`` seconds; for ever."""
    config = ChainConfig.config()
    chain = ChainClient.from_config(config, Identity.generate())
    clients = [chain]
    feeds: list[tuple[ChainClient, list[Any]]] = []
    try:
        if names:
            topics: list[Any] = [[chain.events.topic(n) for n in names]]
            if key is not None:
                topics.append(key)
            feeds.append((chain, topics))
        if registry:
            clients.append(source_registry := _Registry(config, chain.identity))
            feeds.append((source_registry, [[source_registry.events.topic(n) for n in registry]]))
        next_block = from_block if from_block is not None else await chain.block_number()
        while True:
            head = await chain.block_number()
            if head >= next_block:
                found = [e for client, topics in feeds
                         for e in await client.find_logs(topics, from_block=next_block, to_block=head)]
                for event in sorted(found, key=lambda e: (e.block_number, e.log_index)):
                    yield event
                next_block = head + 1
            await asyncio.sleep(poll_interval)
    finally:
        for client in clients:
            await client.aclose()


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


async def watch_response_status_changed(response_address: str, *, from_block: int | None = None,
                                        poll_interval: float = 2.0) -> AsyncIterator[ResponseStatusChangedEvent]:
    """A response's changes: SUBMITTED when its node committed it (``TaskScoreReady`` of the
    response's task), CONFIRMED when the task's creator chose it (the SourceRegistry's
    ``ResponseConfirmed``)."""
    key = _key(response_address)
    async for event in _logs(["TaskScoreReady"], key, from_block, poll_interval, registry=["ResponseConfirmed"]):
        if event.name == "ResponseConfirmed":
            if bytes(event.args["response"]) != key:
                continue
            status = ResponseStatus.CONFIRMED
        else:
            status = ResponseStatus.SUBMITTED
        yield ResponseStatusChangedEvent(str(response_address), status, event.block_number,
                                         "0x" + event.transaction_hash.hex(), event.log_index)


async def watch_registered(source_address: str, *, from_block: int | None = None,
                           poll_interval: float = 2.0) -> AsyncIterator[RegisteredEvent]:
    """Nodes that start serving a source (ogpu: providers registering to it): a node that joins
    with the source's model, or adds it later (``NodeJoined``, ``NodeModelsChanged``).
    ``registrant_id`` counts the source's registrations on chain from the first, so it is the
    same whatever ``from_block`` a watcher starts at."""
    model = to_bytes32(source_model(source_address))
    names = ["NodeJoined", "NodeModelsChanged"]

    def registers(event: Any) -> bool:
        listed = event.args.get("models" if event.name == "NodeJoined" else "added", [])
        return model in [bytes(m) for m in listed]

    config = ChainConfig.config()
    async with ChainClient.from_config(config, Identity.generate()) as chain:
        start = from_block if from_block is not None else await chain.block_number()
        earlier = await chain.find_logs([[chain.events.topic(n) for n in names]], to_block=start - 1) \
            if start > 0 else []
    registrant = sum(1 for e in earlier if registers(e))
    async for event in _logs(names, None, start, poll_interval):
        if registers(event):
            yield RegisteredEvent(str(event.args["node"]), registrant, to_checksum_address(source_address),
                                  event.block_number, "0x" + event.transaction_hash.hex(), event.log_index)
            registrant += 1
