"""One task's state machine (docs/design.md, "A task's life", steps 2-8): given what its
members' records say now, the one next thing to do. ``TaskRun`` decides; the ``Client``
acts (sends, uploads, downloads, reads) and keeps the records that the events feed.

A lone task: start it, upload its parameters to its node, validate its score, download
and check its result. A validation group of three: the same for each member, a member
that landed on another member's node replaced, a stalled one aborted, the three validated
together, then every agreeing member's delivery checked.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from gridtask.chain.models import TaskInfo
from gridtask.exceptions import (
    ChainError,
    GridtaskError,
    GroupFailed,
    ResultMismatch,
    TaskAborted,
    TaskErrored,
    TaskInvalidated,
)
from gridtask.limits import explain_task_error
from gridtask.params import TaskParams
from gridtask.retry import CHAIN_UNREACHABLE
from gridtask.types import GroupOutcome, TaskState

if TYPE_CHECKING:
    from gridtask.sdk._client import Client
    from gridtask.sdk._handle import GroupResult, Member, StatusCallback, TaskHandle

log = logging.getLogger("gridtask.sdk")

ABORT_GRACE_S = 1.0  # past a stage deadline by the local clock, a block's timestamp is past it too
# States in which the task waits on someone else (a node to take it, to score, to deliver):
# past the stage's deadline with the state unchanged, nothing more will happen.
STALLABLE = (TaskState.QUEUED, TaskState.STARTED, TaskState.VALIDATED)
# A group is validated once every member is in one of these (the contract's rule).
GROUP_READY = (TaskState.SCORE_READY, TaskState.ERRORED, TaskState.ABORTED)
# States a member reaches only after its group was validated.
AFTER_GROUP = (TaskState.VALIDATED, TaskState.SUCCESS, TaskState.INVALIDATED)
# Members replaced because they landed on a node another member ran on, before giving up.
MAX_REPLACEMENTS = 2
#: The steps a member has passed once it is in a state, for the hooks (the steps the client
#: takes itself, "created", "params_uploaded", "validated", "downloaded", are told where taken).
STEPS_BY = {TaskState.STARTED: ("started",), TaskState.SCORE_READY: ("started", "scored"),
            TaskState.VALIDATED: ("started", "scored"), TaskState.SUCCESS: ("started", "scored", "delivered")}
NODE_PAID = "node paid"  # in the reason of a task its node claimed (claimUnvalidated)
_ACTED, _WAIT = object(), object()  # what one step did, when it returned no result


class TaskRun:
    """Follows one task (and its group) to its end for ``Client.result``."""

    def __init__(self, client: Client, handle: TaskHandle, deadline: float,
                 on_status: StatusCallback | None = None) -> None:
        self.client = client
        self.handle = handle
        self.deadline = deadline
        self.on_status = on_status

    async def run(self) -> Any:
        """Step until the task ends: its checked result, or its typed error."""
        client, handle = self.client, self.handle
        while True:
            infos = await self._read()
            original = infos[handle.commitment]
            if original.state != handle.state:
                handle.state = original.state
                if self.on_status:
                    self.on_status(handle, original.state)
            if handle.sampled is None and original.state != TaskState.CREATED and client._launch.can_sample(handle):
                await client._launch.sample(handle, None)  # a handle whose submit was cut short
                continue
            outcome = await (self._group(infos) if handle.is_group else self._single(handle.original, original))
            if outcome is _WAIT:
                await client._pump.wait(handle, self.deadline)
            elif outcome is not _ACTED:
                return outcome

    async def _read(self) -> dict[bytes, TaskInfo]:
        """Every member's record (spares included) as its events tell it, the chain read only
        for a gap (``EventPump.read``); the nodes and the steps they show learnt from them."""
        client, handle = self.client, self.handle
        members = [*handle.members, *handle.spares]
        infos = await client._pump.read(members, self.deadline)
        for member in members:
            info = infos[member.key]
            member.state = info.state
            client._launch.learn_node(member, info)
            for name in STEPS_BY.get(info.state, ()):
                await client.hooks.tell(handle, member, name, node=info.node)
        return infos

    async def _tend(self, member: Member, info: TaskInfo, *, upload: bool = True) -> bool:
        """What one member needs from its creator now: a start, its parameters, or an abort
        once it stalled past its stage's deadline. True if something was done."""
        client = self.client
        if info.state == TaskState.CREATED:
            await client._launch.start(self.handle, member)
            return True
        if info.state in STALLABLE and time.time() > info.deadline + ABORT_GRACE_S:
            await self._abort_stalled(member, info)
            return True
        if info.state == TaskState.STARTED and upload and not member.uploaded:
            await client._launch.name_model(self.handle, member, info.node)  # an any-of task's: now
            await client._transfer.upload_params(self.handle, member, info, self.deadline)
            member.uploaded = True
            return True
        return False

    async def _single(self, member: Member, info: TaskInfo) -> Any:
        client = self.client
        if info.state == TaskState.SUCCESS:
            self.handle.delivered_by = member
            return await client._transfer.download(self.handle, member, info, self.deadline)
        if info.state == TaskState.ABORTED:
            raise TaskAborted(await client._pump.abort_reason(member), task_id=member.task_id, fee=info.fee)
        if info.state == TaskState.ERRORED:
            code = await client._pump.error_code(member)
            raise TaskErrored(code, task_id=member.task_id, message=explain_task_error(code, member.params))
        if info.state == TaskState.INVALIDATED:
            raise await self._invalidated(member, info)
        if await self._tend(member, info):
            return _ACTED
        if info.state == TaskState.SCORE_READY:  # again if a reorg took a validation back
            await client._validation.single(self.handle, member, self.deadline)
            return _ACTED
        return _WAIT

    async def _group(self, infos: dict[bytes, TaskInfo]) -> Any:
        client, handle = self.client, self.handle
        if handle.group is None and any(infos[m.key].state in AFTER_GROUP for m in handle.members):
            handle.group = await client._validation.find_group(handle)  # validated by an earlier call
        if handle.group is None:
            for spare in handle.spares:  # never uploaded to: its node aborts it, or we do once stalled
                if await self._tend(spare, infos[spare.key], upload=False):
                    return _ACTED
            if await self._replace_duplicate():
                return _ACTED
            for member in handle.members:
                if await self._tend(member, infos[member.key]):
                    return _ACTED
            if all(infos[m.key].state in GROUP_READY for m in handle.members):
                await client._validation.group(handle, self.deadline)
                return _ACTED
            return _WAIT
        group = handle.group
        if not group.agreed:
            raise await self._group_failed(group, infos)
        # Every agreeing member's delivery is checked (and disputed when it does not fit its
        # score), not only the one returned: a member that copied another's score agrees, and
        # only its delivery can show it. Then: the original's result if it agreed, else the
        # first agreeing member's.
        agreeing = [m for k, ok in zip(group.keys, group.agreeing, strict=True) if ok
                    for m in [handle.member(k)] if m is not None]
        for member in agreeing:
            info = infos.get(member.key) or await self._task(member)
            if not info.state.is_final:  # validated, still to deliver
                return _ACTED if await self._tend(member, info) else _WAIT
        for member in agreeing:
            info = infos.get(member.key) or await self._task(member)
            if info.state == TaskState.SUCCESS and not member.checked:
                try:
                    member.output = await client._transfer.download(handle, member, info, self.deadline)
                except ResultMismatch as exc:
                    member.rejected = exc
                member.checked = True
        for member in agreeing:
            if member.checked and member.rejected is None:
                handle.delivered_by = member
                return member.output
        mismatches = [m.rejected for m in agreeing if m.rejected is not None]
        if mismatches:
            raise mismatches[0]
        raise TaskAborted("no agreeing member of its validation group delivered its result",
                          task_id=handle.task_id, fee=0)

    async def _replace_duplicate(self) -> bool:
        """A group needs three distinct nodes. A member that landed on a node another member
        runs on (it was queued while the other's node was not known yet) is left to its node
        without parameters, which aborts it (a refund), and a new member takes its place,
        excluding the other two nodes. True if one was replaced."""
        client, handle = self.client, self.handle
        seen: set[str] = set()
        for index, member in enumerate(handle.members):
            node = member.node.lower()
            if not node:
                continue
            if node not in seen:
                seen.add(node)
                continue
            if handle.replacements >= MAX_REPLACEMENTS:
                raise GroupFailed(GroupOutcome.TOO_FEW, f"no third distinct node after {MAX_REPLACEMENTS} "
                                  "replacements", task_id=handle.task_id, refunded=0)
            log.warning("task %s: group member %s landed on node %s, which runs another member; replacing it",
                        handle.task_id[:10], member.task_id[:10], member.node)
            await client.hooks.tell(handle, member, "retry", what="replace member", why="node runs another member")
            handle.replacements += 1
            handle.spares.append(member)
            handle.members.remove(member)
            replacement = client._launch.group_member(handle, TaskParams.decode(handle.original.params).inputs)
            await client._launch.create(handle, [replacement])
            handle.members.insert(index, handle.members.pop())  # back at the duplicate's place
            await client._launch.start(handle, replacement)
            return True
        return False

    async def _group_failed(self, group: GroupResult, infos: dict[bytes, TaskInfo]) -> GroupFailed | TaskErrored:
        """The typed error of a group without a majority: its reason and what came back; or,
        when the members' nodes reported the same task error, that error (the parameters
        are at fault, not the nodes)."""
        client, handle = self.client, self.handle
        codes = [await client._pump.error_code(m) for m in handle.members if infos[m.key].state == TaskState.ERRORED]
        if len(codes) >= 2 and len(set(codes)) == 1:
            return TaskErrored(codes[0], task_id=handle.task_id,
                               message=explain_task_error(codes[0], handle.original.params))
        reason, refunded = "", 0
        for member in handle.members:
            info = infos.get(member.key) or await client.chain.get_task(member.key)
            if info is None:
                continue
            why = await client._pump.abort_reason(member) if info.state == TaskState.ABORTED else ""
            if why.startswith("group:"):
                reason = why
            if NODE_PAID not in why:
                refunded += info.fee
        default = {GroupOutcome.NO_MAJORITY: "group: no two results agree",
                   GroupOutcome.TOO_FEW: "group: fewer than two results"}
        return GroupFailed(group.outcome, reason or default.get(group.outcome, group.outcome.name),
                           task_id=handle.task_id, refunded=refunded)

    async def _invalidated(self, member: Member, info: TaskInfo) -> TaskInvalidated:
        event = await self.client._pump.find_event(member, "TaskInvalidated")
        reason = str(event.args.get("reason", "")) if event else ""
        return TaskInvalidated(reason or "its result was shown wrong", task_id=member.task_id, node=info.node,
                               fee=info.fee)

    async def _task(self, member: Member) -> TaskInfo:
        """The member's record from the chain, waiting out a chain that is away until the deadline."""
        chain = self.client.chain
        info = await CHAIN_UNREACHABLE.call(lambda: chain.get_task(member.key), deadline=self.deadline)
        if info is None:
            raise GridtaskError(f"task {member.task_id} is not on chain")
        return info

    async def _abort_stalled(self, member: Member, info: TaskInfo) -> None:
        """Abort a member that outlived its stage's deadline (the fee is refunded); the loop
        then sees it ABORTED."""
        client, handle = self.client, self.handle
        reason = f"creator: no progress by the {info.state.name} deadline"
        log.warning("task %s: %s (deadline %d, now %.0f); aborting it (the fee is refunded)", member.task_id[:10],
                    reason, info.deadline, time.time())
        try:
            client._pump.absorb(await client.chain.abort_task(member.key, reason))
        except ChainError as exc:
            # Reverted because it moved meanwhile (a late score, a node's own abort) or the
            # chain's clock is behind ours, or the chain is away: read its state again.
            log.info("task %s: abort did not go through (%s)", member.task_id[:10], exc)
            await client.hooks.tell(handle, member, "retry", what="abortTask", why=str(exc))
            client._pump.records.doubt(member.key)
            await client._pump.wait(handle, self.deadline)
