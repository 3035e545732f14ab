"""Signed relay calls: who is calling, proven by their Ethereum key.

The caller signs (EIP-191) ``METHOD\\npath\\nsha256(body)\\ntimestamp`` and sends the
body's SHA-256 in a header beside the signature (as S3's ``x-amz-content-sha256``). The
relay can therefore check the signature, the caller's role and the declared size from
the headers alone, before it reads one byte of the body, and then checks the body
against the signed digest while it reads it.

A timestamp outside a short window and a call accepted before within it are refused, so
a captured request cannot be replayed. Accepted calls are appended to a journal in the
relay's data folder (``ReplayJournal``) before the relay acts on them, so a restarted
relay still refuses every call it accepted within the window.

Replays are recognised by signer and signed message, not by signature bytes: an ECDSA
signature can be rewritten into a second valid one (``s -> n - s``), the message cannot.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gridtask.exceptions import CryptoError
from gridtask.keys import Identity, recover_signer

__all__ = [
    "ADDRESS_HEADER",
    "CONTENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AuthError",
    "ReplayJournal",
    "SignedCall",
    "Verifier",
    "sign_request",
    "signed_message",
]

ADDRESS_HEADER = "X-Gridtask-Address"
TIMESTAMP_HEADER = "X-Gridtask-Timestamp"
SIGNATURE_HEADER = "X-Gridtask-Signature"
CONTENT_HEADER = "X-Gridtask-Content-SHA256"
DEFAULT_WINDOW_S = 60
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


class AuthError(Exception):
    """A relay call whose signature does not prove who sent it; ``detail`` says why."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


def _message(method: str, path: str, digest_hex: str, timestamp: int) -> bytes:
    return f"{method.upper()}\n{path}\n{digest_hex}\n{timestamp}".encode()


def signed_message(method: str, path: str, body: bytes, timestamp: int) -> bytes:
    """The exact bytes a relay call signs."""
    return _message(method, path, hashlib.sha256(body).hexdigest(), timestamp)


