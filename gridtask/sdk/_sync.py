"""A synchronous facade over ``Client`` for scripts and the command line.

Async once, sync as a thin wrapper: every public coroutine of ``Client`` is run on
one private event loop that lives as long as the ``SyncClient``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any

from gridtask.sdk._client import Client


class SyncClient:
    """``with SyncClient() as client: client.run(...)`` — same methods as ``Client``, blocking."""

    def __init__(self, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._client = Client(**kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(attr(*args, **kwargs))

        return blocking

    def close(self) -> None:
        self._runner.run(self._client.aclose())
        self._runner.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
