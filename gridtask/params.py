"""The task parameters: what the application encrypts to the node through the relay.

Their canonical bytes, salted with the nonce, are hashed on chain (``params_hash``), so
the node can prove to itself that the relay handed over exactly what the creator meant.
The task's result key travels inside: the node encrypts its result under it
(``gridtask.crypto.encrypt_result``), a cipher the contract can undo when the creator
reveals the task ID and nonce the key is derived from (a dispute).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from gridtask.scoring import canonical_json
from gridtask.types import TaskType

#: The model an any-of task's parameters name in what its ``params_hash`` covers.
ANY_MODEL = "*"


class TaskParams(BaseModel):
    """One task's parameters, as the node receives them after decryption."""

    model_config = ConfigDict(extra="forbid")

    task_type: TaskType
    model: str = Field(min_length=1, max_length=32)
    inputs: dict[str, Any]
    result_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="the task's result key (32 bytes), hex")

    def encode(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def decode(cls, raw: bytes) -> TaskParams:
        """Parse decrypted bytes; raises ``ValueError`` saying what is wrong."""
        try:
            return cls.model_validate_json(raw)
        except PydanticValidationError as exc:
            raise ValueError(f"malformed task parameters: {exc.errors()[0]['msg']}") from None

    def committed(self, any_model: bool) -> bytes:
        """The bytes its ``params_hash`` covers. An any-of task's creator names the model only
        once it knows the node (the first listed model that node serves), after the hash went on
        chain at creation: its hash covers the parameters with the model left open (``ANY_MODEL``).
        The relay still cannot swap them: the secret result key is inside."""
        return (self.model_copy(update={"model": ANY_MODEL}) if any_model else self).encode()

    @property
    def result_key_bytes(self) -> bytes:
        return bytes.fromhex(self.result_key)