def sign_request(
    identity: Identity,
    method: str,
    path: str,
    body: bytes,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers that authenticate one call (timestamp in unix milliseconds)."""
    ts = int(time.time() * 1000) if timestamp is None else int(timestamp)
    digest = hashlib.sha256(body).hexdigest()
    signature = identity.sign(_message(method, path, digest, ts))
    return {
        ADDRESS_HEADER: identity.address,
        TIMESTAMP_HEADER: str(ts),
        CONTENT_HEADER: digest,
        SIGNATURE_HEADER: "0x" + signature.hex(),
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Starlette and httpx headers are case-insensitive; a plain dict may not be.
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


@dataclass(frozen=True)
class SignedCall:
    """A call whose headers carry a valid signature; its body is still to be checked."""

    signer: str
    timestamp_ms: int
    digest: str
    replay_key: bytes

    def check_body(self, digest_hex: str) -> None:
        """``AuthError`` unless the body read hashes to the signed digest."""
        if digest_hex != self.digest:
            raise AuthError("bad signature: the body does not match the signed SHA-256")


class ReplayJournal:
    """Accepted calls on disk, so that a restart does not reopen the replay window.

    Records are 40 bytes, ``expiry_ms`` (8, big-endian) then the replay key (32),
    appended with ``O_APPEND`` and ``fdatasync``-ed before the call is acted on. A torn
    last record (a crash mid-write) is ignored: its call never got an answer. The file is
    rewritten with only the live records (temp file, fsync, rename) when it loads and
    whenever dead records outnumber live ones.
    """

    RECORD = 40
    _COMPACT_MIN = 4096

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = -1
        self._records = 0

    def load(self, now_ms: int) -> list[tuple[int, bytes]]:
        """The records still live at ``now_ms``; the file is compacted to just those."""
        with self._lock:
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                raw = b""
            live = []
            for at in range(0, len(raw) - self.RECORD + 1, self.RECORD):
                expiry = int.from_bytes(raw[at : at + 8], "big")
                if expiry >= now_ms:
                    live.append((expiry, raw[at + 8 : at + self.RECORD]))
            self._rewrite(live)
            return live

    def append(self, expiry_ms: int, key: bytes) -> None:
        """Record one accepted call durably (blocking: run it in a thread)."""
        with self._lock:
            if self._fd < 0:
                self._open()
            os.write(self._fd, expiry_ms.to_bytes(8, "big") + key)
            os.fdatasync(self._fd)
            self._records += 1

    def compact(self, live: list[tuple[int, bytes]]) -> None:
        """Rewrite the file with ``live`` if it is mostly dead records (blocking)."""
        with self._lock:
            if self._records > max(self._COMPACT_MIN, 2 * len(live)):
                self._rewrite(live)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _rewrite(self, live: list[tuple[int, bytes]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as out:
            out.write(b"".join(expiry.to_bytes(8, "big") + key for expiry, key in live))
            out.flush()
            os.fsync(out.fileno())
        if self._fd >= 0:
            os.close(self._fd)
        os.replace(tmp, self.path)
        self._open()
        self._records = len(live)


class Verifier:
    """Checks signed calls and remembers accepted ones until they would be stale anyway.

    Two steps, so the relay can refuse a call before reading its body: ``check_headers``
    (signature, window, not seen before) and, once the body matched, ``accept`` (records
    the call; a second acceptance of the same call is a replay).
    """

    def __init__(self, window_s: int = DEFAULT_WINDOW_S, journal: ReplayJournal | None = None) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self._journal = journal
        self._seen: set[bytes] = set()
        self._expiry: list[tuple[int, bytes]] = []  # min-heap of (forget_after_ms, key)
        if journal is not None:
            for expiry, key in journal.load(int(time.time() * 1000)):
                self._remember(expiry, key)

    def check_headers(
        self, method: str, path: str, headers: Mapping[str, str], now: float | None = None
    ) -> SignedCall:
        """The verified signer of a call, from its headers alone; ``AuthError`` otherwise."""
        now = time.time() if now is None else now
        address = _header(headers, ADDRESS_HEADER)
        ts_text = _header(headers, TIMESTAMP_HEADER)
        digest = _header(headers, CONTENT_HEADER)
        sig_text = _header(headers, SIGNATURE_HEADER)
        if not address or not ts_text or not digest or not sig_text:
            named = zip(
                (ADDRESS_HEADER, TIMESTAMP_HEADER, CONTENT_HEADER, SIGNATURE_HEADER),
                (address, ts_text, digest, sig_text),
                strict=True,
            )
            missing = ", ".join(name for name, value in named if not value)
            raise AuthError(f"missing signature headers: {missing}")

        try:
            timestamp = int(ts_text)
        except ValueError:
            raise AuthError("malformed timestamp: expected unix milliseconds") from None
        if abs(now - timestamp / 1000) > self.window_s:
            raise AuthError(
                f"stale signature: timestamp is more than {self.window_s}s from the relay's clock"
            )
        digest = digest.lower()
        if not _DIGEST_RE.fullmatch(digest):
            raise AuthError(f"malformed {CONTENT_HEADER}: expected 64 hex characters")

        hex_sig = sig_text[2:] if sig_text[:2].lower() == "0x" else sig_text
        try:
            signature = bytes.fromhex(hex_sig)
        except ValueError:
            raise AuthError("malformed signature: expected 0x-prefixed hex") from None

        message = _message(method, path, digest, timestamp)
        try:
            signer = recover_signer(message, signature)
        except CryptoError as exc:
            raise AuthError(f"bad signature: {exc}") from None
        if signer.lower() != address.lower():
            raise AuthError("bad signature: it was not made by the address in the headers")

        key = hashlib.sha256(signer.encode() + b"\0" + message).digest()
        if key in self._seen:
            raise AuthError("replayed signature: this exact call was already accepted")
        return SignedCall(signer=signer, timestamp_ms=timestamp, digest=digest, replay_key=key)

    async def accept(self, call: SignedCall, now: float | None = None) -> None:
        """Record ``call`` (on disk too, with a journal) before the relay acts on it."""
        now = time.time() if now is None else now
        self._forget_expired(now)
        if call.replay_key in self._seen:
            raise AuthError("replayed signature: this exact call was already accepted")
        expiry = call.timestamp_ms + self.window_s * 1000
        self._remember(expiry, call.replay_key)
        if self._journal is not None:
            try:
                await asyncio.to_thread(self._journal.append, expiry, call.replay_key)
            except BaseException:
                # Not on disk, so not accepted: the caller may send it again.
                self._seen.discard(call.replay_key)
                raise

    async def verify(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        now: float | None = None,
    ) -> str:
        """All three checks for a call whose body is already read; the signer's address."""
        call = self.check_headers(method, path, headers, now)
        call.check_body(hashlib.sha256(body).hexdigest())
        await self.accept(call, now)
        return call.signer

    async def compact(self) -> None:
        """Drop expired entries from memory and, with a journal, from disk."""
        self._forget_expired(time.time())
        if self._journal is not None:
            await asyncio.to_thread(self._journal.compact, list(self._expiry))

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()

    def _remember(self, expiry_ms: int, key: bytes) -> None:
        self._seen.add(key)
        heapq.heappush(self._expiry, (expiry_ms, key))

    def _forget_expired(self, now: float) -> None:
        # A call whose timestamp has left the window is refused as stale, so its entry can go.
        now_ms = now * 1000
        while self._expiry and self._expiry[0][0] < now_ms:
            _, key = heapq.heappop(self._expiry)
            self._seen.discard(key)

    def __len__(self) -> int:
        return len(self._seen)

