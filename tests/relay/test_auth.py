"""Relay call signatures: who signed, and refusals of stale, forged and replayed calls."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from gridtask.keys import Identity
from gridtask.relay.auth import (
    ADDRESS_HEADER,
    CONTENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AuthError,
    ReplayJournal,
    Verifier,
    sign_request,
)

NOW = 1_700_000_000
PATH = "/v1/tasks/0x" + "ab" * 32 + "/params"


@pytest.fixture
def alice() -> Identity:
    return Identity.generate()


async def test_verify_returns_the_signers_address(alice: Identity) -> None:
    headers = sign_request(alice, "PUT", PATH, b"body", timestamp=NOW * 1000)
    assert await Verifier().verify("PUT", PATH, b"body", headers, now=NOW) == alice.address


async def test_headers_are_address_timestamp_and_hex_signature(alice: Identity) -> None:
    headers = sign_request(alice, "GET", PATH, b"", timestamp=NOW * 1000)
    assert headers[ADDRESS_HEADER] == alice.address
    assert headers[TIMESTAMP_HEADER] == str(NOW * 1000)
    assert headers[SIGNATURE_HEADER].startswith("0x")
    assert len(headers[SIGNATURE_HEADER]) == 2 + 130
    assert headers[CONTENT_HEADER] == hashlib.sha256(b"").hexdigest()


async def test_lowercase_header_names_are_accepted(alice: Identity) -> None:
    headers = {k.lower(): v for k, v in sign_request(alice, "GET", PATH, b"", NOW * 1000).items()}
    assert await Verifier().verify("GET", PATH, b"", headers, now=NOW) == alice.address


@pytest.mark.parametrize("missing", [ADDRESS_HEADER, TIMESTAMP_HEADER, CONTENT_HEADER, SIGNATURE_HEADER])
async def test_missing_header_is_refused(alice: Identity, missing: str) -> None:
    headers = sign_request(alice, "GET", PATH, b"", timestamp=NOW * 1000)
    del headers[missing]
    with pytest.raises(AuthError, match="missing signature headers"):
        await Verifier().verify("GET", PATH, b"", headers, now=NOW)


@pytest.mark.parametrize("offset", [-61, 61, -3600, 10**6])
async def test_stale_signature_is_refused(alice: Identity, offset: int) -> None:
    headers = sign_request(alice, "GET", PATH, b"", timestamp=(NOW + offset) * 1000)
    with pytest.raises(AuthError, match="stale signature"):
        await Verifier(window_s=60).verify("GET", PATH, b"", headers, now=NOW)


@pytest.mark.parametrize("offset", [-60, 60])
async def test_timestamp_at_the_edge_of_the_window_is_accepted(alice: Identity, offset: int) -> None:
    headers = sign_request(alice, "GET", PATH, b"", timestamp=(NOW + offset) * 1000)
    assert await Verifier(window_s=60).verify("GET", PATH, b"", headers, now=NOW) == alice.address


async def test_replayed_signature_is_refused(alice: Identity) -> None:
    verifier = Verifier()
    headers = sign_request(alice, "PUT", PATH, b"body", timestamp=NOW * 1000)
    await verifier.verify("PUT", PATH, b"body", headers, now=NOW)
    with pytest.raises(AuthError, match="replayed signature"):
        await verifier.verify("PUT", PATH, b"body", headers, now=NOW + 5)


async def test_replay_with_malleated_signature_is_refused(alice: Identity) -> None:
    """(r, n - s) with the other v is a second valid signature of the same message."""
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    verifier = Verifier()
    headers = sign_request(alice, "PUT", PATH, b"body", timestamp=NOW * 1000)
    await verifier.verify("PUT", PATH, b"body", headers, now=NOW)
    sig = bytes.fromhex(headers[SIGNATURE_HEADER][2:])
    s = n - int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + s.to_bytes(32, "big") + bytes([55 - sig[64]])
    replay = {**headers, SIGNATURE_HEADER: "0x" + flipped.hex()}
    with pytest.raises(AuthError, match="replayed signature"):
        await verifier.verify("PUT", PATH, b"body", replay, now=NOW)


async def test_claiming_another_address_is_a_bad_signature(alice: Identity) -> None:
    mallory = Identity.generate()
    headers = sign_request(mallory, "PUT", PATH, b"body", timestamp=NOW * 1000)
    headers[ADDRESS_HEADER] = alice.address
    with pytest.raises(AuthError, match="bad signature"):
        await Verifier().verify("PUT", PATH, b"body", headers, now=NOW)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", PATH, b"body"),
        ("PUT", PATH.replace("params", "result"), b"body"),
        ("PUT", PATH, b"other body"),
    ],
)
async def test_signature_does_not_cover_another_call(
    alice: Identity, method: str, path: str, body: bytes
) -> None:
    headers = sign_request(alice, "PUT", PATH, b"body", timestamp=NOW * 1000)
    with pytest.raises(AuthError, match="bad signature"):
        await Verifier().verify(method, path, body, headers, now=NOW)


@pytest.mark.parametrize("signature", ["0xzz", "0x" + "00" * 65, "0x1234"])
async def test_malformed_signature_is_refused(alice: Identity, signature: str) -> None:
    headers = sign_request(alice, "GET", PATH, b"", timestamp=NOW * 1000)
    headers[SIGNATURE_HEADER] = signature
    with pytest.raises(AuthError, match="signature"):
        await Verifier().verify("GET", PATH, b"", headers, now=NOW)


async def test_malformed_timestamp_is_refused(alice: Identity) -> None:
    headers = sign_request(alice, "GET", PATH, b"", timestamp=NOW * 1000)
    headers[TIMESTAMP_HEADER] = "yesterday"
    with pytest.raises(AuthError, match="malformed timestamp"):
        await Verifier().verify("GET", PATH, b"", headers, now=NOW)


async def test_seen_signatures_are_forgotten_once_stale(alice: Identity) -> None:
    verifier = Verifier(window_s=60)
    for i in range(50):
        headers = sign_request(alice, "GET", PATH, b"", timestamp=(NOW + i) * 1000)
        await verifier.verify("GET", PATH, b"", headers, now=NOW + i)
    assert len(verifier) == 50
    headers = sign_request(alice, "GET", PATH, b"", timestamp=(NOW + 200) * 1000)
    await verifier.verify("GET", PATH, b"", headers, now=NOW + 200)
    assert len(verifier) == 1


# -- the replay journal: accepted calls survive a restart --------------------------------


async def test_a_new_verifier_on_the_same_journal_refuses_the_replay(alice: Identity, tmp_path: Path) -> None:
    now = time.time()
    headers = sign_request(alice, "GET", PATH, b"", timestamp=int(now * 1000))
    await Verifier(journal=ReplayJournal(tmp_path / "journal")).verify("GET", PATH, b"", headers, now=now)
    restarted = Verifier(journal=ReplayJournal(tmp_path / "journal"))
    with pytest.raises(AuthError, match="replayed signature"):
        restarted.check_headers("GET", PATH, headers, now=now + 1)


async def test_journal_load_drops_expired_and_torn_records(alice: Identity, tmp_path: Path) -> None:
    path = tmp_path / "journal"
    now = time.time()
    verifier = Verifier(window_s=60, journal=ReplayJournal(path))
    for i in range(3):
        headers = sign_request(alice, "GET", PATH, b"", timestamp=int((now - 100 + i * 50) * 1000))
        await verifier.verify("GET", PATH, b"", headers, now=now - 100 + i * 50)
    verifier.close()
    with open(path, "ab") as journal:
        journal.write(b"\x01" * 17)  # a record cut short by a crash
    live = ReplayJournal(path).load(int(now * 1000))
    assert len(live) == 2  # the call from 100 s ago has left the window; the torn tail is ignored
    assert path.stat().st_size == 2 * ReplayJournal.RECORD  # rewritten with the live records only


async def test_accepting_twice_is_a_replay_even_between_check_and_accept(alice: Identity) -> None:
    """Two copies of one call both pass check_headers while in flight; only one is accepted."""
    verifier = Verifier()
    headers = sign_request(alice, "GET", PATH, b"", timestamp=NOW * 1000)
    first = verifier.check_headers("GET", PATH, headers, now=NOW)
    second = verifier.check_headers("GET", PATH, headers, now=NOW)
    await verifier.accept(first, now=NOW)
    with pytest.raises(AuthError, match="replayed signature"):
        await verifier.accept(second, now=NOW)
