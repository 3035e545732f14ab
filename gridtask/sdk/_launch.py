"""Putting a task's members on chain (docs/design.md, "A task's life", step 1): each member
created with a fresh nonce and its own parameters, then started in a later block (whose hash
picks its node, so nobody can grind the choice) away from the nodes it must avoid; then the
contract's sample decides whether a lone task becomes a validation group of three.

An any-of task (``TaskHandle.any_model``) goes on chain needing any one of its models; its
parameters name the model only once its node is known: the first listed that node serves
(``name_model``; the hash committed at creation covers them with the model left open,
``TaskParams.committed``). Its group's two extra members are created once the original's
model is known, needing that model only, so that the three run one model and can agree.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from gridtask.chain.client import from_bytes32, to_bytes32
from gridtask.chain.models import TaskInfo
from gridtask.crypto import params_hash, result_key, sampled, task_commitment, task_key
from gridtask.exceptions import GridtaskError, TransactionReverted
from gridtask.params import ANY_MODEL, TaskParams
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

    def new_member(self, handle: TaskHandle, inputs: dict[str, Any], pinned_model: str = "") -> Member:
        """A fresh nonce and the parameters it salts: its own result key among them, so the
        members of a group have different parameters hashes and results encrypted apart.
        An any-of task's member names no model yet (``ANY_MODEL``) unless ``pinned_model``."""
        nonce = os.urandom(32)
        model = pinned_model or ("" if handle.any_model else handle.model)
        params = TaskParams(
            task_type=handle.task_type, model=model or ANY_MODEL, inputs=inputs,
            result_key=result_key(handle.secret, nonce).hex(),
        ).encode()
        key = task_key(self.client.identity.address, task_commitment(handle.secret, nonce))
        return Member(key=key, nonce=nonce, params=params, model=model, pinned=bool(pinned_model))

    def group_member(self, handle: TaskHandle, inputs: dict[str, Any]) -> Member:
        """A member added to the original's validation group: of an any-of task, one that needs
        the model the original runs, so that the three can agree."""
        return self.new_member(handle, inputs, handle.original.model if handle.any_model else "")

    @staticmethod
    def requirement(handle: TaskHandle, member: Member) -> tuple[list[bytes], bool]:
        """The models ``member`` goes on chain with, and whether any one of them will do."""
        if member.pinned:
            return [to_bytes32(member.model)], False
        return handle.models, handle.any_model

    async def name_model(self, handle: TaskHandle, member: Member, node: str) -> None:
        """An any-of member's model, once its node is known: the first of the task's models
        that node serves (from the nodes' logs), written into its parameters."""
        if member.model:
            return
        registry = self.client._registry
        assert registry is not None, "the client is not open"
        found = await registry.first_served(node, handle.models)
        if found is None:
            raise GridtaskError(f"task {member.task_id}: its node {node} serves none of the task's models "
                                f"{[from_bytes32(m) for m in handle.models]} by its logs on chain")
        member.model = from_bytes32(found)
        member.params = TaskParams.decode(member.params).model_copy(update={"model": member.model}).encode()
        log.info("task %s: any of its models will do; node %s serves %s", member.task_id[:10], node, member.model)

    async def create(self, handle: TaskHandle, members: list[Member]) -> None:
        """Create members on chain (concurrently: the chain client orders their nonces)."""
        client = self.client
        for member in members:
            handle.members.append(member)
            client._pump.watch(handle, member.key)

        async def create(member: Member) -> None:
            sent_at = time.perf_counter()
            models, any_model = self.requirement(handle, member)
            options = {"any_model": True} if any_model else {}  # a chain client of all-of tasks only takes these
            client._pump.absorb(await client.chain.create_task(
                task_type=int(handle.task_type), commitment=task_commitment(handle.secret, member.nonce),
                nonce=member.nonce, models=models, min_vram=handle.min_vram, required_gpu=handle.gpu,
                params_hash=params_hash(member.params, member.nonce), task_size=handle.size,
                timeout=handle.stage_timeout, fee=handle.fee, **options,
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
        models, any_model = self.requirement(handle, member)
        options = {"any_model": True} if any_model else {}
        try:
            client._pump.absorb(await chain.start_task(member.key, models, handle.min_vram, handle.gpu,
                                                       exclude=exclude, **options))
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

    @staticmethod
    def can_sample(handle: TaskHandle) -> bool:
        """Whether the sample can be acted on now: an any-of task's group waits for the model
        its original runs (its node known)."""
        return not handle.any_model or handle.is_group or bool(handle.original.model)

    async def sample(self, handle: TaskHandle, inputs: dict[str, Any] | None) -> None:
        """Ask the contract whether the original was sampled (the task ID opens its
        commitment); a sampled lone task becomes a group of three at once."""
        if handle.sampled is not None or not self.can_sample(handle):
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
        await self.create(handle, [self.group_member(handle, inputs or params.inputs) for _ in range(GROUP_SIZE - 1)])
        for member in handle.members[1:]:
            await self.start(handle, member)
