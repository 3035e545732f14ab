"""Personas: ``RandomVars`` (traits of people in a simulation), then ``ShortBio`` or
``BackStory`` for each; ``PersonaBio`` and ``PersonaBackstory`` are those two-step pipelines."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from gridtask.sdk.dria.factory._base import SingletonTemplate, items, text
from gridtask.sdk.dria.factory._flow import linear_workflow
from gridtask.sdk.dria.models import TaskResult
from gridtask.workflows import Workflow


class RandomVarOutput(BaseModel):
    persona_traits: list[str]
    simulation_description: str
    model: str


class RandomVars(SingletonTemplate):
    """Traits of ``num_of_samples`` people in a simulation (one output per person); the
    first step lists the traits that matter, the second draws a person from them."""

    simulation_description: str = Field(min_length=1)
    num_of_samples: int = Field(default=1, ge=1, le=20)
    OutputSchema = RandomVarOutput

    def build(self) -> Workflow:
        return linear_workflow([
            ("List the traits (age, job, place, ...) that matter for people in this simulation: "
             "{{simulation_description}}", "variables"),
            ("Using these traits: {{variables}}\nDescribe {{num_of_samples}} different people, one per line, "
             "numbered '1.', each as 'trait: value; trait: value'.", "people"),
        ], "people", {"simulation_description": self.simulation_description,
                      "num_of_samples": str(self.num_of_samples)})

    def parse(self, result: TaskResult) -> list[RandomVarOutput]:
        people = items(text(result))[: self.num_of_samples]
        if not people:
            raise self.fail(result, "numbered list of people")
        return [RandomVarOutput(persona_traits=[t.strip() for t in p.split(";") if t.strip()],
                                simulation_description=self.simulation_description, model=result.model)
                for p in people]


class BioOutput(BaseModel):
    bio: str
    model: str


class ShortBio(SingletonTemplate):
    """A short biography of a person with these traits."""

    persona_traits: list[str] = Field(min_length=1)
    simulation_description: str = Field(min_length=1)
    OutputSchema = BioOutput
    ASK: ClassVar[str] = "Write a short biography, in a few sentences,"

    def build(self) -> Workflow:
        prompt = (f"{self.ASK} of a person in this simulation: {{{{simulation_description}}}}\n"
                  "Their traits: {{traits}}")
        return linear_workflow([(prompt, "bio")], "bio", {
            "simulation_description": self.simulation_description, "traits": "; ".join(self.persona_traits)})

    def parse(self, result: TaskResult) -> list[BioOutput]:
        if not text(result):
            raise self.fail(result, "biography")
        return [BioOutput(bio=text(result), model=result.model)]


class BackstoryOutput(BaseModel):
    backstory: str
    model: str


class BackStory(ShortBio):
    """A longer backstory of a person with these traits."""

    OutputSchema = BackstoryOutput  # type: ignore[assignment]
    ASK: ClassVar[str] = "Write the backstory, in a few paragraphs,"

    def parse(self, result: TaskResult) -> list[BackstoryOutput]:  # type: ignore[override]
        if not text(result):
            raise self.fail(result, "backstory")
        return [BackstoryOutput(backstory=text(result), model=result.model)]


PersonaBio: list[type[SingletonTemplate]] = [RandomVars, ShortBio]
PersonaBackstory: list[type[SingletonTemplate]] = [RandomVars, BackStory]
