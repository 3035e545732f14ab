"""The relay's client, used by applications (parameters up, results down) and nodes.

One kept-alive ``httpx.AsyncClient`` per relay; every call is signed with the caller's
identity. The relay's answers become the exception tree: "nothing yet" is ``NotReady``
(retry), a refusal is ``RelayError`` with the relay's reason, a relay that cannot be
reached is ``RelayUnavailable``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from types import TracebackType

import httpx

from gridtask.bundles import bundle_hash, check_hash, check_size, verify
from gridtask.exceptions import NotReady, RelayError, RelayUnavailable, ValidationError
from gridtask.keys import Identity
from gridtask.relay.auth import sign_request

__all__ = ["RelayClient"]

COMMITMENT_LENGTH = 32
DEFAULT_TIMEOUT_S = 10.0
# Answers that mean "not yet": the caller retries. "task not started" is the relay's answer
# to parameters uploaded before its chain node has seen TaskStarted; that lag heals too.
_NOT_READY_ERRORS = frozenset(
    {(400, "task not ready"), (400, "task results not uploaded"), (409, "task not started")}
)


def _task_path(commitment: bytes, what: str) -> str:
    if len(commitment) != COMMITMENT_LENGTH:
        raise ValidationError(
            f"a task commitment is {COMMITMENT_LENGTH} bytes, got {len(commitment)}"
        )
    return f"/v1/tasks/0x{commitment.hex()}/{what}"


def _error_detail(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return payload["error"]
    return str(payload)


class RelayClient:
    """Signed calls to one relay; use as ``async with RelayClient(url, identity) as relay``."""

    def __init__(
        self,
        base_url: str,
        identity: Identity,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` is for tests (``httpx.ASGITransport(app)``); leave it out otherwise."""
        self.base_url = base_url.rstrip("/")
        self.identity = identity
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)
        # Identical calls in the same second would sign identical messages, which the relay
        # refuses as replays; remember the last second used per call and move past it.
        self._last_ts: dict[tuple[str, str, bytes], int] = {}

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def health(self) -> bool:
        """Whether the relay answers; never raises."""
        try:
            response = await self._http.get("/v1/health")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def upload_params(self, commitment: bytes, data: bytes) -> None:
        """As the task's creator, once the task has started; ``NotReady`` before that."""
        await self._call("PUT", _task_path(commitment, "params"), data)

    async def download_params(self, commitment: bytes, *, wait: float = 0) -> bytes:
        """As the task's node; ``NotReady`` until the creator has uploaded them. With ``wait``
        the relay holds the request up to that many seconds for the upload to arrive."""
        params = {"wait": f"{wait:g}"} if wait > 0 else None
        return await self._call("GET", _task_path(commitment, "params"), params=params)

    async def upload_result(self, commitment: bytes, data: bytes) -> None:
        """As the task's node, once validated; ``data`` must hash to the committed result hash."""
        await self._call("PUT", _task_path(commitment, "result"), data)

    async def download_result(self, commitment: bytes) -> bytes:
        """As the task's creator; ``NotReady`` until the node has delivered it."""
        return await self._call("GET", _task_path(commitment, "result"))

    async def put_bundle(self, data: bytes) -> str:
        """Store a bundle (``gridtask.bundles.pack_dir``'s bytes) under its hash, which is
        returned; storing one the relay already holds is fine."""
        bundle = bundle_hash(check_size(data, "bundle"))
        await self._call("PUT", f"/v1/bundles/{bundle}", data)
        return bundle

    async def get_bundle(self, bundle: str) -> bytes:
        """A bundle's bytes, checked against its hash; ``RelayError`` with status 404 when the
        relay does not have it, ``BundleMismatch`` when what came back is not it."""
        check_hash(bundle)
        return verify(await self._call("GET", f"/v1/bundles/{bundle}"), bundle)

    async def _timestamp(self, method: str, path: str, body: bytes) -> int:
        """A millisecond timestamp no earlier identical call used (the relay refuses replays)."""
        key = (method, path, hashlib.sha256(body).digest())
        now_ms = int(time.time() * 1000)
        last = self._last_ts.get(key)
        ts = now_ms if last is None else max(now_ms, last + 1)
        # Reserve it before awaiting, so concurrent identical calls get distinct timestamps.
        self._last_ts = {k: v for k, v in self._last_ts.items() if v >= now_ms - 1000}
        self._last_ts[key] = ts
        if ts > now_ms:
            await asyncio.sleep((ts - now_ms) / 1000)
        return ts

    async def _call(
        self, method: str, path: str, body: bytes = b"", *, params: dict[str, str] | None = None
    ) -> bytes:
        request = self._http.build_request(method, path, content=body, params=params)
        # Sign the path exactly as it goes on the wire (base_url may carry a prefix).
        timestamp = await self._timestamp(method, request.url.path, body)
        request.headers.update(
            sign_request(self.identity, method, request.url.path, body, timestamp)
        )
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise RelayUnavailable(
                f"cannot reach the relay at {self.base_url} ({type(exc).__name__}: {exc}); "
                "check the relay URL and that the relay is running"
            ) from exc
        if response.is_success:
            return response.content
        detail = _error_detail(response)
        if (response.status_code, detail) in _NOT_READY_ERRORS:
            raise NotReady(detail, status=response.status_code)
        raise RelayError(detail, status=response.status_code)
