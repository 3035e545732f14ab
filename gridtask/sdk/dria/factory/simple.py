"""``Simple``: one prompt, one generation; ``Reasoning``: one prompt, the thinking about it."""

from __future__ import annotations

from pydantic import BaseModel, Field

from gridtask.exceptions import ValidationError
from gridtask.sdk.dria.factory._base import SingletonTemplate, text
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


class ReasoningSchema(BaseModel):
    reasoning: str = Field(description="Reasoning chain")
    model: str = Field(description="Model used for generation")


class Reasoning(SingletonTemplate):
    """The reasoning about a prompt rather than its answer (data for training models to think
    before they answer)."""

    prompt: str = Field(min_length=1, description="Prompt to reason about")
    OutputSchema = ReasoningSchema

    def build(self) -> Workflow:
        prompt = ("Think out loud about the prompt below: how you read it, the angles worth weighing, and the "
                  "steps that lead to an answer, in plain connected prose.\n\nPrompt: {{prompt}}")
        return linear_workflow([(prompt, "reasoning")], "reasoning", {"prompt": self.prompt}, max_tokens=1500)

    def parse(self, result: TaskResult) -> list[ReasoningSchema]:
        if not text(result):
            raise self.fail(result, "reasoning")
        return [ReasoningSchema(reasoning=text(result), model=result.model)]
