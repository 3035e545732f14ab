"""The relay's HTTP API: encrypted task parameters and results, guarded by the chain.

The relay decides nothing on its own. Every call is signed (``relay.auth``); before it
lets anyone read or write it knows from the chain who the task's creator and node are and
what state the task is in: from the task events it follows (one subscription for the whole
relay, ``relay.tasks``), reading the chain only for a task it has not seen, or to be sure
before it refuses. Its one act on chain is reporting that a result was delivered, after
checking the result against the hash the node committed with its score.

    GET  /v1/health                       unsigned liveness probe
    PUT  /v1/tasks/{commitment}/params    the task's creator, once the task has started
    GET  /v1/tasks/{commitment}/params    the task's node
    PUT  /v1/tasks/{commitment}/result    the task's node, once the task is validated
    GET  /v1/tasks/{commitment}/result    the task's creator, once the result is delivered
    PUT  /v1/bundles/{sha256}             any signer: a content-addressed bundle (``relay.bundles``)
    GET  /v1/bundles/{sha256}             unsigned: the bundle's bytes

Checks run in a fixed order, and everything that needs no body comes first, so a call
that will be refused is never read: signature headers (the signature covers the body's
SHA-256, sent beside it), task ID, declared size (413), task on chain (404), the caller's
role (403), the task's state (409). Only then is the body read, cut off at the limit,
matched to the signed digest, and the call recorded against replays (``relay.auth``).

Results are stored, then reported, recoverably (``relay.delivery``). The app's lifespan
picks up reports a previous run left pending; ``app.state.stop`` answers every long-poll
at once when a shutdown begins (``relay.server`` calls it on the first signal).

Every error is JSON ``{"error": "..."}``; the strings are part of the API (clients map
"task not ready" and "task results not uploaded" to ``NotReady``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gridtask.chain.models import TaskInfo, same_address
from gridtask.crypto import keccak
from gridtask.exceptions import ChainError
from gridtask.relay.auth import DEFAULT_WINDOW_S, AuthError, ReplayJournal, Verifier
from gridtask.relay.bundles import BUNDLE_PATH, BundleRoutes
from gridtask.relay.delivery import Deliveries, ReportFailed
from gridtask.relay.storage import BlobStore
from gridtask.relay.tasks import EventSource, TaskTable, TaskView, follow
from gridtask.types import TaskState

__all__ = [
    "DEFAULT_MAX_PARAMS_BYTES",
    "DEFAULT_MAX_RESULT_BYTES",
    "REPLAY_JOURNAL",
    "RelayChain",
    "create_app",
]

MiB = 1024 * 1024
DEFAULT_MAX_PARAMS_BYTES = 4 * MiB
DEFAULT_MAX_RESULT_BYTES = 16 * MiB
_MAX_GET_BODY_BYTES = 1024
MAX_WAIT_S = 10.0  # the longest a read may long-poll for its blob
REPLAY_JOURNAL = ".replay-journal"  # in the data folder; no blob key starts with "."

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


def _error(status: int, error: str, request: Request | None = None) -> JSONResponse:
    response = JSONResponse({"error": error}, status_code=status)
    if request is not None and _body_left_unread(request):
        # Refused before its body was read: close, rather than read and discard the rest.
        response.headers["Connection"] = "close"
    return response


def _body_left_unread(request: Request) -> bool:
    declared = request.headers.get("content-length", "0")
    has_body = "transfer-encoding" in request.headers or (declared.isdigit() and int(declared) > 0)
    return has_body and not getattr(request.state, "body_read", False)


def _parse_commitment(text: str) -> tuple[bytes, str]:
    if not _COMMITMENT_RE.fullmatch(text):
        raise _Refused(400, f"malformed task ID {text[:80]!r}: expected 0x and 64 hex characters")
    hex_id = text.lower()
    return bytes.fromhex(hex_id[2:]), hex_id


class _Arrivals:
    """Long-polls waiting for parameters, by blob key.

    An entry lives only while someone waits on it: the last waiter to leave (answered,
    timed out or cancelled) removes it, so requests for parameters that never arrive
    leave nothing behind. ``release_all`` answers every waiter at once (shutdown).
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}
        self._released = False

    @contextlib.asynccontextmanager
    async def watching(self, key: str) -> AsyncIterator[asyncio.Event]:
        """Register before looking at the store: an upload that lands between the look and
        the wait still sets the event, so no waiter sits out its whole timeout for it."""
        if self._released:
            done = asyncio.Event()
            done.set()
            yield done
            return
        event = self._events.setdefault(key, asyncio.Event())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            yield event
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key], self._events[key]

    def notify(self, key: str) -> None:
        event = self._events.get(key)
        if event is not None:
            event.set()

    def release_all(self) -> None:
        self._released = True
        for event in self._events.values():
            event.set()

    def __len__(self) -> int:
        return len(self._events)


@dataclass(frozen=True)
class _Call:
    """A signed call that passed every check that needs no body, and then its body."""

    commitment: bytes
    hex_id: str
    task: TaskView
    body: bytes


