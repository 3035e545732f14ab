"""The SourceRegistry's record of a source by field name, read the same way by the SDK and the node.

``sources(address)`` returns ``struct Source`` as a tuple; its field names come from the
contract's ABI here, once, so nobody counts positions (and a field added to the struct cannot
shift what another reader takes for ``minPayment`` or ``status``).
"""

from __future__ import annotations

from enum import IntEnum
from functools import cache
from typing import Any

from gridtask.chain import artifact

__all__ = ["REGISTRY", "SourceStatus", "is_registered", "source_record"]

REGISTRY = "SourceRegistry"


class SourceStatus(IntEnum):
    """``status``: an ACTIVE source takes tasks; its owner made an INACTIVE one stop."""

    ACTIVE = 0
    INACTIVE = 1


@cache
def _fields() -> tuple[str, ...]:
    getter = next(f for f in artifact.abi(REGISTRY) if f.get("type") == "function" and f.get("name") == "sources")
    return tuple(str(c["name"]) for c in getter["outputs"][0]["components"])


def source_record(raw: Any) -> dict[str, Any]:
    """``sources(address)``'s tuple as ``{field: value}`` with ``struct Source``'s names."""
    return dict(zip(_fields(), raw, strict=True))


def is_registered(record: dict[str, Any]) -> bool:
    """Whether the record is a source's (an address never registered reads as all zeros)."""
    return int(record["owner"], 16) != 0
