"""The echo task: returns its data unchanged.

Why: the cheapest task there is. It proves the whole path (chain, relay, encryption,
scoring, delivery) without a model, and benchmarks the network's own overhead.
"""

from __future__ import annotations

import json

from gridtask.node.executors.base import InvalidTaskParameters, check_model
from gridtask.types import TaskType

ECHO = "echo"
"""The model ID of the echo executor."""

MAX_DATA_CHARS = 1_000_000


class EchoExecutor:
    """``{"data": <any JSON value>}`` -> ``{"echo": <the same value>}``."""

    task_type = TaskType.ECHO

    def __init__(self) -> None:
        self.models = [ECHO]

    async def run(self, model: str, inputs: dict) -> dict:
        check_model(self, model)
        if not isinstance(inputs, dict) or "data" not in inputs:
            raise InvalidTaskParameters("echo needs inputs {'data': <JSON value>}")
        data = inputs["data"]
        try:
            size = len(json.dumps(data, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidTaskParameters(f"echo data is not JSON: {exc}") from None
        if size > MAX_DATA_CHARS:
            raise InvalidTaskParameters(f"echo data is {size} chars, over {MAX_DATA_CHARS}")
        return {"echo": data}
