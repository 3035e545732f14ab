"""The worker's handle on the job (yapapi's ``WorkContext``): it makes scripts.

In Golem a work context is one provider's activity; here every yielded script is its own
gridtask task, and the network picks its node, so a context stands for one worker slot and
``provider_id`` is the node that ran its latest fragment.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from gridtask.sdk.golem.events import Event
from gridtask.sdk.golem.script import Script


class WorkContext:
    """Given to each worker: ``new_script()`` starts a fragment's commands."""

    def __init__(self, job_id: str, worker: int, emit: Callable[[Event], None]) -> None:
        self.job_id = job_id
        self.worker = worker
        self._emit = emit
        self.provider_id: str | None = None
        """The node that ran this worker's latest fragment (``None`` before the first)."""

    @property
    def id(self) -> str:
        return f"{self.job_id}/{self.worker}"

    @property
    def provider_name(self) -> str | None:
        return self.provider_id

    def __repr__(self) -> str:
        return f"WorkContext(id={self.id}, provider={self.provider_id})"

    def new_script(self, timeout: timedelta | None = None, wait_for_results: bool = True) -> Script:
        """A script for one fragment (``timeout``: how long it may take on its node)."""
        return Script(self, timeout=timeout, wait_for_results=wait_for_results)

    def emit(self, event: Event) -> None:
        self._emit(event)