class _Relay:
    """The route handlers and the state they share (verifier, deliveries, long-polls)."""

    def __init__(
        self,
        chain: RelayChain,
        store: BlobStore,
        verifier: Verifier,
        max_params_bytes: int,
        max_result_bytes: int,
        events: EventSource | None,
    ) -> None:
        self.chain = chain
        self.store = store
        self.verifier = verifier
        self.max_params_bytes = max_params_bytes
        self.max_result_bytes = max_result_bytes
        self.tasks = TaskTable(chain)
        self.events = events
        self.deliveries = Deliveries(chain, store, on_reported=self.tasks.reported)
        self.arrivals = _Arrivals()
        self._params_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._housekeeping: asyncio.Task[None] | None = None
        self._following: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ life

    async def start(self) -> None:
        await self.deliveries.start()
        self._housekeeping = asyncio.create_task(self._forget_stale_signatures())
        if self.events is not None:
            # In the background: a chain that is away must not keep the relay from serving.
            self._following = asyncio.create_task(self._follow(self.events), name="relay-events")

    def stop(self) -> None:
        """Answer every long-poll now: the server is stopping (safe to call twice)."""
        self.arrivals.release_all()

    async def aclose(self) -> None:
        self.stop()
        for task in (self._housekeeping, self._following):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.deliveries.aclose()
        self.verifier.close()

    async def _follow(self, events: EventSource) -> None:
        try:
            await follow(self.tasks, events)
        except Exception:  # never silently: the relay still serves, reading per request
            logger.exception("relay: following task events failed; reading the chain per request")

    async def _forget_stale_signatures(self) -> None:
        while True:
            await asyncio.sleep(self.verifier.window_s)
            await self.verifier.compact()

    # ------------------------------------------------------------ checks, in order

    async def _authorize(
        self,
        request: Request,
        *,
        party: Callable[[TaskView], str],
        refusal: str,
        limit: int,
        what: str,
        check: Callable[[TaskView], None] = lambda task: None,
    ) -> _Call:
        """Every check that needs no body comes first, so a refused call is never read:
        signature headers, task ID, declared size, task on chain, caller's role, task
        state. Then the body is read (cut off at ``limit``) and matched to the signed
        digest, and only then is the call recorded against replays.

        The task comes from the relay's table; a call the table's view would refuse is
        judged again on a fresh read of the chain (the event that allows it may be on its
        way, or missed), so the table only ever saves reads, never changes an answer."""
        call = self.verifier.check_headers(request.method, request.url.path, request.headers)
        commitment, hex_id = _parse_commitment(request.path_params["commitment"])
        too_large = _Refused(413, f"{what} too large: at most {limit} bytes")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        task, fresh = await self.tasks.lookup(commitment)
        refused = _judge(task, call.signer, party, refusal, check)
        if refused is not None and not fresh:
            task = await self.tasks.read(commitment)
            refused = _judge(task, call.signer, party, refusal, check)
        if refused is not None:
            raise refused
        assert task is not None
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            digest.update(chunk)
            chunks.append(chunk)
        request.state.body_read = True
        call.check_body(digest.hexdigest())
        await self.verifier.accept(call)
        return _Call(commitment, hex_id, task, b"".join(chunks))

    # ------------------------------------------------------------ parameters

    async def put_params(self, request: Request) -> Response:
        call = await self._authorize(
            request, party=_creator, refusal="only the task's creator may upload parameters",
            limit=self.max_params_bytes, what="parameters", check=_params_writable,
        )
        key = f"{call.hex_id}.params"
        lock = self._params_locks.setdefault(key, asyncio.Lock())
        async with lock:
            # Past STARTED the node has scored, so it already had the parameters.
            if call.task.state != TaskState.STARTED or await self.store.exists(key):
                raise _Refused(409, "parameters already uploaded")
            await self.store.put(key, call.body)
        self.arrivals.notify(key)
        logger.info("task %s: parameters uploaded (%d bytes)", call.hex_id, len(call.body))
        return JSONResponse({"uploaded": True})

    async def get_params(self, request: Request) -> Response:
        wait = _wait_seconds(request)
        call = await self._authorize(
            request, party=_node, refusal="only the task's node may read its parameters",
            limit=_MAX_GET_BODY_BYTES, what="request body",
        )
        key = f"{call.hex_id}.params"
        async with self.arrivals.watching(key) as arrived:
            data = await self.store.get(key)
            if data is None and wait > 0:
                # Long poll: the node asks as soon as it is selected, the creator uploads a
                # moment later; holding the request saves the node a round of retries.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), wait)
                data = await self.store.get(key)
        if data is None:
            raise _Refused(400, NOT_READY)
        return Response(data, media_type="application/octet-stream")

    # ------------------------------------------------------------ results

    async def put_result(self, request: Request) -> Response:
        call = await self._authorize(
            request, party=_node, refusal="only the task's node may upload its result",
            limit=self.max_result_bytes, what="result", check=_result_writable,
        )
        if keccak(call.body) != call.task.result_hash:
            raise _Refused(400, "result does not match the committed hash")
        try:
            await self.deliveries.deliver(call.commitment, call.hex_id, call.body)
        except ReportFailed as exc:
            # Stored, and reported in the background; a retry of the same PUT reports again.
            raise _Refused(502, f"could not report delivery on chain: {exc.reason}") from None
        return JSONResponse({"delivered": True})

    async def get_result(self, request: Request) -> Response:
        call = await self._authorize(
            request, party=_creator, refusal="only the task's creator may read its result",
            limit=_MAX_GET_BODY_BYTES, what="request body", check=_result_readable,
        )
        data = await self.store.get(f"{call.hex_id}.result")
        if data is None:
            raise _Refused(400, RESULTS_NOT_UPLOADED)
        if call.task.state != TaskState.SUCCESS:
            # Stored but not yet reported: report it now, so the creator never holds a
            # result its node has not been paid for.
            try:
                await self.deliveries.report(call.commitment, call.hex_id)
            except ReportFailed:
                raise _Refused(400, RESULTS_NOT_UPLOADED) from None
        return Response(data, media_type="application/octet-stream")


