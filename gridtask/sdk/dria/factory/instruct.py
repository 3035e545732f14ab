"""Instruction data: ``EvolveInstruct`` (Evol-Instruct's mutations), ``EvolveComplexity``,
``ScoreComplexity``, ``EvolveQuality`` (a better response), ``SelfInstruct`` and ``MagPie``
(a dialogue between two personas)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from gridtask.sdk.dria.factory._base import SingletonTemplate, after, items, numbered, text
from gridtask.sdk.dria.factory._flow import linear_workflow
from gridtask.sdk.dria.models import TaskResult
from gridtask.workflows import MAX_STEPS, Workflow

MutationType = Literal["FRESH_START", "ADD_CONSTRAINTS", "DEEPEN", "CONCRETIZE", "INCREASE_REASONING",
                       "SWITCH_TOPIC"]
_REWRITE = "\n\nReply with the new prompt only, after '## New Prompt:'.\n\n#Given Prompt#:\n{{prompt}}"
MUTATION_TEMPLATES: dict[str, str] = {
    "FRESH_START": "Write one question or request that uses one or more of these words: {{prompt}}",
    "ADD_CONSTRAINTS": "Add a few constraints or requirements to #Given Prompt#." + _REWRITE,
    "DEEPEN": "Slightly increase the depth and breadth of #Given Prompt#." + _REWRITE,
    "CONCRETIZE": "Make #Given Prompt# slightly more concrete." + _REWRITE,
    "INCREASE_REASONING": "Rewrite #Given Prompt# so that it asks for reasoning in several steps." + _REWRITE,
    "SWITCH_TOPIC": "Rewrite #Given Prompt# on another topic of the same domain and difficulty." + _REWRITE,
}


class EvolveInstructOutput(BaseModel):
    mutated_prompt: str
    original_prompt: str
    model: str


class EvolveInstruct(SingletonTemplate):
    """Rewrite a prompt by one of Evol-Instruct's mutations (``mutation_type``)."""

    prompt: str = Field(min_length=1, description="The original prompt to mutate")
    mutation_type: MutationType = Field(description="The mutation to apply")
    OutputSchema = EvolveInstructOutput

    def build(self) -> Workflow:
        return linear_workflow([(MUTATION_TEMPLATES[self.mutation_type], "mutated_prompt")], "mutated_prompt",
                               {"prompt": self.prompt})

    def parse(self, result: TaskResult) -> list[EvolveInstructOutput]:
        body = text(result).split("## New Prompt:")[-1]
        mutated = body.replace("##", "").replace("{", "").replace("}", "").strip()
        if not mutated:
            raise self.fail(result, "new prompt")
        return [EvolveInstructOutput(mutated_prompt=mutated, original_prompt=self.prompt, model=result.model)]


class EvolveOutput(BaseModel):
    evolved_instruction: str
    instruction: str
    model: str


class EvolveComplexity(SingletonTemplate):
    """A harder version of ``instruction`` (more constraints, deeper reasoning): the step
    that grows a dataset's difficulty, scored afterwards by ``ScoreComplexity``."""

    instruction: str = Field(min_length=1, description="Instruction to evolve")
    OutputSchema = EvolveOutput

    def build(self) -> Workflow:
        prompt = ("Make this instruction harder to carry out: add constraints or require deeper reasoning, "
                  "keeping its subject. Reply with the new instruction only, after 'New instruction:'.\n\n"
                  "Instruction: {{instruction}}")
        return linear_workflow([(prompt, "evolved_instruction")], "evolved_instruction",
                               {"instruction": self.instruction})

    def parse(self, result: TaskResult) -> list[EvolveOutput]:
        evolved = after(self, result, "New instruction:", "new instruction")
        return [EvolveOutput(evolved_instruction=evolved, instruction=self.instruction, model=result.model)]


QualityMethod = Literal["HELPFULNESS", "RELEVANCE", "DEEPENING", "CREATIVITY", "DETAILS"]
QUALITY_METHODS: dict[str, str] = {
    "HELPFULNESS": "Make the response more helpful to the user.",
    "RELEVANCE": "Make the response keep closer to what the prompt asks.",
    "DEEPENING": "Make the response go deeper into the subject.",
    "CREATIVITY": "Make the response more creative.",
    "DETAILS": "Make the response more detailed.",
}


class EvolveQualityOutput(BaseModel):
    response: str
    evolved_response: str
    method: str
    model: str


