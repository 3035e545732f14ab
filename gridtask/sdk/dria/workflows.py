"""Dria's ``dria_workflows`` names on gridtask: everything ``gridtask.workflows`` offers
(the format nodes run and its builder), under Dria's import path."""

from __future__ import annotations

from typing import Any

import gridtask.workflows as _workflows


def __getattr__(name: str) -> Any:
    """Whatever ``gridtask.workflows`` defines (one implementation, re-exported)."""
    try:
        return getattr(_workflows, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(n for n in dir(_workflows) if not n.startswith("_"))
