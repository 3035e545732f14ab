"""Topic filters of the event follower on a real anvil: the chain filters (one ``eth_getLogs``
per filter per block range when polling, one ``eth_subscribe`` per filter when pushed, so a
log nobody asked for never reaches the follower), an event two filters match is delivered
once, reorgs and restarts from the cursor keep working per filter, and ``set_filters``
changes what is followed at run time."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gridtask.chain.anvil import free_port
from gridtask.chain.client import ChainClient, ChainEvent
from gridtask.chain.events import EventFollower, address_topic, model_topic, normalize_filters
from gridtask.crypto import task_commitment, task_key
from gridtask.exceptions import ConfigError
from gridtask.keys import Identity
from gridtask.types import TaskType

from . import test_reorg
from .test_reorg import Chain, collect, summary

pytestmark = pytest.mark.e2e
chain = test_reorg.chain  # the fixture: a bare anvil with the contract deployed


async def queue(chain: Chain, creator: Identity, model: str) -> bytes:
    """A task of ``creator`` that no node can run: TaskCreated, then TaskQueued (key_model = ``model``)."""
    commitment = task_commitment(os.urandom(32), nonce := os.urandom(32))
    async with ChainClient(chain.anvil.url, chain.client.address, creator) as client:
        await client.create_task(
            task_type=TaskType.ECHO, commitment=commitment, nonce=nonce, models=[model], min_vram=0,
            required_gpu="", params_hash=os.urandom(32), task_size=1, timeout=60, fee=10**15)
        await client.start_task(task_key(creator.address, commitment), [model], 0, "")
    return task_key(creator.address, commitment)


def creators(chain: Chain, n: int) -> list[Identity]:
    out = [Identity.generate() for _ in range(n)]
    for ident in out:
        chain.anvil.fund(ident.address, 10**20)
    return out


def count_get_logs(client: ChainClient) -> list[Any]:
    """Record the topics of every eth_getLogs the client sends (the instance's method, wrapped)."""
    seen: list[Any] = []
    real = client.get_logs

    async def get_logs(from_block: int, to_block: int, topics: list[Any] | None = None) -> list[ChainEvent]:
        seen.append((from_block, to_block, topics))
        return await real(from_block, to_block, topics)

    client.get_logs = get_logs  # type: ignore[method-assign]
    return seen


def record_pushes(follower: EventFollower) -> list[dict[str, Any]]:
    """Every log notification the socket brings, before the follower looks at it."""
    pushed: list[dict[str, Any]] = []
    real = follower._on_push

    def on_push(message: dict[str, Any]) -> None:
        if message.get("params", {}).get("result"):
            pushed.append(message["params"]["result"])
        real(message)

    follower._on_push = on_push  # type: ignore[method-assign]
    return pushed


@contextlib.asynccontextmanager
async def running(chain: Chain, filters: list[Any], push: bool,
                  poll_interval: float | None = None) -> AsyncIterator[tuple[EventFollower, list[dict[str, Any]]]]:
    """A follower of ``filters``, started: pushed (socket connected; the safety-net poll asleep
    unless ``poll_interval`` says) or polling every 0.05 s. Yields it and its pushes."""
    follower = EventFollower(chain.client, ws_url=chain.anvil.ws_url if push else "", filters=filters,
                             poll_interval=poll_interval or (3600 if push else 0.05))
    pushed = record_pushes(follower)
    async with follower:
        if push:
            await asyncio.wait_for(follower.connected.wait(), 10)
        yield follower, pushed


@pytest.mark.parametrize("push", [False, True], ids=["poll", "push"])
async def test_only_what_a_filter_matches_arrives_once(chain: Chain, push: bool) -> None:
    """Three creators, two models. Filters: A's TaskCreated; TaskQueued of model-b; A's TaskCreated
    or TaskQueued (overlapping the first). A's two events arrive once each, B's TaskQueued (model-b)
    arrives, nothing of C (other creator, other model) nor B's TaskCreated. Polling sends one
    eth_getLogs per filter per range; pushed, no log of C even reaches the follower."""
    a, b, c = creators(chain, 3)
    codec = chain.client.events
    created, queued = codec.topic("TaskCreated"), codec.topic("TaskQueued")
    filters = [
        [created, None, address_topic(a.address)],
        [queued, None, None, model_topic("model-b")],
        [[created, queued], None, address_topic(a.address)],
    ]
    requests = count_get_logs(chain.client)
    async with running(chain, filters, push) as (follower, pushed):
        key_a = await queue(chain, a, "model-a")
        key_b = await queue(chain, b, "model-b")
        await queue(chain, c, "model-c")
        got = await collect(follower)
    assert summary(got) == [("TaskCreated", key_a, False), ("TaskQueued", key_a, False), ("TaskQueued", key_b, False)]
    if push:
        assert {bytes.fromhex(p["topics"][1][2:]) for p in pushed} == {key_a, key_b}  # C's logs never came
        assert len(pushed) == 4  # A's TaskCreated twice (two subscriptions match it), A's and B's TaskQueued
    else:
        assert requests and all(topics for _, _, topics in requests)  # never the whole contract's logs
        ranges: dict[tuple[int, int], int] = {}
        for lo, hi, _ in requests:
            ranges[(lo, hi)] = ranges.get((lo, hi), 0) + 1
        assert set(ranges.values()) == {3}, ranges  # one request per filter per block range


async def test_unfiltered_follower_still_sees_every_event(chain: Chain) -> None:
    a, b = creators(chain, 2)
    async with EventFollower(chain.client, poll_interval=0.05) as follower:
        key_a = await queue(chain, a, "model-a")
        key_b = await queue(chain, b, "model-b")
        got = await collect(follower)
    assert summary(got) == [("TaskCreated", key_a, False), ("TaskQueued", key_a, False),
                            ("TaskCreated", key_b, False), ("TaskQueued", key_b, False)]


@pytest.mark.parametrize("push", [False, True], ids=["poll", "push"])
async def test_a_reorg_takes_back_only_filtered_events(chain: Chain, push: bool) -> None:
    """A's task (followed) and B's (not) are reorged away: A's two events come back removed, nothing
    of B at any point; then A's next task, in the new blocks, arrives."""
    a, b = creators(chain, 2)
    filters = [[None, None, address_topic(a.address)]]  # anything created or queued by A
    async with running(chain, filters, push, poll_interval=0.05) as (follower, _):
        key_b = await queue(chain, b, "model-b")
        key_a = await queue(chain, a, "model-a")
        assert summary(await collect(follower)) == [("TaskCreated", key_a, False), ("TaskQueued", key_a, False)]
        chain.rpc("anvil_reorg", 4, [])  # B's and A's blocks replaced by empty ones
        assert await chain.client.get_task(key_a) is None and await chain.client.get_task(key_b) is None
        assert sorted(summary(await collect(follower))) == [("TaskCreated", key_a, True), ("TaskQueued", key_a, True)]
        again = await queue(chain, a, "model-a")
        await queue(chain, b, "model-b")
        assert summary(await collect(follower)) == [("TaskCreated", again, False), ("TaskQueued", again, False)]


async def test_a_restarted_filtered_follower_reads_on_from_its_cursor(chain: Chain, tmp_path: Path) -> None:
    a, b = creators(chain, 2)
    cursor = tmp_path / "cursor"
    filters = [[chain.client.events.topic("TaskQueued"), None, address_topic(a.address)]]
    async with EventFollower(chain.client, cursor_path=cursor, poll_interval=0.05, filters=filters) as follower:
        first = await queue(chain, a, "model-a")
        assert summary(await collect(follower, quiet=1.0)) == [("TaskQueued", first, False)]
    await queue(chain, b, "model-b")
    second = await queue(chain, a, "model-a")  # while the follower was stopped
    async with EventFollower(chain.client, cursor_path=cursor, poll_interval=0.05, filters=filters) as follower:
        assert summary(await collect(follower, quiet=1.0)) == [("TaskQueued", second, False)]


@pytest.mark.parametrize("push", [False, True], ids=["poll", "push"])
async def test_set_filters_follows_other_events_from_then_on(chain: Chain, push: bool) -> None:
    """First A's events, then B's: after set_filters nothing more of A arrives, B's do from the
    cursor on, and none of A's already delivered is taken back (the chain still holds them: the
    new filters do not search for them). Polling, the cursor had passed B's first task; pushed
    (the safety-net poll asleep), it had not: the catch-up read with B's filter delivers it."""
    a, b = creators(chain, 2)
    async with running(chain, [[None, None, address_topic(a.address)]], push) as (follower, pushed):
        key_a = await queue(chain, a, "model-a")
        first_b = await queue(chain, b, "model-b")
        assert summary(await collect(follower)) == [("TaskCreated", key_a, False), ("TaskQueued", key_a, False)]
        follower.set_filters([[None, None, address_topic(b.address)]])
        if push:
            await asyncio.sleep(0.5)  # the old socket closes, the new one subscribes
            await asyncio.wait_for(follower.connected.wait(), 10)
        pushed.clear()
        await queue(chain, a, "model-a")
        key_b = await queue(chain, b, "model-b")
        before = [("TaskCreated", first_b, False), ("TaskQueued", first_b, False)] if push else []
        after = [("TaskCreated", key_b, False), ("TaskQueued", key_b, False)]
        assert summary(await collect(follower)) == [*before, *after]
    if push:
        assert {bytes.fromhex(p["topics"][1][2:]) for p in pushed} == {key_b}


def test_bad_filters_are_refused_saying_what_a_topic_is() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        normalize_filters([[b"short"]])
    with pytest.raises(ConfigError, match="list of topic positions"):
        normalize_filters(["0x" + "00" * 32])
    with pytest.raises(ConfigError, match="non-empty"):
        normalize_filters([])
    with pytest.raises(ConfigError, match="20-byte address"):
        address_topic("0x1234")
    topic = "0x" + "ab" * 32
    assert normalize_filters([[topic, None, [topic, bytes(32)], None]]) == [
        ((bytes.fromhex("ab" * 32),), None, (bytes.fromhex("ab" * 32), bytes(32)))]


async def test_a_long_safety_net_interval_shrinks_while_the_socket_is_down(chain: Chain) -> None:
    """A follower that trusts the push (poll every hour) whose socket cannot connect still
    delivers within seconds: while the socket is down it polls at least every PUSH_SLOW_POLL_S."""
    (a,) = creators(chain, 1)
    follower = EventFollower(chain.client, ws_url=f"ws://127.0.0.1:{free_port()}", poll_interval=3600,
                             filters=[[None, None, address_topic(a.address)]])
    async with follower:
        await asyncio.sleep(0.5)
        key = await queue(chain, a, "model-a")
        got = await collect(follower, quiet=3.0)
    assert not follower.connected.is_set()
    assert summary(got) == [("TaskCreated", key, False), ("TaskQueued", key, False)]
