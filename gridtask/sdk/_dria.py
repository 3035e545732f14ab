"""The Dria style: ``await client.execute(Task(workflow=..., models=[Model.X]), timeout=45)``.

Templates such as ``Simple`` build a workflow and parse what comes back, as Dria's
``dria.factory`` templates do; underneath, every ``Task`` is one gridtask LLM task.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from gridtask.chain.client import to_bytes32
from gridtask.exceptions import ValidationError
from gridtask.limits import check_positive
from gridtask.types import TaskType
from gridtask.workflows import Step, Workflow

if TYPE_CHECKING:
    from gridtask.sdk._client import Client


class Model(StrEnum):
    """Models the devnet's nodes serve. Any other model ID may be given as a plain string."""

    TINY_LLM = "tiny-llm"
    MINILM = "all-minilm-l6-v2"
    ECHO = "echo"


class Task(BaseModel):
    """A workflow and the models that may run it (the first one that a node serves runs it)."""

    workflow: dict[str, Any] | Workflow
    models: list[Model | str] = Field(min_length=1)


class TaskResult(BaseModel):
    """One task's outcome, as Dria's ``TaskResult``: ``result`` is the workflow's return value."""

    id: str
    task_input: Any
    step_name: str = ""
    result: Any
    model: str
    node: str = ""
    fee: int = 0
    group: str = ""
    """How its validation group ended (``GroupResult.describe()``), empty for a lone task."""


class Simple:
    """One prompt, one generation (Dria's ``Simple`` singleton)."""

    def workflow(self, prompt: str) -> Workflow:
        if not isinstance(prompt, str) or not prompt:
            raise ValidationError("Simple.workflow needs a non-empty prompt string")
        return Workflow(steps=[Step(prompt=prompt, output="response")], return_value="response")

    def parse_result(self, results: list[TaskResult]) -> str:
        """The generated text of the first result."""
        if not results:
            raise ValidationError("no results to parse")
        return str(results[0].result)


async def execute(client: Client, task: Task | list[Task], *, timeout: float = 300,
                  validate: str = "sampled") -> list[TaskResult]:
    """Run one task or several at once; results come back in the same order (``validate``
    as ``Client.submit``)."""
    check_positive("timeout", timeout, "seconds")
    tasks = [task] if isinstance(task, Task) else task
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValidationError("execute takes a Task or a non-empty list of Task objects")
    return list(await asyncio.gather(*(_execute_one(client, t, timeout, validate) for t in tasks)))


async def _execute_one(client: Client, task: Task, timeout: float, validate: str) -> TaskResult:
    workflow = task.workflow.model_dump() if isinstance(task.workflow, Workflow) else task.workflow
    model = await _served_model(client, [m.value if isinstance(m, Model) else str(m) for m in task.models])
    handle = await client.submit(TaskType.LLM, model, {"workflow": workflow}, validate=validate)
    output = await client.result(handle, timeout=timeout)
    return TaskResult(
        id=handle.task_id, task_input=workflow, result=output.get("text", output), model=model,
        node=handle.node, fee=handle.fee, group=handle.group.describe() if handle.group else "",
    )


async def _served_model(client: Client, models: list[str]) -> str:
    """The first of the task's models that some node serves (else the first: it will queue)."""
    for model in models:
        try:
            raw = to_bytes32(model)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if await client.chain.model_node_count(raw) > 0:
            return model
    return models[0]
