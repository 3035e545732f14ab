"""Hashes and encryption shared by the application, the node and the relay.

Parameters and results travel through the relay sealed (libsodium ``crypto_box_seal``)
to their one reader: the relay stores bytes it cannot read. What goes on chain is only
hashes, salted with the task's nonce so that equal inputs never look equal there.
"""

from __future__ import annotations

from eth_utils import keccak as _keccak
from nacl.exceptions import CryptoError as _NaclCryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from gridtask.exceptions import CryptoError

__all__ = ["keccak", "params_hash", "seal", "task_commitment", "task_key", "unseal"]

ENCRYPTION_KEY_LENGTH = 32


def keccak(data: bytes) -> bytes:
    """Keccak-256, the hash the contract computes (not NIST SHA3-256)."""
    return _keccak(data)


def seal(plaintext: bytes, recipient_public_key: bytes) -> bytes:
    """Encrypt to one recipient anonymously; only their private key opens it."""
    if len(recipient_public_key) != ENCRYPTION_KEY_LENGTH:
        raise CryptoError(
            f"an encryption public key is {ENCRYPTION_KEY_LENGTH} bytes, "
            f"got {len(recipient_public_key)}"
        )
    return SealedBox(PublicKey(recipient_public_key)).encrypt(plaintext)


def unseal(ciphertext: bytes, private_key: PrivateKey) -> bytes:
    """Open a sealed box, or ``CryptoError`` when it was not sealed to this key or was altered."""
    try:
        return SealedBox(private_key).decrypt(ciphertext)
    except _NaclCryptoError:
        raise CryptoError(
            "cannot decrypt: the data was not encrypted to this key, or it was corrupted"
        ) from None


def params_hash(params: bytes, nonce: bytes) -> bytes:
    """``keccak(params || nonce)``: the node checks its parameters against this on chain."""
    return keccak(params + nonce)


def task_commitment(task_id: bytes, nonce: bytes) -> bytes:
    """``keccak(task_id || nonce)``: hides which tasks share a task ID (a validation group)."""
    return keccak(task_id + nonce)


def task_key(creator: str, commitment: bytes) -> bytes:
    """``keccak(creator || commitment)``, packed (20 address bytes, then 32): the task's key
    on chain. The contract derives it from the sender of ``createTask``, so nobody who sees
    a pending creation can take its commitment first."""
    address = bytes.fromhex(creator.removeprefix("0x"))
    if len(address) != 20 or len(commitment) != 32:
        raise ValueError("task_key takes a 20-byte address and a 32-byte commitment")
    return keccak(address + commitment)
