"""Text data for embeddings and graphs: ``TextMatching``, ``TextClassification`` and
``SemanticTriplet`` (examples to train text-embedding models on, as in "Improving Text
Embeddings with Large Language Models"), and ``GenerateGraph`` (a knowledge graph of a text).

Each asks for JSON and reads it from the answer, fenced or wrapped in prose or not."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from gridtask.sdk.dria.factory._base import SingletonTemplate, json_in, strings, text
from gridtask.sdk.dria.factory._flow import linear_workflow
from gridtask.sdk.dria.models import TaskResult
from gridtask.workflows import Workflow


class GraphRelation(BaseModel):
    node_1: str = Field(description="A concept of the text")
    node_2: str = Field(description="A related concept of the text")
    edge: str = Field(description="How the two are related")


class GraphOutput(BaseModel):
    graph: GraphRelation
    model: str


class GenerateGraph(SingletonTemplate):
    """The key terms of ``context`` and how they relate, as graph edges (one output per edge);
    entries of the answer that are not whole edges are left out."""

    context: str = Field(min_length=1, description="The text to extract terms and relations from")
    OutputSchema = GraphOutput

    def build(self) -> Workflow:
        prompt = ("Build a knowledge graph of the text below. Find its key terms (people, places, objects, "
                  "organizations, concepts, ...), as atomic as they can be, and how pairs of them are related. "
                  'Reply with a JSON array only, one object per related pair: {"node_1": "a term", '
                  '"node_2": "a related term", "edge": "their relation, in a sentence or two"}.'
                  "\n\nText:\n{{context}}")
        return linear_workflow([(prompt, "graph")], "graph", {"context": self.context}, max_tokens=750)

    def parse(self, result: TaskResult) -> list[GraphOutput]:
        edges = [found for entry in json_in(text(result), list) or []
                 if (found := strings(entry, "node_1", "node_2", "edge"))]
        if not edges:
            raise self.fail(result, 'JSON array of {"node_1", "node_2", "edge"} objects')
        return [GraphOutput(graph=GraphRelation(**edge), model=result.model) for edge in edges]


class TextMatchingOutput(BaseModel):
    input: str
    positive_document: str
    model: str


class TextMatching(SingletonTemplate):
    """An input text and a longer document that matches it, for the text-matching task
    ``task_description`` in ``language`` (a positive pair for an embedding model)."""

    task_description: str = Field(min_length=1, description="The text-matching task")
    language: str = Field(min_length=1, description="The language of both texts")
    OutputSchema = TextMatchingOutput

    def build(self) -> Workflow:
        prompt = ("Write one example pair for this text-matching task: {{task}}\nBoth texts are in {{language}}; "
                  '"input" is a text and "positive_document" a longer one that matches it as the task says. '
                  'Reply with a JSON object with exactly those two keys, "input" and "positive_document", '
                  "and nothing else.")
        return linear_workflow([(prompt, "text_matching_example")], "text_matching_example",
                               {"task": self.task_description, "language": self.language}, max_tokens=500)

    def parse(self, result: TaskResult) -> list[TextMatchingOutput]:
        found = strings(json_in(text(result), dict), "input", "positive_document")
        if not found:
            raise self.fail(result, 'JSON object with "input" and "positive_document"')
        return [TextMatchingOutput(**found, model=result.model)]


class TextClassificationOutput(BaseModel):
    input_text: str
    label: str
    misleading_label: str
    model: str


class TextClassification(SingletonTemplate):
    """A text, its label and a plausible wrong label for the classification task
    ``task_description`` (a labelled example with a hard negative)."""

    task_description: str = Field(min_length=1, description="The classification task")
    language: str = Field(min_length=1, description="The language of the text")
    clarity: str = Field(min_length=1, description='How clear the text is, e.g. "clear", "ambiguous"')
    difficulty: str = Field(min_length=1, description='The schooling needed to read it, e.g. "high school"')
    OutputSchema = TextClassificationOutput

    def build(self) -> Workflow:
        prompt = ("Write one labelled example for this text-classification task: {{task}}\nThe text is in "
                  "{{language}}, {{clarity}}, and needs {{difficulty}} education to understand. Reply with a "
                  'JSON object only, with the keys "input_text" (the text), "label" (its right label) and '
                  '"misleading_label" (a label that looks right but is wrong).')
        return linear_workflow([(prompt, "classification_example")], "classification_example", {
            "task": self.task_description, "language": self.language, "clarity": self.clarity,
            "difficulty": self.difficulty})

    def parse(self, result: TaskResult) -> list[TextClassificationOutput]:
        found = strings(json_in(text(result), dict), "input_text", "label", "misleading_label")
        if not found:
            raise self.fail(result, 'JSON object with "input_text", "label" and "misleading_label"')
        return [TextClassificationOutput(**found, model=result.model)]


class SemanticUnit(BaseModel):
    S1: str = Field(description="The first unit")
    S2: str = Field(description="A unit close to S1 (high_score)")
    S3: str = Field(description="A unit further from S1 (low_score)")


class SemanticTripletOutput(BaseModel):
    triplet: SemanticUnit
    model: str


class SemanticTriplet(SingletonTemplate):
    """Three units of text (sentences, paragraphs, ...) where S2 is as similar to S1 as
    ``high_score`` and S3 as ``low_score`` says, on a scale of 1 to 5 (graded similarity
    data for an embedding model)."""

    unit: str = Field(min_length=1, description='The kind of text, e.g. "sentence", "paragraph"')
    language: str = Field(min_length=1, description="The language of the units")
    high_score: int = Field(ge=1, le=5, description="How similar S2 is to S1, 1 to 5")
    low_score: int = Field(ge=1, le=5, description="How similar S3 is to S1, 1 to 5")
    difficulty: str = Field(min_length=1, description='The schooling needed to read them, e.g. "college"')
    OutputSchema = SemanticTripletOutput

    @model_validator(mode="after")
    def _s2_is_the_closer_one(self) -> SemanticTriplet:
        if self.low_score > self.high_score:
            raise ValueError(f"low_score ({self.low_score}) is above high_score ({self.high_score})")
        return self

    def build(self) -> Workflow:
        prompt = ("Write three {{unit}}s in {{language}}, S1, S2 and S3, that share some words. On a scale of "
                  "semantic similarity from 1 (unrelated) to 5 (the same meaning), S2 is {{high_score}} to S1 and "
                  "S3 is {{low_score}} to S1. They need {{difficulty}} education to understand; vary topic and "
                  'length. Reply with a JSON object only, with the keys "S1", "S2" and "S3".')
        return linear_workflow([(prompt, "semantic_triple")], "semantic_triple", {
            "unit": self.unit, "language": self.language, "high_score": str(self.high_score),
            "low_score": str(self.low_score), "difficulty": self.difficulty})

    def parse(self, result: TaskResult) -> list[SemanticTripletOutput]:
        found = strings(json_in(text(result), dict), "S1", "S2", "S3")
        if not found:
            raise self.fail(result, 'JSON object with "S1", "S2" and "S3"')
        return [SemanticTripletOutput(triplet=SemanticUnit(**found), model=result.model)]