def _judge(
    task: TaskView | None,
    signer: str,
    party: Callable[[TaskView], str],
    refusal: str,
    check: Callable[[TaskView], None],
) -> _Refused | None:
    """Why the call must be refused (task on chain, caller's role, task state), or None."""
    if task is None:
        return _Refused(404, "unknown task")
    if not same_address(signer, party(task)):
        return _Refused(403, refusal)
    try:
        check(task)
    except _Refused as refused:
        return refused
    return None


def _creator(task: TaskView) -> str:
    return task.creator


def _node(task: TaskView) -> str:
    return task.node


def _params_writable(task: TaskView) -> None:
    if task.state.is_final:
        raise _Refused(409, "task ended")
    if task.state < TaskState.STARTED:
        raise _Refused(409, "task not started")


def _result_writable(task: TaskView) -> None:
    if task.state == TaskState.SUCCESS:
        raise _Refused(409, "result already delivered")
    if task.state != TaskState.VALIDATED:
        raise _Refused(409, "task not validated")


def _result_readable(task: TaskView) -> None:
    if task.state in (TaskState.ABORTED, TaskState.ERRORED):
        raise _Refused(409, "task ended without a result")


def _wait_seconds(request: Request) -> float:
    """``?wait=S``: how long a read may wait for its blob (0 to MAX_WAIT_S; not signed, harmless)."""
    try:
        return min(max(float(request.query_params.get("wait", 0)), 0.0), MAX_WAIT_S)
    except ValueError:
        raise _Refused(400, "wait must be a number of seconds") from None


async def _health(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _on_refused(request: Request, exc: _Refused) -> Response:
    return _error(exc.status, exc.error, request)


async def _on_auth_error(request: Request, exc: AuthError) -> Response:
    return _error(401, exc.detail, request)


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
    replay_journal: Path | None = None,
    events: EventSource | None = None,
) -> Starlette:
    """The relay as an ASGI app; serve it with ``relay.server`` or any ASGI server.

    ``replay_journal`` is the file that keeps accepted signatures across restarts (the
    CLI puts it in the data folder); without it replay protection lasts one process.
    ``events`` is the stream of the contract's task events the relay learns task state
    from (``relay.tasks.relay_follower``); without it every call reads the chain.
    The app's lifespan picks up deliveries a previous run left unreported; ``app.state.stop``
    answers every long-poll at once (call it when a shutdown begins).
    """
    journal = ReplayJournal(replay_journal) if replay_journal is not None else None
    relay = _Relay(
        chain, store, Verifier(auth_window_s, journal), max_params_bytes, max_result_bytes, events
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await relay.start()
        try:
            yield
        finally:
            await relay.aclose()

    task_path = "/v1/tasks/{commitment}"
    routes = [
        Route("/v1/health", _health, methods=["GET"]),
        Route(f"{task_path}/params", relay.put_params, methods=["PUT"]),
        Route(f"{task_path}/params", relay.get_params, methods=["GET"]),
        Route(f"{task_path}/result", relay.put_result, methods=["PUT"]),
        Route(f"{task_path}/result", relay.get_result, methods=["GET"]),
    ]
    bundles = BundleRoutes(store, relay.verifier)
    routes += [Route(BUNDLE_PATH, bundles.put, methods=["PUT"]), Route(BUNDLE_PATH, bundles.get, methods=["GET"])]
    # Each handler takes its own exception type; Starlette dispatches by class.
    handlers: dict[Any, Callable[..., Awaitable[Response]]] = {
        _Refused: _on_refused,
        AuthError: _on_auth_error,
        ChainError: _on_chain_error,
        HTTPException: _on_http_exception,
        500: _on_server_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.stop = relay.stop
    app.state.relay = relay
    app.state.tasks = relay.tasks
    return app
