"""``Simple``: one prompt, one generation."""

from __future__ import annotations

from pydantic import BaseModel, Field

from gridtask.exceptions import ValidationError
from gridtask.sdk.dria.factory._base import SingletonTemplate
from gridtask.sdk.dria.factory._flow import linear_workflow
from gridtask.sdk.dria.models import TaskResult
from gridtask.workflows import Workflow


class SimpleOutput(BaseModel):
    prompt: str = Field(description="The prompt used to generate text")
    generation: str = Field(description="Generated text")
    model: str = Field(description="Model used for generation")


class Simple(SingletonTemplate):
    """One prompt, one generation (Dria's ``Simple``)."""

    prompt: str = Field(min_length=1, description="Input prompt for generation")
    OutputSchema = SimpleOutput

    def build(self) -> Workflow:
        # The prompt is memory, not the template: braces in it stay as they are.
        return linear_workflow([("{{prompt}}", "response")], "response", {"prompt": self.prompt})

    def parse(self, result: TaskResult) -> list[SimpleOutput]:
        return [SimpleOutput(prompt=self.prompt, generation=str(result.result), model=result.model)]

    def parse_result(self, results: list[TaskResult]) -> str:  # type: ignore[override]
        """The generated text of the first result (the seed example's style)."""
        if not results:
            raise ValidationError("Simple: no results to parse")
        return str(results[0].result)
