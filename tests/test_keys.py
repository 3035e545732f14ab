"""Identity: signatures eth_account accepts, and an encryption key derived from the same secret."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from gridtask.exceptions import CryptoError, ValidationError
from gridtask.keys import Identity, recover_signer

# anvil's first default account: a well-known key, fine for tests.
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def test_from_hex_gives_the_checksum_address_eth_account_gives() -> None:
    assert Identity.from_hex(ANVIL_KEY).address == ANVIL_ADDRESS
    assert Identity.from_hex(ANVIL_KEY[2:]).address == ANVIL_ADDRESS


@pytest.mark.parametrize("message", [b"", b"hello", b"\x00" * 1000, "ünïcode".encode()])
def test_sign_matches_eth_account_sign_message(message: bytes) -> None:
    identity = Identity.generate()
    expected = Account.sign_message(encode_defunct(message), identity.private_key).signature
    assert identity.sign(message) == bytes(expected)


def test_signature_is_65_bytes_with_v_27_or_28() -> None:
    signature = Identity.generate().sign(b"message")
    assert len(signature) == 65
    assert signature[64] in (27, 28)


def test_recover_signer_returns_the_signing_address() -> None:
    identity = Identity.generate()
    assert recover_signer(b"message", identity.sign(b"message")) == identity.address


def test_recover_signer_agrees_with_eth_account() -> None:
    identity = Identity.generate()
    signature = identity.sign(b"message")
    assert Account.recover_message(encode_defunct(b"message"), signature=signature) == (
        recover_signer(b"message", signature)
    )


def test_signature_over_another_message_recovers_someone_else() -> None:
    identity = Identity.generate()
    assert recover_signer(b"tampered", identity.sign(b"message")) != identity.address


@pytest.mark.parametrize(
    "signature",
    [b"", b"\x01" * 64, b"\x00" * 65, b"\x01" * 64 + bytes([29]), b"\xff" * 65],
)
def test_malformed_signature_is_a_crypto_error(signature: bytes) -> None:
    with pytest.raises(CryptoError):
        recover_signer(b"message", signature)


def test_encryption_key_is_derived_deterministically_from_the_private_key() -> None:
    a = Identity.from_hex(ANVIL_KEY)
    b = Identity.from_hex(ANVIL_KEY)
    assert a.encryption_public_key == b.encryption_public_key
    assert len(a.encryption_public_key) == 32
    assert bytes(a.encryption_private_key.public_key) == a.encryption_public_key
    assert Identity.generate().encryption_public_key != a.encryption_public_key


@pytest.mark.parametrize("bad", ["0x1234", "zz" * 32, "0x" + "00" * 32, "0x" + "ff" * 32])
def test_invalid_private_key_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        Identity.from_hex(bad)


def test_repr_does_not_leak_the_private_key() -> None:
    identity = Identity.from_hex(ANVIL_KEY)
    assert ANVIL_KEY[2:] not in repr(identity)
    assert identity.address in repr(identity)
