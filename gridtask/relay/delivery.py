"""Results: stored, then reported on chain, and the report survives a crash in between.

The node is paid only when the relay calls ``reportResultUploaded``. If the relay stored
a result and died before that call went through, the node would lose its fee although
the creator can read the result. So every delivery is made recoverable from disk first:

1. a pending-report marker (``<task>.report-pending``) is written (atomically, fsynced),
2. the result blob is written (atomically, fsynced),
3. the relay reports the delivery on chain,
4. the marker is removed.

So a stored result without its marker was reported (a task that ended otherwise before
its report went through loses the result too): a read that raced the node's upload needs
no second report.

On start-up every marker is picked up: without its blob (a crash between 1 and 2) it is
dropped, since nothing was delivered; with it, the report is retried in the background
(``DELIVERY_REPORT``) until the chain confirms it or the task has ended some other way.
A failed report of a live upload is handed to the same background retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from gridtask.exceptions import ChainError, TransactionReverted
from gridtask.relay.storage import BlobStore
from gridtask.retry import Interrupted, Policy
from gridtask.types import TaskState

if TYPE_CHECKING:
    from gridtask.relay.app import RelayChain

__all__ = ["DELIVERY_REPORT", "PENDING_SUFFIX", "Deliveries", "ReportFailed"]

PENDING_SUFFIX = ".report-pending"
RESULT_SUFFIX = ".result"
logger = logging.getLogger("gridtask.relay")


def _chain_failure(exc: BaseException) -> bool:
    # Any chain failure (unreachable, reverted, strange answer) may clear up; a task that
    # ended is recognised by reading its state before each try, not by the error.
    return isinstance(exc, ChainError)


#: Reporting a stored result on chain: patient, until the chain confirms or the task ends.
DELIVERY_REPORT = Policy("delivery report", _chain_failure, first=0.5, cap=15.0, jitter=0.5)


class ReportFailed(Exception):
    """The report did not go through now; ``reason`` says why (a background retry goes on)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Deliveries:
    """Stores results and reports them, one writer per task at a time.

    Background retries run once ``start()`` was called (the app's lifespan does it);
    before that a failed report is only answered with ``ReportFailed``. ``on_reported(key)``
    is called when the chain has the report (the relay's task table learns SUCCESS then,
    before the event arrives).
    """

    def __init__(
        self, chain: RelayChain, store: BlobStore, on_reported: Callable[[bytes], None] = lambda key: None
    ) -> None:
        self.chain = chain
        self.store = store
        self.on_reported = on_reported
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._retries: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._started = False

    # ------------------------------------------------------------ the request path

    def lock(self, hex_id: str) -> asyncio.Lock:
        lock = self._locks.get(hex_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[hex_id] = lock
        return lock

    async def deliver(self, commitment: bytes, hex_id: str, body: bytes) -> None:
        """Store ``body`` as the task's result, then report it; ``ReportFailed`` if the
        report did not go through (it is then retried in the background)."""
        async with self.lock(hex_id):
            if not await self.store.exists(hex_id + PENDING_SUFFIX):
                await self.store.put(hex_id + PENDING_SUFFIX, b"")
            if not await self.store.exists(hex_id + RESULT_SUFFIX):
                await self.store.put(hex_id + RESULT_SUFFIX, body)
            await self._report_locked(commitment, hex_id)

    async def report(self, commitment: bytes, hex_id: str) -> None:
        """Report an already stored result now (the creator asked for it before the report).
        Nothing to do once its marker is gone: the node's upload (which the creator's read may
        have raced) or the background retry reported it, or the task ended some other way."""
        async with self.lock(hex_id):
            if not await self.store.exists(hex_id + PENDING_SUFFIX):
                return
            await self._report_locked(commitment, hex_id)

    async def _report_locked(self, commitment: bytes, hex_id: str) -> None:
        try:
            await self.chain.report_result_uploaded(commitment)
        except ChainError as exc:
            reason = exc.reason if isinstance(exc, TransactionReverted) else str(exc)
            if await self._already_reported(commitment):
                self.on_reported(commitment)
                await self.store.delete(hex_id + PENDING_SUFFIX)
                return
            logger.warning("task %s: reporting delivery failed (%s); retrying in the background",
                           hex_id, reason)
            self._retry_later(commitment, hex_id)
            raise ReportFailed(reason) from None
        self.on_reported(commitment)
        await self.store.delete(hex_id + PENDING_SUFFIX)
        logger.info("task %s: result delivered", hex_id)

    async def _already_reported(self, commitment: bytes) -> bool:
        try:
            task = await self.chain.get_task(commitment)
        except ChainError:
            return False
        return task is not None and task.state == TaskState.SUCCESS

    # ------------------------------------------------------------ the background path

    async def start(self) -> None:
        """Pick up the reports a previous run left pending, and retry them in the background."""
        self._started = True
        for marker in await self.store.keys(PENDING_SUFFIX):
            hex_id = marker[: -len(PENDING_SUFFIX)]
            if not await self.store.exists(hex_id + RESULT_SUFFIX):
                await self.store.delete(marker)  # stopped before the blob was written
                continue
            logger.info("task %s: stored result not yet reported; reporting it", hex_id)
            self._retry_later(bytes.fromhex(hex_id[2:]), hex_id)

    async def aclose(self) -> None:
        """Stop retrying; pending markers stay on disk for the next start."""
        self._stop.set()
        retries = list(self._retries.values())
        for task in retries:
            task.cancel()
        await asyncio.gather(*retries, return_exceptions=True)

    @property
    def pending(self) -> list[str]:
        """Tasks whose report is being retried in the background."""
        return sorted(self._retries)

    def _retry_later(self, commitment: bytes, hex_id: str) -> None:
        if not self._started or self._stop.is_set() or hex_id in self._retries:
            return
        task = asyncio.create_task(self._retry(commitment, hex_id), name=f"report {hex_id}")
        self._retries[hex_id] = task
        task.add_done_callback(lambda _: self._retries.pop(hex_id, None))

    async def _retry(self, commitment: bytes, hex_id: str) -> None:
        with contextlib.suppress(Interrupted):
            await DELIVERY_REPORT.call(lambda: self._settle(commitment, hex_id), stop=self._stop)

    async def _settle(self, commitment: bytes, hex_id: str) -> None:
        """One try: done when the task has ended, else report it (raises to try again)."""
        async with self.lock(hex_id):
            task = await self.chain.get_task(commitment)
            if task is None:
                raise ChainError(f"task {hex_id} not known to the chain (yet)")
            if task.state.is_final:
                if task.state != TaskState.SUCCESS:
                    # Refunded, its node unpaid: the result is never to be read. Deleted first,
                    # so a stored result without a marker is always one the chain was told of.
                    logger.warning("task %s: ended %s before its delivery was reported",
                                   hex_id, task.state.name)
                    await self.store.delete(hex_id + RESULT_SUFFIX)
                await self.store.delete(hex_id + PENDING_SUFFIX)
                return
            await self.chain.report_result_uploaded(commitment)
            self.on_reported(commitment)
            await self.store.delete(hex_id + PENDING_SUFFIX)
            logger.info("task %s: result delivered (reported after a retry)", hex_id)
