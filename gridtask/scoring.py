"""What a node commits as its score: a hash of the result, exact for deterministic output.

A result is first made canonical (JSON with sorted keys, no spaces), so that two honest
nodes with the same answer commit the same score. Validation groups will add a
similarity hash for output that may vary slightly between machines.
"""

from __future__ import annotations

import json
from typing import Any

from gridtask.crypto import keccak


def canonical_json(value: Any) -> bytes:
    """The one byte form of a result or parameters: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def score(result: bytes) -> bytes:
    """The 32-byte score of a canonical result."""
    return keccak(b"gridtask-score:" + result)
