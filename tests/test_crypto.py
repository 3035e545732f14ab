"""Sealed boxes, the salted hashes that go on chain, and the result cipher the contract re-checks."""

from __future__ import annotations

import time

import pytest

from gridtask.crypto import (
    decrypt_result,
    encrypt_result,
    keccak,
    params_hash,
    result_digest,
    result_frame,
    result_key,
    seal,
    task_commitment,
    task_id_hash,
    unseal,
)
from gridtask.exceptions import CryptoError
from gridtask.keys import Identity


def test_keccak_is_ethereum_keccak_not_sha3() -> None:
    assert keccak(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


def test_sealed_data_opens_only_with_the_recipients_key() -> None:
    node = Identity.generate()
    ciphertext = seal(b"parameters", node.encryption_public_key)
    assert b"parameters" not in ciphertext
    assert unseal(ciphertext, node.encryption_private_key) == b"parameters"


def test_another_node_cannot_unseal() -> None:
    ciphertext = seal(b"parameters", Identity.generate().encryption_public_key)
    with pytest.raises(CryptoError, match="not encrypted to this key"):
        unseal(ciphertext, Identity.generate().encryption_private_key)


def test_tampered_ciphertext_is_a_crypto_error() -> None:
    node = Identity.generate()
    ciphertext = bytearray(seal(b"parameters", node.encryption_public_key))
    ciphertext[-1] ^= 1
    with pytest.raises(CryptoError):
        unseal(bytes(ciphertext), node.encryption_private_key)


def test_seal_refuses_a_key_of_the_wrong_length() -> None:
    with pytest.raises(CryptoError):
        seal(b"x", b"short")


def test_equal_params_with_different_nonces_hash_differently() -> None:
    assert params_hash(b"same", b"\x01" * 32) != params_hash(b"same", b"\x02" * 32)
    assert params_hash(b"same", b"\x01" * 32) == keccak(b"same" + b"\x01" * 32)


def test_task_commitment_opens_with_the_task_id_hash_not_the_task_id() -> None:
    task_id, nonce = b"\x11" * 32, b"\x22" * 32
    assert task_id_hash(task_id) == keccak(task_id)
    assert task_commitment(task_id, nonce) == keccak(keccak(task_id) + nonce)
    assert task_commitment(task_id, nonce) != keccak(task_id + nonce)  # revealing h must not reveal the ID
    assert task_commitment(task_id, nonce) != task_commitment(task_id, b"\x23" * 32)


# --- the result cipher (SPEC8 §4): keccak-CTR under the per-task result key -----------------

TASK_ID, NONCE = b"\x11" * 32, b"\x22" * 32
KEY = result_key(TASK_ID, NONCE)


def test_result_key_is_the_domain_separated_hash_of_id_and_nonce() -> None:
    assert keccak(b"gridtask-result-key:" + TASK_ID + NONCE) == KEY
    assert KEY.hex() == "d2aeef9f3c998032bf4b097a834f182cd8d47db547cdf32b11e04cd9fde705f6"
    # the three members of a group share the task ID but not the nonce, nor the key
    assert result_key(TASK_ID, b"\x23" * 32) != KEY


def test_result_key_refuses_ids_of_the_wrong_length() -> None:
    with pytest.raises(CryptoError, match="32-byte task ID and a 32-byte nonce"):
        result_key(b"\x11" * 31, NONCE)


def test_frame_is_length_word_bytes_and_zero_padding() -> None:
    assert result_frame(b"") == bytes(32)
    assert result_frame(b"hello") == (5).to_bytes(32, "big") + b"hello" + bytes(27)
    assert len(result_frame(b"x" * 32)) == 64
    assert len(result_frame(b"x" * 33)) == 96


def test_result_digest_is_stable() -> None:
    """Fixed vectors: the contract helper checks its Vyper code against the same hex."""
    assert result_digest(b"").hex() == "290decd9548b62a8d60345a988386fc84ba6bc95484008f6362f93160ef3e563"
    assert result_digest(b"hello").hex() == "8cd3c4fd4c5a81a7ab507a4f9bb39e93bc828124b3a850be6c4a8893d0af465b"
    assert result_digest(b"hello") == keccak(result_frame(b"hello"))
    # the frame's length word tells b"a" from b"a\0"
    assert result_digest(b"a") != result_digest(b"a\0")


def test_ciphertext_is_the_frame_xor_the_keystream() -> None:
    """A fixed vector, and the keystream rule spelled out: word i = keccak(key || uint256(i))."""
    cipher = encrypt_result(KEY, b"hello")
    assert cipher.hex() == (
        "2f8c4623f4cd3e9302e158f863995fd11d1a98de388a58a02cbb220dc3b86e9f"
        "ef89cd622da82ce4b92fb79a495bf856290bd79b377010d58fe505572b5e2134"
    )
    frame = result_frame(b"hello")
    for i in range(2):
        word = keccak(KEY + i.to_bytes(32, "big"))
        chunk = slice(32 * i, 32 * i + 32)
        assert bytes(a ^ b for a, b in zip(cipher[chunk], word, strict=True)) == frame[chunk]


@pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 1 << 20])
def test_result_cipher_round_trips(size: int) -> None:
    plain = (bytes(range(256)) * (size // 256 + 1))[:size]
    cipher = encrypt_result(KEY, plain)
    assert len(cipher) == 32 * (1 + -(-size // 32))
    assert decrypt_result(KEY, cipher) == plain
    if size >= 32:
        assert plain[:32] not in cipher


def test_a_megabyte_encrypts_well_under_a_second() -> None:
    """Measured about 0.35-0.45 s on 2 loaded cores; the bound is generous for CI."""
    plain = bytes(1 << 20)
    start = time.perf_counter()
    cipher = encrypt_result(KEY, plain)
    decrypt_result(KEY, cipher)
    assert time.perf_counter() - start < 4.0


def test_a_changed_length_word_is_refused() -> None:
    cipher = bytearray(encrypt_result(KEY, b"x" * 40))
    cipher[31] ^= 0x20  # 40 -> 8: would still be a plausible length without the check
    with pytest.raises(CryptoError, match="length word"):
        decrypt_result(KEY, bytes(cipher))


def test_non_zero_padding_is_refused() -> None:
    cipher = bytearray(encrypt_result(KEY, b"hello"))
    cipher[-1] ^= 1  # a padding byte of the last word
    with pytest.raises(CryptoError, match="padding is not zero"):
        decrypt_result(KEY, bytes(cipher))


def test_a_shorter_length_word_over_the_same_words_is_refused() -> None:
    """Claiming the result ends earlier inside the same last word turns result bytes into
    padding: the padding check catches it (else a node could truncate what it delivered)."""
    cipher = bytearray(encrypt_result(KEY, b"hello"))
    cipher[31] ^= 5 ^ 3  # 5 -> 3: still 2 words, but bytes "lo" now sit in the padding
    with pytest.raises(CryptoError, match="padding is not zero"):
        decrypt_result(KEY, bytes(cipher))


def test_the_wrong_key_is_refused() -> None:
    cipher = encrypt_result(KEY, b"hello" * 100)
    with pytest.raises(CryptoError, match="wrong result key"):
        decrypt_result(result_key(TASK_ID, b"\x23" * 32), cipher)


@pytest.mark.parametrize("size", [0, 31, 33])
def test_ciphertext_of_a_partial_word_is_refused(size: int) -> None:
    with pytest.raises(CryptoError, match="whole number of 32-byte words"):
        decrypt_result(KEY, bytes(size))


def test_result_cipher_refuses_a_key_of_the_wrong_length() -> None:
    with pytest.raises(CryptoError, match="a result key is 32 bytes"):
        encrypt_result(b"short", b"x")
    with pytest.raises(CryptoError, match="a result key is 32 bytes"):
        decrypt_result(b"short", bytes(64))
