"""The echo task: returns its data unchanged.

Why: the cheapest task there is. It proves the whole path (chain, relay, encryption,
scoring, delivery) without a model, and benchmarks the network's own overhead.
"""

from __future__ import annotations

from gridtask.limits import ECHO_MODEL, MAX_ECHO_DATA_CHARS, check_echo
from gridtask.node.executors.base import check_model, task_fault
from gridtask.types import TaskType

ECHO = ECHO_MODEL
"""The model ID of the echo executor."""

MAX_DATA_CHARS = MAX_ECHO_DATA_CHARS


class EchoExecutor:
    """``{"data": <any JSON value>}`` -> ``{"echo": <the same value>}``."""

    task_type = TaskType.ECHO

    def __init__(self) -> None:
        self.models = [ECHO]

    async def run(self, model: str, inputs: dict) -> dict:
        check_model(self, model)
        with task_fault():
            data = check_echo(inputs)
        return {"echo": data}
