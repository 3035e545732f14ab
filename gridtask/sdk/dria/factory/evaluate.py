"""A model as judge: ``EvaluatePrediction`` (is an answer faithful to its context?),
``ValidatePrediction`` (does it mean the same as the right answer?) and
``InstructionBacktranslation`` (how good an answer is it to its instruction, 1 to 5).

Judges answer with a label or a score; each parser finds it even with words around it, and
says so (``ResultParseError``) when there is none."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from gridtask.sdk.dria.factory._base import SingletonTemplate, text
from gridtask.sdk.dria.factory._flow import linear_workflow
from gridtask.sdk.dria.models import TaskResult
from gridtask.workflows import Workflow

EVALUATION_LABELS = ("[correct]", "[partially_correct]", "[incorrect]", "[irrelevant]")
"""What ``EvaluatePrediction.evaluation`` holds: Dria's labels, brackets included."""
_LABEL = re.compile(r"\[\s*(correct|partially[ _]correct|incorrect|irrelevant)\s*\]", re.IGNORECASE)


class EvaluationOutput(BaseModel):
    question: str
    prediction: str
    evaluation: str = Field(description="One of EVALUATION_LABELS")
    model: str


class EvaluatePrediction(SingletonTemplate):
    """Judge ``prediction`` against ``context`` only (not the judge's own knowledge): one of
    ``EVALUATION_LABELS``, for grading a RAG system's answers."""

    prediction: str = Field(min_length=1, description="The answer to judge")
    question: str = Field(min_length=1, description="The question it answers")
    context: str = Field(min_length=1, description="The text the answer must keep to")
    OutputSchema = EvaluationOutput

    def build(self) -> Workflow:
        prompt = ("Judge a predicted answer by the context alone, not by what you know. Question: {{question}}\n\n"
                  "Context: {{context}}\n\nPredicted answer: {{prediction}}\n\nReply with one label only: "
                  "[correct] if the context supports it, [partially_correct] if it supports part of it, "
                  "[incorrect] if the context contradicts it, [irrelevant] if it is off the question or "
                  "beyond the context.")
        return linear_workflow([(prompt, "evaluation_result")], "evaluation_result",
                               {"question": self.question, "context": self.context, "prediction": self.prediction})

    def parse(self, result: TaskResult) -> list[EvaluationOutput]:
        match = _LABEL.search(text(result))
        if not match:
            raise self.fail(result, f"label (one of {', '.join(EVALUATION_LABELS)})")
        label = "[" + re.sub(r"[ _]", "_", match.group(1).lower()) + "]"
        return [EvaluationOutput(question=self.question, prediction=self.prediction, evaluation=label,
                                 model=result.model)]


class ValidationOutput(BaseModel):
    prediction: str
    correct_answer: str
    validation: bool
    model: str


_VERDICT = re.compile(r"^\W*(true|false)\b", re.IGNORECASE)


class ValidatePrediction(SingletonTemplate):
    """Whether ``prediction`` means the same as ``correct_answer`` (wording aside): a
    yes/no check of generated answers against known ones."""

    prediction: str = Field(min_length=1, description="The answer to check")
    correct_answer: str = Field(min_length=1, description="The answer known to be right")
    OutputSchema = ValidationOutput

    def build(self) -> Workflow:
        prompt = ("Does the predicted answer say the same as the correct answer? Compare their meaning and "
                  "ignore wording and extra detail. Reply with one word only: true or false.\n\n"
                  "Predicted answer: {{prediction}}\n\nCorrect answer: {{correct_answer}}")
        return linear_workflow([(prompt, "validation_result")], "validation_result",
                               {"prediction": self.prediction, "correct_answer": self.correct_answer})

    def parse(self, result: TaskResult) -> list[ValidationOutput]:
        match = _VERDICT.match(text(result))
        if not match:
            raise self.fail(result, "true or false")
        return [ValidationOutput(prediction=self.prediction, correct_answer=self.correct_answer,
                                 validation=match.group(1).lower() == "true", model=result.model)]


class BacktranslationOutput(BaseModel):
    reasoning: str
    score: str = Field(description="1 to 5, as text (Dria's type)")
    instruction: str
    generation: str
    model: str


_SCORE = re.compile(r"Score:\s*\**\s*([1-5])\b", re.IGNORECASE)


class InstructionBacktranslation(SingletonTemplate):
    """How good ``generation`` is as an AI assistant's answer to ``instruction``, 1 to 5 with
    the reasoning (the curation step of instruction backtranslation: keep the pairs that score high)."""

    instruction: str = Field(min_length=1, description="The instruction")
    generation: str = Field(min_length=1, description="The answer to rate")
    OutputSchema = BacktranslationOutput

    def build(self) -> Workflow:
        prompt = ("Rate how well this answer serves as an AI assistant's reply to the instruction, from 1 to 5: "
                  "1 incomplete, vague or off the point; 2 covers most of it but not the exact ask; 3 helpful but "
                  "reads like a blog or forum post, not an assistant; 4 a complete, clear assistant reply with "
                  "minor room to improve; 5 a perfect, expert, focused assistant reply. Give your reasoning "
                  "briefly, then 'Score: <1-5>' on the last line.\n\nInstruction: {{instruction}}\n\n"
                  "Answer: {{generation}}")
        return linear_workflow([(prompt, "score")], "score",
                               {"instruction": self.instruction, "generation": self.generation})

    def parse(self, result: TaskResult) -> list[BacktranslationOutput]:
        body = text(result)
        scores = list(_SCORE.finditer(body))
        if not scores:
            raise self.fail(result, "'Score: <1-5>'")
        last = scores[-1]
        return [BacktranslationOutput(reasoning=body[:last.start()].strip(), score=last.group(1),
                                      instruction=self.instruction, generation=self.generation,
                                      model=result.model)]
