"""Signed relay calls: who is calling, proven by their Ethereum key.

The caller signs (EIP-191) ``METHOD\\npath\\nsha256(body)\\ntimestamp``. The relay then
knows the caller's address without accounts or passwords, and compares it with the
task's creator or node on chain. A timestamp outside a short window and a message seen
before within it are refused, so a captured request cannot be replayed.

Replays are recognised by signer and signed message, not by signature bytes: an ECDSA
signature can be rewritten into a second valid one (``s -> n - s``), the message cannot.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Mapping

from gridtask.exceptions import CryptoError
from gridtask.keys import Identity, recover_signer

__all__ = [
    "ADDRESS_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AuthError",
    "Verifier",
    "sign_request",
    "signed_message",
]

ADDRESS_HEADER = "X-Gridtask-Address"
TIMESTAMP_HEADER = "X-Gridtask-Timestamp"
SIGNATURE_HEADER = "X-Gridtask-Signature"
DEFAULT_WINDOW_S = 60


class AuthError(Exception):
    """A relay call whose signature does not prove who sent it; ``detail`` says why."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


def signed_message(method: str, path: str, body: bytes, timestamp: int) -> bytes:
    """The exact bytes a relay call signs."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{path}\n{digest}\n{timestamp}".encode()


def sign_request(
    identity: Identity,
    method: str,
    path: str,
    body: bytes,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The three headers that authenticate one call (timestamp in unix milliseconds)."""
    ts = int(time.time() * 1000) if timestamp is None else int(timestamp)
    signature = identity.sign(signed_message(method, path, body, ts))
    return {
        ADDRESS_HEADER: identity.address,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: "0x" + signature.hex(),
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Starlette and httpx headers are case-insensitive; a plain dict may not be.
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


class Verifier:
    """Checks signed calls and remembers accepted ones until they would be stale anyway."""

    def __init__(self, window_s: int = DEFAULT_WINDOW_S) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self._seen: set[bytes] = set()
        self._expiry: list[tuple[float, bytes]] = []  # min-heap of (forget_after, key)

    def verify(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        now: float | None = None,
    ) -> str:
        """The checksum address that signed this call, or ``AuthError``."""
        now = time.time() if now is None else now
        address = _header(headers, ADDRESS_HEADER)
        ts_text = _header(headers, TIMESTAMP_HEADER)
        sig_text = _header(headers, SIGNATURE_HEADER)
        if not address or not ts_text or not sig_text:
            named = zip(
                (ADDRESS_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER),
                (address, ts_text, sig_text),
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

        hex_sig = sig_text[2:] if sig_text[:2].lower() == "0x" else sig_text
        try:
            signature = bytes.fromhex(hex_sig)
        except ValueError:
            raise AuthError("malformed signature: expected 0x-prefixed hex") from None

        message = signed_message(method, path, body, timestamp)
        try:
            signer = recover_signer(message, signature)
        except CryptoError as exc:
            raise AuthError(f"bad signature: {exc}") from None
        if signer.lower() != address.lower():
            raise AuthError("bad signature: it was not made by the address in the headers")

        self._forget_expired(now)
        key = hashlib.sha256(signer.encode() + b"\0" + message).digest()
        if key in self._seen:
            raise AuthError("replayed signature: this exact call was already accepted")
        self._seen.add(key)
        heapq.heappush(self._expiry, (timestamp / 1000 + self.window_s, key))
        return signer

    def _forget_expired(self, now: float) -> None:
        # A call whose timestamp has left the window is refused as stale, so its entry can go.
        while self._expiry and self._expiry[0][0] < now:
            _, key = heapq.heappop(self._expiry)
            self._seen.discard(key)

    def __len__(self) -> int:
        return len(self._seen)