class EvolveQuality(SingletonTemplate):
    """A better ``response`` to ``prompt`` by one of Evol-Quality's methods (``method``):
    the response side of Evol-Instruct."""

    prompt: str = Field(min_length=1)
    response: str = Field(min_length=1)
    method: QualityMethod
    OutputSchema = EvolveQualityOutput

    def build(self) -> Workflow:
        prompt = ("Improve the response below to the prompt below. {{method}} Keep its tables and code, add "
                  "at most twenty words, and reply with the improved response only, after "
                  "'Improved response:'.\n\nPrompt: {{prompt}}\n\nResponse: {{response}}")
        return linear_workflow([(prompt, "evolved_response")], "evolved_response", {
            "prompt": self.prompt, "response": self.response, "method": QUALITY_METHODS[self.method]})

    def parse(self, result: TaskResult) -> list[EvolveQualityOutput]:
        evolved = after(self, result, "Improved response:", "improved response")
        return [EvolveQualityOutput(response=self.response, evolved_response=evolved, method=self.method,
                                    model=result.model)]


class InstructionScore(BaseModel):
    instruction: str
    score: int = Field(ge=1, le=10)
    model: str


class ScoreComplexity(SingletonTemplate):
    """Score each instruction's complexity from 1 to 10."""

    instructions: list[str] = Field(min_length=1, max_length=50)
    OutputSchema = InstructionScore

    def build(self) -> Workflow:
        prompt = ("Rank these instructions by complexity from 1 (simplest) to 10. Answer one line per "
                  "instruction, exactly '[number] Score: value'.\n\n{{instruction_list}}")
        return linear_workflow([(prompt, "scores")], "scores", {"instruction_list": numbered(self.instructions)})

    def parse(self, result: TaskResult) -> list[InstructionScore]:
        scores = {int(i): int(s) for i, s in re.findall(r"\[(\d+)\]\s*Score:\s*(\d+)", text(result))}
        missing = [i for i in range(1, len(self.instructions) + 1) if not 1 <= scores.get(i, 0) <= 10]
        if missing:
            raise self.fail(result, f"score from 1 to 10 for instruction(s) {missing}")
        return [InstructionScore(instruction=instr, score=scores[i], model=result.model)
                for i, instr in enumerate(self.instructions, 1)]


class InstructionOutput(BaseModel):
    instructions: list[str]
    model: str


class SelfInstruct(SingletonTemplate):
    """New user queries for an application, as Self-Instruct generates them."""

    num_instructions: int = Field(ge=1, le=50)
    criteria_for_query_generation: str = Field(min_length=1)
    application_description: str = Field(min_length=1)
    context: str = Field(min_length=1)
    OutputSchema = InstructionOutput

    def build(self) -> Workflow:
        prompt = ("You write queries that users of this application would send.\nApplication: "
                  "{{application_description}}\nContext: {{context}}\nCriteria: {{criteria_for_query_generation}}\n"
                  "Write {{num_instructions}} different queries, one per line, numbered '1.'.")
        return linear_workflow([(prompt, "instructions")], "instructions", {
            "num_instructions": str(self.num_instructions), "context": self.context,
            "criteria_for_query_generation": self.criteria_for_query_generation,
            "application_description": self.application_description})

    def parse(self, result: TaskResult) -> list[InstructionOutput]:
        found = items(text(result))[: self.num_instructions]
        if not found:
            raise self.fail(result, "numbered list of queries")
        return [InstructionOutput(instructions=found, model=result.model)]


class DialogueTurn(BaseModel):
    instructor: str
    responder: str


class DialogueOutput(BaseModel):
    dialogue: list[DialogueTurn]
    model: str


class MagPie(SingletonTemplate):
    """A dialogue of ``num_turns`` turns between two personas, one generation per message."""

    instructor_persona: str = Field(min_length=1)
    responding_persona: str = Field(min_length=1)
    num_turns: int = Field(default=1, ge=1, le=MAX_STEPS // 2)
    OutputSchema = DialogueOutput

    def build(self) -> Workflow:
        steps: list[tuple[str, str]] = []
        history = ""
        for turn in range(self.num_turns):
            steps.append(("You are {{instructor_persona}}, talking with {{responding_persona}}.\n"
                          f"Conversation so far:{history or ' (none)'}\nWrite your next message.",
                          f"instructor_{turn}"))
            history += f"\nYou: {{{{instructor_{turn}}}}}"
            steps.append(("You are {{responding_persona}}, talking with {{instructor_persona}}.\n"
                          f"Conversation so far:{history.replace('You:', 'Them:')}\nWrite your reply.",
                          f"responder_{turn}"))
            history += f"\nThem: {{{{responder_{turn}}}}}"
        # The last reply is the return value; every turn is in the result's memory.
        return linear_workflow(steps, f"responder_{self.num_turns - 1}",
                               {"instructor_persona": self.instructor_persona,
                                "responding_persona": self.responding_persona})

    def parse(self, result: TaskResult) -> list[DialogueOutput]:
        turns = []
        for turn in range(self.num_turns):
            asked, answered = result.memory.get(f"instructor_{turn}"), result.memory.get(f"responder_{turn}")
            if not asked or not answered:
                raise self.fail(result, f"turn {turn} in its memory")
            turns.append(DialogueTurn(instructor=str(asked).strip(), responder=str(answered).strip()))
        return [DialogueOutput(dialogue=turns, model=result.model)]
