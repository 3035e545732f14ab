"""Sealed boxes and the salted hashes that go on chain."""

from __future__ import annotations

import pytest

from gridtask.crypto import keccak, params_hash, seal, task_commitment, unseal
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


def test_task_commitment_is_keccak_of_id_and_nonce() -> None:
    task_id, nonce = b"\x11" * 32, b"\x22" * 32
    assert task_commitment(task_id, nonce) == keccak(task_id + nonce)
    assert task_commitment(task_id, nonce) != task_commitment(task_id, b"\x23" * 32)
