"""Who you are on the network: an Ethereum account and the encryption key derived from it.

One secret is enough. The Ethereum private key signs transactions and relay calls; an
X25519 key pair derived from it lets others encrypt task parameters and results to you,
so that an operator backs up one key and loses nothing.

Signing uses coincurve (libsecp256k1) directly: it produces the same EIP-191 signatures
as ``eth_account.Account.sign_message`` at a fraction of the cost, which matters because
the relay verifies a signature on every call.
"""

from __future__ import annotations

import secrets

from coincurve import PrivateKey as _SecpPrivateKey
from coincurve import PublicKey as _SecpPublicKey
from eth_utils import keccak, to_checksum_address
from nacl.public import PrivateKey as EncryptionPrivateKey
from pydantic import SecretStr

from gridtask.config import secret_value
from gridtask.exceptions import CryptoError, ValidationError

__all__ = ["Identity", "eip191_hash", "recover_signer"]

SIGNATURE_LENGTH = 65
_ENCRYPTION_KEY_DOMAIN = b"gridtask-encryption"
_EIP191_PREFIX = b"\x19Ethereum Signed Message:\n"
_V_OFFSET = 27
# secp256k1 group order; a valid private key lies in [1, n - 1].
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def eip191_hash(message: bytes) -> bytes:
    """The digest ``personal_sign`` signs, so a signature can never pass for a transaction."""
    return keccak(_EIP191_PREFIX + str(len(message)).encode() + message)


def _address_of(public_key: _SecpPublicKey) -> str:
    return to_checksum_address(keccak(public_key.format(compressed=False)[1:])[-20:])


class Identity:
    """An Ethereum account plus the X25519 key pair that others encrypt to."""

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != 32 or not 0 < int.from_bytes(private_key, "big") < _SECP256K1_N:
            raise ValidationError("an Ethereum private key is 32 bytes in [1, n-1]")
        self._private_key = bytes(private_key)
        self._secp = _SecpPrivateKey(self._private_key)
        self._address = _address_of(self._secp.public_key)
        self._encryption = EncryptionPrivateKey(keccak(_ENCRYPTION_KEY_DOMAIN + self._private_key))

    @classmethod
    def from_hex(cls, hex_str: str | SecretStr) -> Identity:
        """Load a key as wallets and ``anvil`` print it, with or without ``0x``.

        Takes the config's ``SecretStr`` as it is, so the key is never copied into a plain
        string that a log line or a traceback could show.
        """
        text = secret_value(hex_str).strip()
        if text[:2].lower() == "0x":
            text = text[2:]
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValidationError("a private key must be 64 hex characters") from None
        return cls(raw)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity (tests, new nodes)."""
        while True:
            raw = secrets.token_bytes(32)
            if 0 < int.from_bytes(raw, "big") < _SECP256K1_N:
                return cls(raw)

    @property
    def address(self) -> str:
        """The checksum address, as the contract sees ``msg.sender``."""
        return self._address

    @property
    def private_key(self) -> bytes:
        return self._private_key

    @property
    def encryption_public_key(self) -> bytes:
        """The 32-byte X25519 key a node publishes on chain so applications can encrypt to it."""
        return bytes(self._encryption.public_key)

    @property
    def encryption_private_key(self) -> EncryptionPrivateKey:
        return self._encryption

    def sign(self, message: bytes) -> bytes:
        """EIP-191 ``personal_sign``: 65 bytes ``r || s || v`` with ``v`` in {27, 28}."""
        signature = self._secp.sign_recoverable(eip191_hash(message), hasher=None)
        return signature[:64] + bytes([signature[64] + _V_OFFSET])

    def __repr__(self) -> str:
        # Never show the private key, not even in a traceback.
        return f"Identity(address={self._address!r})"


def recover_signer(message: bytes, signature: bytes) -> str:
    """The checksum address that signed ``message`` with EIP-191, or ``CryptoError``."""
    if len(signature) != SIGNATURE_LENGTH:
        raise CryptoError(f"a signature is {SIGNATURE_LENGTH} bytes, got {len(signature)}")
    v = signature[64]
    if v in (_V_OFFSET, _V_OFFSET + 1):
        v -= _V_OFFSET
    if v not in (0, 1):
        raise CryptoError(f"signature recovery id must be 27 or 28, got {signature[64]}")
    try:
        public_key = _SecpPublicKey.from_signature_and_message(
            signature[:64] + bytes([v]), eip191_hash(message), hasher=None
        )
    except Exception as exc:  # coincurve raises plain Exception/ValueError on bad input
        raise CryptoError(f"malformed signature: {exc}") from None
    return _address_of(public_key)
