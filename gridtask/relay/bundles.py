"""The relay's bundle routes: content-addressed bundles (``gridtask.bundles``), immutable.

    PUT  /v1/bundles/{sha256}   any signer; the body must hash to the name (at most the cap)
    GET  /v1/bundles/{sha256}   public, unsigned: the bytes, which the reader checks again

Who may upload: any signed call. A bundle is named by its content, so an upload can neither
change nor hide anyone else's bundle; the signature makes every upload attributable (the log
names the signer) and replay-checked like every other write, and the size cap bounds what
one call can store. Tying uploads to accounts with a task or node on chain was left out: a
Golem user publishes the image before the first task exists. An upload of a bundle already
stored succeeds without writing it again (``{"stored": true, "new": false}``).

Checks run before the body is read where they can (signature headers, name, declared size),
then the body is read up to the cap, matched to the signed digest and to the name.
"""

from __future__ import annotations

import hashlib
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gridtask.bundles import MAX_BUNDLE_BYTES, bundle_hash, check_hash
from gridtask.exceptions import BundleError
from gridtask.relay.auth import Verifier
from gridtask.relay.storage import BlobStore

__all__ = ["BUNDLE_PATH", "BundleRoutes", "bundle_key"]

BUNDLE_PATH = "/v1/bundles/{bundle}"
UNKNOWN_BUNDLE = "unknown bundle"
logger = logging.getLogger("gridtask.relay")


def bundle_key(bundle: str) -> str:
    """The blob key a bundle is stored under (beside tasks' ``0x….params`` / ``.result``)."""
    return f"bundle-{bundle}"


def _refuse(request: Request, status: int, error: str) -> JSONResponse:
    response = JSONResponse({"error": error}, status_code=status)
    if not getattr(request.state, "body_read", False) and request.method == "PUT":
        response.headers["Connection"] = "close"  # refused unread: do not read the rest
    return response


def _name(request: Request) -> str | None:
    try:
        return check_hash(request.path_params["bundle"])
    except BundleError:
        return None


class BundleRoutes:
    """The two handlers over the relay's blob store and its request verifier."""

    def __init__(self, store: BlobStore, verifier: Verifier, *, max_bytes: int = MAX_BUNDLE_BYTES) -> None:
        self.store = store
        self.verifier = verifier
        self.max_bytes = max_bytes

    async def put(self, request: Request) -> Response:
        call = self.verifier.check_headers(request.method, request.url.path, request.headers)
        bundle = _name(request)
        if bundle is None:
            return _refuse(request, 400, "malformed bundle name: expected 64 lower-case hex digits (its SHA-256)")
        declared = request.headers.get("content-length", "")
        too_large = f"bundle too large: at most {self.max_bytes} bytes"
        if declared.isdigit() and int(declared) > self.max_bytes:
            return _refuse(request, 413, too_large)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_bytes:
                return _refuse(request, 413, too_large)
            chunks.append(chunk)
        request.state.body_read = True
        body = b"".join(chunks)
        call.check_body(hashlib.sha256(body).hexdigest())
        if bundle_hash(body) != bundle:
            return _refuse(request, 400, "bundle does not match its name: the body's SHA-256 differs")
        await self.verifier.accept(call)
        key = bundle_key(bundle)
        new = not await self.store.exists(key)
        if new:
            await self.store.put(key, body)
            logger.info("bundle %s: stored (%d bytes, from %s)", bundle, len(body), call.signer)
        return JSONResponse({"stored": True, "new": new})

    async def get(self, request: Request) -> Response:
        bundle = _name(request)
        if bundle is None:
            return _refuse(request, 400, "malformed bundle name: expected 64 lower-case hex digits (its SHA-256)")
        data = await self.store.get(bundle_key(bundle))
        if data is None:
            return _refuse(request, 404, UNKNOWN_BUNDLE)
        return Response(data, media_type="application/gzip", headers={"Cache-Control": "public, immutable"})
