"""Putting a task's members on chain (docs/design.md, "A task's life", step 1): each member
created with a fresh nonce and its own parameters, then started in a later block (whose hash
picks its node, so nobody can grind the choice) away from the nodes it must avoid; then the
contract's sample decides whether a lone task becomes a validation group of three.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from gridtask.chain.models import TaskInfo
from gridtask.crypto import params_hash, result_key, sampled, task_commitment, task_key
from gridtask.exceptions import TransactionReverted
from gridtask.params import TaskParams
from gridtask.retry import CHAIN_UNREACHABLE
from gridtask.sdk._handle import Member, TaskHandle
from gridtask.types import TaskState

if TYPE_CHECKING:
    from gridtask.sdk._client import Client

log = logging.getLogger("gridtask.sdk")

GROUP_SIZE = 3
EXCLUDE_MAX = 2  # the contract's DynArray[address, 2]


class Launcher:
    """Creates and starts the members of one client's tasks."""

    def __init__(self, client: Client) -> None:
        self.client = client
        # Nodes of this client's most recent tasks: every start excludes them, so that the
        # exclude list of a group's member looks like that of any other task.
        self.recent_nodes: deque[str] = deque(maxlen=EXCLUDE_MAX)

    def new_member(self, handle: TaskHandle, inputs: dict[str, Any]) -> Member:
        """A fresh nonce and the parameters it salts: its own result key among them, so the
        members of a group have different parameters hashes and results encrypted apart."""
        nonce = os.urandom(32)
        params = TaskParams(
            task_type=handle.task_type, model=handle.model, inputs=inputs,
            result_key=result_key(handle.secret, nonce).hex(),
        ).encode()
        key = task_key(self.client.identity.address, task_commitment(handle.secret, nonce))
        return Member(key=key, nonce=nonce, params=params)

    async def create(self, handle: TaskHandle, members: list[Member]) -> None:
        """Create members on chain (concurrently: the chain client orders their nonces)."""
        client = self.client
        for member in members:
            handle.members.append(member)
            client._pump.watch(handle, member.key)

        async def create(member: Member) -> None:
            sent_at = time.perf_counter()
            client._pump.absorb(await client.chain.create_task(
                task_type=int(handle.task_type), commitment=task_commitment(handle.secret, member.nonce),
                nonce=member.nonce, models=handle.models, min_vram=handle.min_vram, required_gpu=handle.gpu,
                params_hash=params_hash(member.params, member.nonce), task_size=handle.size,
                timeout=handle.stage_timeout, fee=handle.fee,
            ))
            await client.hooks.tell(handle, member, "created", tx_started_at=sent_at)

        await asyncio.gather(*(create(m) for m in members))

    def exclude(self, handle: TaskHandle, member: Member) -> list[str]:
        """The nodes ``member`` may not run on: a group member's, the other members' nodes;
        any other task's, the nodes of this client's two most recent tasks (so that an exclude
        list never marks a group). Either way no more of them than leaves a node that can run
        it (a rule of public numbers, so the cap marks nothing either)."""
        if handle.is_group:
            nodes = [m.node for m in handle.members if m is not member and m.node]
        else:
            nodes = list(dict.fromkeys([*handle.exclude, *reversed(self.recent_nodes)]))
        return nodes[:max(0, min(EXCLUDE_MAX, handle.serving - 1))]

    async def start(self, handle: TaskHandle, member: Member) -> None:
        """``startTask`` in a block after the creation (the creation's receipt is in: any
        transaction sent now lands later); then learn its node, if it got one."""
        client, chain = self.client, self.client.chain
        exclude = self.exclude(handle, member)
        try:
            client._pump.absorb(await chain.start_task(member.key, handle.models, handle.min_vram, handle.gpu,
                                                       exclude=exclude))
        except TransactionReverted as exc:
            info = await chain.get_task(member.key)
            if info is None or info.state == TaskState.CREATED:
                if "start window passed" in exc.reason:  # 256 blocks later: only a refund is left
                    client._pump.absorb(await chain.cancel_task(member.key))
                    return
                raise
            log.info("task %s: started by someone else meanwhile", member.task_id[:10])
            await client.hooks.tell(handle, member, "retry", what="startTask", why=exc.reason)
            client._pump.records.read(member.key, info)
        info = client._pump.records.known.get(member.key)
        if info is None or info.state == TaskState.CREATED:  # its event did not reach us: ask
            info = await chain.get_task(member.key)
        self.learn_node(member, info)
        if info is not None and info.state in (TaskState.STARTED, TaskState.QUEUED):
            await client.hooks.tell(handle, member, "started", node=member.node,
                                    queued=info.state == TaskState.QUEUED)

    def learn_node(self, member: Member, info: TaskInfo | None) -> None:
        """The member's node, once its record names one (the next starts exclude it)."""
        if info is not None and info.has_node and not member.node:
            member.node = info.node
            self.recent_nodes.append(info.node)

    async def sample(self, handle: TaskHandle, inputs: dict[str, Any] | None) -> None:
        """Ask the contract whether the original was sampled (the task ID opens its
        commitment); a sampled lone task becomes a group of three at once."""
        if handle.sampled is not None:
            return
        client, original = self.client, handle.original
        created_in = client._pump.records.creation_hash(original.key)
        if created_in:  # the rule, on the creation block's hash that the TaskCreated log carries
            rate = (await client._network_params()).validation_rate_bps
            handle.sampled = sampled(handle.opening, created_in, rate)
        else:  # no log of its creation here (a handle from elsewhere): the contract says
            chain = client.chain
            handle.sampled = bool(await CHAIN_UNREACHABLE.call(
                lambda: chain.is_sampled(original.key, handle.opening, original.nonce)))
        if not handle.sampled or handle.is_group:
            return
        log.info("task %s: sampled for validation; two more tasks with its task ID make a group of three",
                 handle.task_id[:10])
        params = TaskParams.decode(original.params)
        await self.create(handle, [self.new_member(handle, inputs or params.inputs) for _ in range(GROUP_SIZE - 1)])
        for member in handle.members[1:]:
            await self.start(handle, member)
