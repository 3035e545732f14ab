"""Workflows: a few prompts in a row, each able to read what the earlier ones wrote.

Shared by the SDK, which builds them, and the node, which runs them. A workflow is plain
data (``model_dump()`` is JSON), so it travels inside a task's encrypted parameters.
As in Dria's workflows, prompts are templates: ``{{name}}`` is replaced by the value of
``name`` in the workflow's memory, which holds the inputs given when it was built and the
output of every step run so far::

    Workflow(
        steps=[
            Step(prompt="Write a poem about {{topic}}.", output="poem"),
            Step(prompt="Give this poem a title: {{poem}}", output="title"),
        ],
        return_value="title",
        memory={"topic": "the sea"},
    )

The whole workflow is checked before its first step runs, so a bad one costs no compute.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

MAX_STEPS = 8
NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
_PLACEHOLDER = re.compile(r"\{\{\s*(" + NAME_PATTERN + r")\s*\}\}")


class WorkflowError(ValueError):
    """A workflow that cannot run: malformed, or reading a name its memory never holds."""


class Step(BaseModel):
    """One generation: fill ``prompt`` from memory, ask the model, keep the answer as ``output``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1)
    output: str = Field(pattern=f"^{NAME_PATTERN}$")

    @property
    def placeholders(self) -> list[str]:
        """The memory names the prompt reads, in order of appearance."""
        return _PLACEHOLDER.findall(self.prompt)


class Workflow(BaseModel):
    """Steps run in order; the result is the memory entry named ``return_value``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    return_value: str = Field(pattern=f"^{NAME_PATTERN}$")
    memory: dict[str, str] = Field(default_factory=dict)
    """Inputs given when the workflow was built."""

    def check(self, names: Iterable[str] = ()) -> None:
        """Raise ``WorkflowError`` unless every placeholder and the return value will be known.

        ``names`` are the memory entries present before the first step, besides ``memory``.
        """
        known = set(self.memory) | set(names)
        for index, step in enumerate(self.steps):
            unknown = [name for name in step.placeholders if name not in known]
            if unknown:
                raise WorkflowError(f"step {index} reads unknown placeholder(s) {unknown}")
            known.add(step.output)
        if self.return_value not in known:
            raise WorkflowError(f"return value {self.return_value!r} is never written")


def render(template: str, memory: Mapping[str, str]) -> str:
    """Fill ``{{name}}`` placeholders in one pass (a value containing braces stays as it is)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in memory:
            raise WorkflowError(f"unknown placeholder {{{{{name}}}}}")
        return memory[name]

    return _PLACEHOLDER.sub(replace, template)


def parse_workflow(workflow: Workflow | Mapping[str, Any]) -> Workflow:
    """A ``Workflow`` from itself or from its ``model_dump()``; ``WorkflowError`` if malformed."""
    if isinstance(workflow, Workflow):
        return workflow
    try:
        return Workflow.model_validate(workflow)
    except PydanticValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'workflow'}: {e['msg']}" for e in exc.errors()
        )
        raise WorkflowError(f"malformed workflow: {errors}") from None


async def run_workflow(
    workflow: Workflow | Mapping[str, Any],
    generate: Callable[[str], Awaitable[str]],
    *,
    memory: dict[str, str] | None = None,
) -> tuple[str, dict[str, str]]:
    """Run the steps with ``generate`` and return (the return value, the final memory).

    ``memory`` adds to (and overrides) the inputs the workflow was built with.
    """
    workflow = parse_workflow(workflow)
    state = {**workflow.memory, **(memory or {})}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in state.items()):
        raise WorkflowError("memory names and values must be strings")
    workflow.check(state)
    for step in workflow.steps:
        state[step.output] = await generate(render(step.prompt, state))
    return state[workflow.return_value], state
