"""Hashes and encryption shared by the application, the node and the relay.

Parameters and results travel through the relay sealed (libsodium ``crypto_box_seal``)
to their one reader: the relay stores bytes it cannot read. What goes on chain is only
hashes, salted with the task's nonce so that equal inputs never look equal there.

A result is also bound to its score by a second, symmetric layer the contract can undo:
the node encrypts the framed result with a keccak-CTR keystream under the per-task result
key ``keccak("gridtask-result-key:" || task_id || nonce)``, which the application puts in
the sealed parameters. A creator who finds that the delivered result does not fit the
score reveals the task ID and nonce on chain; the contract rebuilds the key, decrypts the
ciphertext whose hash the node committed, and compares (``disputeResult``). Every format
below is recomputed there byte for byte.
"""

from __future__ import annotations

from Crypto.Hash import keccak as _pycryptodome_keccak
from eth_utils import keccak as _keccak
from nacl.exceptions import CryptoError as _NaclCryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from gridtask.exceptions import CryptoError

__all__ = [
    "decrypt_result",
    "encrypt_result",
    "keccak",
    "params_hash",
    "result_digest",
    "result_frame",
    "result_key",
    "seal",
    "task_commitment",
    "task_id_hash",
    "task_key",
    "unseal",
]

ENCRYPTION_KEY_LENGTH = 32
RESULT_KEY_LENGTH = 32
WORD = 32
"""The cipher works on 32-byte words, the EVM's word: the contract reads them with ``slice``."""
RESULT_KEY_DOMAIN = b"gridtask-result-key:"


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


def task_id_hash(task_id: bytes) -> bytes:
    """``keccak(task_id)``: what the creator reveals to validate a task or a group (and what
    sampling is decided by). The task ID itself stays secret, because the result key derives
    from it: it is revealed only to dispute a result on chain."""
    return keccak(task_id)


SAMPLING_BPS = 10_000
RAND_MASK = 2**64 - 1


def sampled(task_id_hash: bytes, creation_block_hash: bytes, rate_bps: int) -> bool:
    """Whether a task was drawn for validation by a group of three: the contract's rule
    (``TaskNetwork._sampled``), ``keccak(h ‖ rand) % 10000 < rate``, with h = keccak(task ID)
    and rand the low 64 bits of its creation block's hash (the ``TaskCreated`` log's
    ``blockHash``). The creator computes it from the log it already has, without asking."""
    rand = int.from_bytes(creation_block_hash, "big") & RAND_MASK
    draw = int.from_bytes(keccak(task_id_hash + rand.to_bytes(32, "big")), "big")
    return draw % SAMPLING_BPS < rate_bps


def task_commitment(task_id: bytes, nonce: bytes) -> bytes:
    """``keccak(keccak(task_id) || nonce)``: hides which tasks share a task ID (a validation
    group) until the creator opens it with ``task_id_hash``."""
    return keccak(task_id_hash(task_id) + nonce)


def task_key(creator: str, commitment: bytes) -> bytes:
    """``keccak(creator || commitment)``, packed (20 address bytes, then 32): the task's key
    on chain. The contract derives it from the sender of ``createTask``, so nobody who sees
    a pending creation can take its commitment first."""
    address = bytes.fromhex(creator.removeprefix("0x"))
    if len(address) != 20 or len(commitment) != 32:
        raise ValueError("task_key takes a 20-byte address and a 32-byte commitment")
    return keccak(address + commitment)


def result_key(task_id: bytes, nonce: bytes) -> bytes:
    """``keccak("gridtask-result-key:" || task_id || nonce)``: the task's result key.

    Derived from the task ID, which the node never sees, so only the application can
    reveal it; derived from the nonce too, so the three members of a group differ.
    """
    if len(task_id) != 32 or len(nonce) != 32:
        raise CryptoError(
            f"a result key is derived from a 32-byte task ID and a 32-byte nonce, "
            f"got {len(task_id)} and {len(nonce)} bytes"
        )
    return keccak(RESULT_KEY_DOMAIN + task_id + nonce)


def result_frame(plain: bytes) -> bytes:
    """``uint256(len(plain))`` big-endian, the bytes, zeros up to a whole word.

    The length word lets decryption find where the result ends in the last word; the
    zero padding is checked, so no two frames decrypt to the same result.
    """
    padding = -len(plain) % WORD
    return len(plain).to_bytes(WORD, "big") + plain + b"\0" * padding


def _framed_size(length: int) -> int:
    """Bytes in the frame of a ``length``-byte result: the length word and whole words."""
    return WORD * (1 + -(-length // WORD))


def result_digest(plain: bytes) -> bytes:
    """``keccak(result_frame(plain))``: the hash of a result an exact score commits to."""
    return keccak(result_frame(plain))


def _keystream(key: bytes, words: int) -> bytes:
    """Words ``keccak(key || uint256(i))`` for i = 0 .. words-1 (keccak-CTR).

    pycryptodome's keccak directly: one hash per word is the cost of the cipher (about a
    third of a second per megabyte on a loaded CPU), and the wrapper in eth_utils adds a
    third more on top.
    """
    new = _pycryptodome_keccak.new
    return b"".join([new(data=key + i.to_bytes(WORD, "big"), digest_bits=256).digest() for i in range(words)])


def _xor(data: bytes, stream: bytes) -> bytes:
    """XOR two equal-length buffers at once, as big integers (no per-byte Python loop)."""
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")
    return mixed.to_bytes(len(data), "big")


def _check_result_key(key: bytes) -> None:
    if len(key) != RESULT_KEY_LENGTH:
        raise CryptoError(f"a result key is {RESULT_KEY_LENGTH} bytes (gridtask.crypto.result_key), got {len(key)}")


def encrypt_result(key: bytes, plain: bytes) -> bytes:
    """The framed result XOR the keccak-CTR keystream: ``32 * (1 + ceil(len/32))`` bytes.

    The node uploads these bytes as they are and commits ``keccak`` of them on chain.
    """
    _check_result_key(key)
    framed = result_frame(plain)
    return _xor(framed, _keystream(key, len(framed) // WORD))


def decrypt_result(key: bytes, cipher: bytes) -> bytes:
    """Undo ``encrypt_result``; ``CryptoError`` when the frame does not check out.

    A wrong key, or bytes that were altered, almost surely give a length word that does
    not match the ciphertext's size, or a non-zero padding: both are refused rather than
    returning garbage.
    """
    _check_result_key(key)
    if len(cipher) < WORD or len(cipher) % WORD:
        raise CryptoError(
            f"an encrypted result is a whole number of 32-byte words, at least one; got {len(cipher)} bytes"
        )
    framed = _xor(cipher, _keystream(key, len(cipher) // WORD))
    length = int.from_bytes(framed[:WORD], "big")
    if _framed_size(length) != len(cipher):
        raise CryptoError(
            f"the encrypted result's length word ({length}) does not fit its {len(cipher)} bytes: "
            "wrong result key, or the ciphertext was altered"
        )
    if any(framed[WORD + length :]):
        raise CryptoError(
            "the encrypted result's padding is not zero: wrong result key, or the ciphertext was altered"
        )
    return framed[WORD : WORD + length]
