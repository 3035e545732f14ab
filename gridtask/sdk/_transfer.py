"""What a task's creator moves through the relay, with its retries: the parameters, sealed
to the node that got the task, up; the result down, decrypted with the member's result key
and checked against the score its node committed. A result that does not fit is proved
wrong on chain (``disputeResult``) when it is small enough for a dispute.

A relay that has nothing yet or is away is asked again until the caller's deadline
(``retry.NOT_READY``); then ``TaskTimeout``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gridtask.chain.client import MAX_DISPUTE_CIPHERTEXT
from gridtask.chain.models import TaskInfo
from gridtask.crypto import decrypt_result, result_key, seal
from gridtask.exceptions import CryptoError, GridtaskError, RelayError, ResultMismatch, TransactionReverted
from gridtask.retry import CHAIN_UNREACHABLE, NOT_READY
from gridtask.scoring import result_matches_score, score, scores_agree
from gridtask.sdk._handle import Member, TaskHandle, timed_out

if TYPE_CHECKING:
    from gridtask.sdk._client import Client

log = logging.getLogger("gridtask.sdk")


class Transfer:
    """The relay side of one client's tasks; node encryption keys are looked up once per node."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._node_keys: dict[str, bytes] = {}  # derived from the node's account: one look-up each

    async def node_key(self, member: Member, node: str) -> bytes:
        """The node's encryption key: from its ``NodeJoined`` (the registry), else its record."""
        key = self._node_keys.get(node)
        if key is None:
            registry = self.client._registry
            assert registry is not None, "the client is not open"
            found = await registry.public_key(node)
            if found is None:
                record = await self.client.chain.get_node(node)
                if record is None:
                    raise GridtaskError(f"task {member.task_id}: its node {node} is not registered")
                found = record.public_key
            key = self._node_keys[node] = found
        return key

    async def upload_params(self, handle: TaskHandle, member: Member, info: TaskInfo, deadline: float) -> None:
        """The member's parameters, sealed to its node, onto the relay (once: a repeat that
        finds them there already is done)."""
        key = await self.node_key(member, info.node)
        member.node = info.node
        started_at = time.perf_counter()
        sealed = seal(member.params, key)
        relay = self.client.relay

        async def upload() -> None:
            try:
                await relay.upload_params(member.key, sealed)
            except RelayError as exc:
                if exc.detail != "parameters already uploaded":  # an earlier try got through
                    raise

        await self.retry(upload, handle, deadline)
        await self.client.hooks.tell(handle, member, "params_uploaded", started_at=started_at, node=info.node)

    async def download(self, handle: TaskHandle, member: Member, info: TaskInfo, deadline: float) -> Any:
        """Fetch the ciphertext, decrypt it with the member's result key and check it against
        the score its node committed; a mismatch is disputed on chain (``_mismatch``)."""
        started_at = time.perf_counter()
        relay = self.client.relay
        cipher = await self.retry(lambda: relay.download_result(member.key), handle, deadline)
        try:
            plain = decrypt_result(result_key(handle.secret, member.nonce), cipher)
        except CryptoError:
            raise await self._mismatch(handle, member, info, cipher, "cannot be decrypted with its result key") \
                from None
        bits = (await self.client._network_params()).similarity_bits_for(int(handle.task_type))
        if not result_matches_score(plain, info.score, handle.task_type):  # what a dispute proves
            raise await self._mismatch(handle, member, info, cipher,
                                       f"does not match the score its node {info.node} committed")
        try:
            # A similarity type's high half is recomputed here, under the network's rule of agreement
            # (another machine's rounding may move a bit or two); the contract cannot recompute it.
            fits = scores_agree(score(plain, handle.task_type), info.score, handle.task_type, bits)
            output = json.loads(plain)
        except ValueError:  # ValidationError too: not the JSON its executor returns
            fits, output = False, None
        if not fits:
            raise ResultMismatch(
                f"task {member.task_id}: node {info.node} delivered the bytes it committed to, but they are not "
                "a valid result of its task type or do not fit the similarity hash it committed; a dispute on "
                "chain cannot prove that (it checks the result's digest only), so the node keeps the fee",
                task_id=member.task_id, node=info.node)
        await self.client.hooks.tell(handle, member, "downloaded", started_at=started_at)
        return output

    async def _mismatch(self, handle: TaskHandle, member: Member, info: TaskInfo, cipher: bytes,
                        what: str) -> ResultMismatch:
        """Prove a mismatch on chain when the ciphertext fits a dispute: the task becomes
        INVALIDATED, its node is slashed and the fee comes back."""
        head = f"task {member.task_id}: the delivered result {what}"
        if len(cipher) > MAX_DISPUTE_CIPHERTEXT:
            return ResultMismatch(
                f"{head}; its ciphertext is {len(cipher)} bytes, over the {MAX_DISPUTE_CIPHERTEXT} a "
                "dispute on chain takes, so it cannot be proved wrong there and the node keeps the fee",
                task_id=member.task_id, node=info.node)
        log.warning("%s; disputing it on chain", head)
        chain = self.client.chain
        try:
            self.client._pump.absorb(await CHAIN_UNREACHABLE.call(
                lambda: chain.dispute_result(member.key, handle.secret, member.nonce, cipher), deadline=None))
        except TransactionReverted as exc:
            return ResultMismatch(f"{head}; the dispute on chain was refused: {exc.reason}",
                                  task_id=member.task_id, node=info.node)
        return ResultMismatch(
            f"{head}; disputed on chain: node {info.node} was slashed and the fee ({info.fee} wei) went back "
            "to your balance (`gridtask withdraw` takes it out)",
            task_id=member.task_id, node=info.node, disputed=True)

    @staticmethod
    async def retry(call: Callable[[], Any], handle: TaskHandle, deadline: float) -> Any:
        """A relay call, again while the relay has nothing yet or is away, until the caller's deadline."""

        async def give_up(last: BaseException) -> Any:
            raise timed_out(handle) from None

        return await NOT_READY.call(call, deadline=deadline, on_give_up=give_up)
