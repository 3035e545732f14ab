"""Validating a task's score on chain (docs/design.md, "A task's life", step 6): a lone task
by itself (``validateSingleTask``, opening its commitment), a validation group's three
together (``validateTaskGroup``), and reading how a group ended (``TaskGroupValidated``
with the slashes of the same transaction) into a ``GroupResult``.

A refused validation is not an error: a member moved meanwhile (its node aborted it, an
earlier try got through), so its record is doubted and read again.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gridtask.chain.client import ChainEvent
from gridtask.exceptions import TransactionReverted
from gridtask.retry import CHAIN_UNREACHABLE
from gridtask.sdk._handle import GroupResult, Member, TaskHandle
from gridtask.types import GroupOutcome

if TYPE_CHECKING:
    from gridtask.sdk._client import Client

log = logging.getLogger("gridtask.sdk")


class Validation:
    """The validating side of one client's tasks."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def single(self, handle: TaskHandle, member: Member, deadline: float) -> None:
        """Accept the score of a task the network did not sample; the caller reads the state
        again either way."""
        client, chain = self.client, self.client.chain
        records = client._pump.records
        sent_at = time.perf_counter()
        try:
            client._pump.absorb(await CHAIN_UNREACHABLE.call(
                lambda: chain.validate_single_task(member.key, handle.opening, member.nonce), deadline=deadline))
        except TransactionReverted as exc:  # its node aborted it, or an earlier try got through
            log.warning("task %s: validate refused (%s); reading its state again", member.task_id[:10], exc.reason)
            await client.hooks.tell(handle, member, "retry", what="validateSingleTask", why=exc.reason)
            records.doubt(member.key)
            if "sampled" in exc.reason:  # the contract says so: ask it again, which makes the group
                handle.sampled = None
                records.forget_creation(member.key)
                return
            await client._pump.wait(handle, deadline)
            return
        await client.hooks.tell(handle, member, "validated", tx_started_at=sent_at)

    async def group(self, handle: TaskHandle, deadline: float) -> None:
        """``validateTaskGroup`` once every member scored or ended; its receipt says how the
        group ended (``handle.group``)."""
        client, chain = self.client, self.client.chain
        nonces = [m.nonce for m in handle.members]
        sent_at = time.perf_counter()
        try:
            receipt = await CHAIN_UNREACHABLE.call(
                lambda: chain.validate_task_group(handle.opening, nonces), deadline=deadline)
        except TransactionReverted as exc:  # a member moved meanwhile, or an earlier try got through
            log.warning("task %s: group validation refused (%s); reading its state again",
                        handle.task_id[:10], exc.reason)
            await client.hooks.tell(handle, handle.original, "retry", what="validateTaskGroup", why=exc.reason)
            client._pump.records.doubt(*(m.key for m in handle.members))
            handle.group = await self.find_group(handle)
            if handle.group is None:
                await client._pump.wait(handle, deadline)
            return
        events = chain.decode_receipt(receipt) if receipt is not None else []
        client._pump.absorb(receipt)
        found = next((e for e in events if e.name == "TaskGroupValidated"), None)
        handle.group = await self.group_result(found, events) if found else await self.find_group(handle)
        if handle.group is not None:
            log.info("task %s: group validated: %s", handle.task_id[:10], handle.group.describe())
            for member in handle.members:
                await client.hooks.tell(handle, member, "validated", tx_started_at=sent_at,
                                        outcome=handle.group.outcome.name)

    async def find_group(self, handle: TaskHandle) -> GroupResult | None:
        """The group's ``TaskGroupValidated``: as the stream delivered it, else searched for on
        chain (indexed by ``keccak(task ID)``)."""
        found = self.client._pump.records.event(handle.original.key, "TaskGroupValidated")
        if found is not None and bytes(found.args["keys"][0]) == handle.commitment:
            return await self.group_result(found)
        chain = self.client.chain
        events = await chain.find_logs([chain.events.topic("TaskGroupValidated"), handle.opening])
        for event in reversed(events):
            if not event.removed and bytes(event.args["keys"][0]) == handle.commitment:
                return await self.group_result(event)
        return None

    async def group_of(self, key: bytes) -> GroupResult | None:
        """How the validation group of any member ``key`` ended (any creator's), or None."""
        chain = self.client.chain
        info = await chain.get_task(key)
        if info is None:
            return None
        creator = bytes(12) + bytes.fromhex(info.creator.removeprefix("0x"))
        events = await chain.find_logs([chain.events.topic("TaskGroupValidated"), None, creator])
        for event in reversed(events):
            if not event.removed and key in [bytes(k) for k in event.args["keys"]]:
                return await self.group_result(event)
        return None

    async def group_result(self, event: ChainEvent, receipt_events: list[ChainEvent] | None = None) -> GroupResult:
        """A ``TaskGroupValidated`` with the slashes of the same transaction and the members' nodes."""
        chain = self.client.chain
        if receipt_events is None:
            topic = chain.events.topic("NodeSlashed")
            receipt_events = [e for e in await chain.find_logs([topic], from_block=event.block_number,
                                                                to_block=event.block_number)
                              if e.transaction_hash == event.transaction_hash]
        keys = tuple(bytes(k) for k in event.args["keys"])
        bits = int(event.args["agreeing"])
        slashed: dict[str, int] = {}
        for e in receipt_events:
            if e.name == "NodeSlashed":
                slashed[str(e.args["node"])] = slashed.get(str(e.args["node"]), 0) + int(e.args["amount"])
        nodes = []
        for k in keys:
            known = self.client._pump.records.known.get(k)
            info = known if known is not None and known.has_node else await chain.get_task(k)
            nodes.append(info.node if info is not None else "")
        return GroupResult(
            outcome=GroupOutcome(int(event.args["outcome"])), keys=keys,
            agreeing=tuple(bool(bits >> i & 1) for i in range(len(keys))), sampled=bool(event.args["sampled"]),
            slashed=slashed, nodes=tuple(nodes),
        )
