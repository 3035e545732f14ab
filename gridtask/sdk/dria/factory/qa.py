"""Questions and lists: ``GenerateSubtopics``, ``Question`` + ``Answer`` (the ``QA``
pipeline), ``MultiHopQuestion`` and ``ListExtender``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gridtask.sdk.dria.factory._base import SingletonTemplate, items, numbered, tag, text
from gridtask.sdk.dria.factory._flow import linear_workflow
from gridtask.sdk.dria.models import TaskResult
from gridtask.workflows import Workflow


class SubtopicsOutput(BaseModel):
    topic: str
    subtopic: str
    model: str


class GenerateSubtopics(SingletonTemplate):
    """Subtopics of a topic, one output per subtopic."""

    topic: str = Field(min_length=1)
    OutputSchema = SubtopicsOutput

    def build(self) -> Workflow:
        prompt = "List the subtopics of {{topic}} as a JSON array of strings, and nothing else."
        return linear_workflow([(prompt, "subtopics")], "subtopics", {"topic": self.topic})

    def parse(self, result: TaskResult) -> list[SubtopicsOutput]:
        found = items(text(result))
        if not found:
            raise self.fail(result, "list of subtopics")
        return [SubtopicsOutput(topic=self.topic, subtopic=s, model=result.model) for s in found]


class QuestionOutput(BaseModel):
    question: str
    persona: str
    context: str
    model: str


class Question(SingletonTemplate):
    """Questions that ``persona`` would ask about ``context`` (one output per question)."""

    context: str = Field(min_length=1)
    persona: str = Field(min_length=1)
    num_questions: int = Field(default=1, ge=1, lt=50)
    OutputSchema = QuestionOutput

    def build(self) -> Workflow:
        prompt = ("You are {{persona}}. Read this text and ask {{num_questions}} question(s) about it"
                  "{{format}}.\n\nText: {{context}}")
        form = "" if self.num_questions == 1 else ", one per line, numbered '1.'"
        return linear_workflow([(prompt, "questions")], "questions", {
            "persona": self.persona, "context": self.context, "num_questions": str(self.num_questions),
            "format": form})

    def parse(self, result: TaskResult) -> list[QuestionOutput]:
        found = [text(result)] if self.num_questions == 1 else items(text(result))[: self.num_questions]
        found = [q for q in found if q]
        if not found:
            raise self.fail(result, "question")
        return [QuestionOutput(question=q, persona=self.persona, context=self.context, model=result.model)
                for q in found]


class AnswerOutput(BaseModel):
    question: str
    prediction: str
    context: str
    model: str


class Answer(SingletonTemplate):
    """Answer ``question`` from ``context`` in the voice of ``persona``."""

    context: str = Field(min_length=1)
    question: str = Field(min_length=1)
    persona: str = Field(min_length=1)
    OutputSchema = AnswerOutput

    def build(self) -> Workflow:
        prompt = ("You are {{persona}}. Using this text, answer the question.\n\nText: {{context}}\n\n"
                  "Question: {{question}}")
        return linear_workflow([(prompt, "answer")], "answer",
                               {"persona": self.persona, "context": self.context, "question": self.question})

    def parse(self, result: TaskResult) -> list[AnswerOutput]:
        if not text(result):
            raise self.fail(result, "answer")
        return [AnswerOutput(question=self.question, prediction=text(result), context=self.context,
                             model=result.model)]


QA: list[type[SingletonTemplate]] = [Question, Answer]
"""A two-step pipeline for ``DatasetGenerator``: questions about a context, then answers."""


class QuestionSet(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    one_hop: str = Field(alias="1-hop")
    two_hop: str = Field(alias="2-hop")
    three_hop: str = Field(alias="3-hop")
    answer: str
    model: str


class MultiHopQuestion(SingletonTemplate):
    """Questions needing one, two and three of three documents, and their answer."""

    chunks: list[str] = Field(min_length=3, max_length=3)
    OutputSchema = QuestionSet

    def build(self) -> Workflow:
        prompt = ("Documents:\n[1] {{document_1}}\n[2] {{document_2}}\n[3] {{document_3}}\n\nWrite a question "
                  "answered by one document in <1hop></1hop>, one that needs two in <2hop></2hop>, one that "
                  "needs all three in <3hop></3hop>, and the answer in <answer></answer>.")
        return linear_workflow([(prompt, "questions")], "questions",
                               {f"document_{i}": c for i, c in enumerate(self.chunks, 1)})

    def parse(self, result: TaskResult) -> list[QuestionSet]:
        found = {name: tag(text(result), name) for name in ("1hop", "2hop", "3hop", "answer")}
        missing = [f"<{name}>" for name, value in found.items() if not value]
        if missing:
            raise self.fail(result, " ".join(missing))
        return [QuestionSet(one_hop=found["1hop"] or "", two_hop=found["2hop"] or "",
                            three_hop=found["3hop"] or "", answer=found["answer"] or "", model=result.model)]


class ExtendedListOutput(BaseModel):
    extended_list: list[str]
    model: str


class ListExtender(SingletonTemplate):
    """More items like those of ``e_list`` (the given ones first, duplicates dropped)."""

    e_list: list[str] = Field(min_length=1)
    OutputSchema = ExtendedListOutput

    def build(self) -> Workflow:
        prompt = "Extend this list with new items of the same kind, one per line, numbered '1.':\n{{list}}"
        return linear_workflow([(prompt, "new_items")], "new_items", {"list": numbered(self.e_list)})

    def parse(self, result: TaskResult) -> list[ExtendedListOutput]:
        new = items(text(result))
        if not new:
            raise self.fail(result, "list of items")
        merged = list(dict.fromkeys([*self.e_list, *new]))
        return [ExtendedListOutput(extended_list=merged, model=result.model)]
