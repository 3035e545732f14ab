"""The relay's HTTP API: encrypted task parameters and results, guarded by the chain.

The relay decides nothing on its own. Every call is signed (``relay.auth``); before it
lets anyone read or write it asks the chain who the task's creator and node are and what
state the task is in. Its one act on chain is reporting that a result was delivered,
after checking the result against the hash the node committed with its score.

    GET  /v1/health                       unsigned liveness probe
    PUT  /v1/tasks/{commitment}/params    the task's creator, once the task has started
    GET  /v1/tasks/{commitment}/params    the task's node
    PUT  /v1/tasks/{commitment}/result    the task's node, once the task is validated
    GET  /v1/tasks/{commitment}/result    the task's creator, once the result is delivered

Every error is JSON ``{"error": "..."}``; the strings are part of the API (clients map
"task not ready" and "task results not uploaded" to ``NotReady``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gridtask.chain.models import TaskInfo, same_address
from gridtask.crypto import keccak
from gridtask.exceptions import ChainError, TransactionReverted
from gridtask.relay.auth import DEFAULT_WINDOW_S, AuthError, Verifier
from gridtask.relay.storage import BlobStore
from gridtask.types import TaskState

__all__ = ["DEFAULT_MAX_PARAMS_BYTES", "DEFAULT_MAX_RESULT_BYTES", "RelayChain", "create_app"]

MiB = 1024 * 1024
DEFAULT_MAX_PARAMS_BYTES = 4 * MiB
DEFAULT_MAX_RESULT_BYTES = 16 * MiB
_MAX_GET_BODY_BYTES = 1024
MAX_WAIT_S = 10.0  # the longest a read may long-poll for its blob

NOT_READY = "task not ready"
RESULTS_NOT_UPLOADED = "task results not uploaded"

_COMMITMENT_RE = re.compile(r"0x[0-9a-fA-F]{64}")
logger = logging.getLogger("gridtask.relay")


class RelayChain(Protocol):
    """What the relay needs from the chain; the web3 client implements it."""

    async def get_task(self, commitment: bytes) -> TaskInfo | None:
        """The task, ``None`` when unknown; ``ChainError`` when the chain is unreachable."""
        ...

    async def report_result_uploaded(self, commitment: bytes) -> None:
        """Mark the result delivered, from the relay's account; may raise ``ChainError``."""
        ...


class _Refused(Exception):
    """Ends a request with ``status`` and ``{"error": error}``."""

    def __init__(self, status: int, error: str) -> None:
        self.status = status
        self.error = error
        super().__init__(error)


