"""Code and corrections: ``GenerateCode``, ``IterateCode`` (a revision of given code) and ``Clair``
(a teacher corrects a student)."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from gridtask.sdk.dria.factory._base import SingletonTemplate, tag, text
from gridtask.sdk.dria.factory._flow import linear_workflow
from gridtask.sdk.dria.models import TaskResult
from gridtask.workflows import Workflow


class CodeOutput(BaseModel):
    instruction: str
    language: str
    code: str
    model: str


class GenerateCode(SingletonTemplate):
    """Code in ``language`` for ``instruction``: the first fenced block of the answer."""

    instruction: str = Field(min_length=1)
    language: str = Field(min_length=1)
    OutputSchema = CodeOutput

    def build(self) -> Workflow:
        prompt = "Write {{language}} code for this, in one ``` fenced block:\n{{instruction}}"
        return linear_workflow([(prompt, "code")], "code", {"instruction": self.instruction, "language": self.language})

    def parse(self, result: TaskResult) -> list[CodeOutput]:
        return [CodeOutput(instruction=self.instruction, language=self.language, code=fenced_code(self, result),
                           model=result.model)]


def fenced_code(singleton: SingletonTemplate, result: TaskResult) -> str:
    """The first fenced block of the answer (``ResultParseError`` when there is none)."""
    match = re.search(r"```[\w+-]*\n?(.*?)```", text(result), re.DOTALL)
    if not match or not match.group(1).strip():
        raise singleton.fail(result, "``` fenced code block")
    return match.group(1).strip()


class IteratedCodeOutput(CodeOutput):
    iterated_code: str


class IterateCode(SingletonTemplate):
    """A revision of ``code`` as ``instruction`` asks (the next round of ``GenerateCode``);
    the output keeps the code it started from."""

    code: str = Field(min_length=1)
    instruction: str = Field(min_length=1)
    language: str = Field(min_length=1)
    OutputSchema = IteratedCodeOutput

    def build(self) -> Workflow:
        prompt = ("Revise this {{language}} code as the instruction below asks. Keep what already works and "
                  "reply with the complete revised code inside a single ``` code fence.\n\nCode:\n{{code}}\n\n"
                  "Instruction: {{instruction}}")
        return linear_workflow([(prompt, "iterated_code")], "iterated_code",
                               {"code": self.code, "instruction": self.instruction, "language": self.language})

    def parse(self, result: TaskResult) -> list[IteratedCodeOutput]:
        return [IteratedCodeOutput(instruction=self.instruction, language=self.language, code=self.code,
                                   iterated_code=fenced_code(self, result), model=result.model)]


class ClairOutput(BaseModel):
    reasoning: str
    corrected_student_solution: str
    task: str
    student_solution: str
    model: str


class Clair(SingletonTemplate):
    """A teacher's minimal correction of a student's solution, with its reasoning (CLAIR)."""

    task: str = Field(min_length=1)
    student_solution: str = Field(min_length=1)
    OutputSchema = ClairOutput

    def build(self) -> Workflow:
        prompt = ("You are a teacher. Correct the student's solution as little as needed. Give your reasoning "
                  "in <reasoning></reasoning> and the corrected solution in "
                  "<corrected_student_solution></corrected_student_solution>.\n\nTask: {{task}}\n\n"
                  "Student's solution: {{student_solution}}")
        return linear_workflow([(prompt, "correction")], "correction",
                               {"task": self.task, "student_solution": self.student_solution})

    def parse(self, result: TaskResult) -> list[ClairOutput]:
        reasoning = tag(text(result), "reasoning")
        corrected = tag(text(result), "corrected_student_solution")
        if not reasoning or not corrected:
            raise self.fail(result, "<reasoning> and <corrected_student_solution>")
        return [ClairOutput(reasoning=reasoning, corrected_student_solution=corrected, task=self.task,
                            student_solution=self.student_solution, model=result.model)]