def _error(status: int, error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


def _parse_commitment(text: str) -> tuple[bytes, str]:
    if not _COMMITMENT_RE.fullmatch(text):
        raise _Refused(400, f"malformed task ID {text[:80]!r}: expected 0x and 64 hex characters")
    hex_id = text.lower()
    return bytes.fromhex(hex_id[2:]), hex_id



class _Relay:
    """The route handlers and the state they share (verifier, per-task write locks)."""

    def __init__(
        self,
        chain: RelayChain,
        store: BlobStore,
        verifier: Verifier,
        max_params_bytes: int,
        max_result_bytes: int,
    ) -> None:
        self.chain = chain
        self.store = store
        self.verifier = verifier
        self.max_params_bytes = max_params_bytes
        self.max_result_bytes = max_result_bytes
        # One writer per blob at a time, so "already uploaded" and "report once" hold.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Readers long-polling for parameters not uploaded yet, woken by the upload.
        self._arrivals: dict[str, asyncio.Event] = {}

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def _body(self, request: Request, limit: int, what: str) -> bytes:
        too_large = _Refused(413, f"{what} too large: at most {limit} bytes")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def _authorize(
        self, request: Request, limit: int, what: str
    ) -> tuple[bytes, str, bytes, str, TaskInfo]:
        """Parse the ID, read the body, check the signature, load the task (in that order)."""
        commitment, hex_id = _parse_commitment(request.path_params["commitment"])
        body = await self._body(request, limit, what)
        signer = self.verifier.verify(request.method, request.url.path, body, request.headers)
        task = await self.chain.get_task(commitment)
        if task is None:
            raise _Refused(404, "unknown task")
        return commitment, hex_id, body, signer, task

    async def put_params(self, request: Request) -> Response:
        _, hex_id, body, signer, task = await self._authorize(
            request, self.max_params_bytes, "parameters"
        )
        if not same_address(signer, task.creator):
            raise _Refused(403, "only the task's creator may upload parameters")
        if task.state.is_final:
            raise _Refused(409, "task ended")
        if task.state < TaskState.STARTED:
            raise _Refused(409, "task not started")
        key = f"{hex_id}.params"
        async with self._lock(key):
            # Past STARTED the node has scored, so it already had the parameters.
            if task.state != TaskState.STARTED or await self.store.exists(key):
                raise _Refused(409, "parameters already uploaded")
            await self.store.put(key, body)
        arrival = self._arrivals.pop(key, None)
        if arrival is not None:
            arrival.set()
        logger.info("task %s: parameters uploaded (%d bytes)", hex_id, len(body))
        return JSONResponse({"uploaded": True})

    async def get_params(self, request: Request) -> Response:
        _, hex_id, _, signer, task = await self._authorize(
            request, _MAX_GET_BODY_BYTES, "request body"
        )
        if not same_address(signer, task.node):
            raise _Refused(403, "only the task's node may read its parameters")
        key = f"{hex_id}.params"
        data = await self.store.get(key)
        wait = _wait_seconds(request)
        if data is None and wait > 0:
            # Long poll: the node asks as soon as it is selected, the creator uploads a moment
            # later; holding the request saves the node a round of retries.
            arrival = self._arrivals.setdefault(key, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrival.wait(), wait)
            data = await self.store.get(key)
        if data is None:
            raise _Refused(400, NOT_READY)
        return Response(data, media_type="application/octet-stream")

    async def put_result(self, request: Request) -> Response:
        commitment, hex_id, body, signer, task = await self._authorize(
            request, self.max_result_bytes, "result"
        )
        if not same_address(signer, task.node):
            raise _Refused(403, "only the task's node may upload its result")
        if task.state == TaskState.SUCCESS:
            raise _Refused(409, "result already delivered")
        if task.state != TaskState.VALIDATED:
            raise _Refused(409, "task not validated")
        if keccak(body) != task.result_hash:
            raise _Refused(400, "result does not match the committed hash")
        key = f"{hex_id}.result"
        async with self._lock(key):
            if not await self.store.exists(key):
                await self.store.put(key, body)
            # Kept even if reporting fails: a retry of the same PUT reports again.
            await self._report(commitment, hex_id)
        return JSONResponse({"delivered": True})

    async def _report(self, commitment: bytes, hex_id: str) -> None:
        try:
            await self.chain.report_result_uploaded(commitment)
        except TransactionReverted as exc:
            logger.warning("task %s: reporting delivery reverted: %s", hex_id, exc.reason)
            raise _Refused(502, f"could not report delivery on chain: {exc.reason}") from None
        except ChainError as exc:
            logger.warning("task %s: reporting delivery failed: %s", hex_id, exc)
            raise _Refused(502, f"could not report delivery on chain: {exc}") from None
        logger.info("task %s: result delivered", hex_id)

    async def get_result(self, request: Request) -> Response:
        commitment, hex_id, _, signer, task = await self._authorize(
            request, _MAX_GET_BODY_BYTES, "request body"
        )
        if not same_address(signer, task.creator):
            raise _Refused(403, "only the task's creator may read its result")
        if task.state in (TaskState.ABORTED, TaskState.ERRORED):
            raise _Refused(409, "task ended without a result")
        key = f"{hex_id}.result"
        data = await self.store.get(key)
        if data is None:
            raise _Refused(400, RESULTS_NOT_UPLOADED)
        if task.state != TaskState.SUCCESS:
            # Stored but not yet reported (the node's report failed): report it now, so the
            # creator never holds a result its node has not been paid for.
            try:
                async with self._lock(key):
                    await self._report(commitment, hex_id)
            except _Refused:
                raise _Refused(400, RESULTS_NOT_UPLOADED) from None
        return Response(data, media_type="application/octet-stream")


def _wait_seconds(request: Request) -> float:
    """``?wait=S``: how long a read may wait for its blob (0 to MAX_WAIT_S; not signed, harmless)."""
    try:
        return min(max(float(request.query_params.get("wait", 0)), 0.0), MAX_WAIT_S)
    except ValueError:
        raise _Refused(400, "wait must be a number of seconds") from None


async def _health(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _on_refused(request: Request, exc: _Refused) -> Response:
    return _error(exc.status, exc.error)


async def _on_auth_error(request: Request, exc: AuthError) -> Response:
    return _error(401, exc.detail)


async def _on_chain_error(request: Request, exc: Exception) -> Response:
    logger.warning("chain unreachable: %s", exc)
    return _error(503, f"chain unreachable: {exc}")


async def _on_http_exception(request: Request, exc: HTTPException) -> Response:
    return _error(exc.status_code, exc.detail)


async def _on_server_error(request: Request, exc: Exception) -> Response:
    return _error(500, "internal relay error")


def create_app(
    *,
    chain: RelayChain,
    store: BlobStore,
    max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES,
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    auth_window_s: int = DEFAULT_WINDOW_S,
) -> Starlette:
    """The relay as an ASGI app; serve it with ``relay.server`` or any ASGI server."""
    relay = _Relay(chain, store, Verifier(auth_window_s), max_params_bytes, max_result_bytes)
    task_path = "/v1/tasks/{commitment}"
    routes = [
        Route("/v1/health", _health, methods=["GET"]),
        Route(f"{task_path}/params", relay.put_params, methods=["PUT"]),
        Route(f"{task_path}/params", relay.get_params, methods=["GET"]),
        Route(f"{task_path}/result", relay.put_result, methods=["PUT"]),
        Route(f"{task_path}/result", relay.get_result, methods=["GET"]),
    ]
    # Each handler takes its own exception type; Starlette dispatches by class.
    handlers: dict[Any, Callable[..., Awaitable[Response]]] = {
        _Refused: _on_refused,
        AuthError: _on_auth_error,
        ChainError: _on_chain_error,
        HTTPException: _on_http_exception,
        500: _on_server_error,
    }
    return Starlette(routes=routes, exception_handlers=handlers)
