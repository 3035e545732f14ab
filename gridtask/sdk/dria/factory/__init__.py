"""Dria's singletons (``dria.factory``): each has pydantic inputs, an ``OutputSchema``,
``workflow()`` and a parser (``callback`` / ``parse_result``)."""

from gridtask.sdk.dria.factory._base import SingletonTemplate
from gridtask.sdk.dria.factory.code import Clair, ClairOutput, CodeOutput, GenerateCode, IterateCode, IteratedCodeOutput
from gridtask.sdk.dria.factory.evaluate import (
    EVALUATION_LABELS,
    BacktranslationOutput,
    EvaluatePrediction,
    EvaluationOutput,
    InstructionBacktranslation,
    ValidatePrediction,
    ValidationOutput,
)
from gridtask.sdk.dria.factory.instruct import (
    MUTATION_TEMPLATES,
    QUALITY_METHODS,
    DialogueOutput,
    DialogueTurn,
    EvolveComplexity,
    EvolveInstruct,
    EvolveInstructOutput,
    EvolveOutput,
    EvolveQuality,
    EvolveQualityOutput,
    InstructionOutput,
    InstructionScore,
    MagPie,
    MutationType,
    QualityMethod,
    ScoreComplexity,
    SelfInstruct,
)
from gridtask.sdk.dria.factory.persona import (
    BackStory,
    BackstoryOutput,
    BioOutput,
    PersonaBackstory,
    PersonaBio,
    RandomVarOutput,
    RandomVars,
    ShortBio,
)
from gridtask.sdk.dria.factory.qa import (
    QA,
    Answer,
    AnswerOutput,
    ExtendedListOutput,
    GenerateSubtopics,
    ListExtender,
    MultiHopQuestion,
    Question,
    QuestionOutput,
    QuestionSet,
    SubtopicsOutput,
)
from gridtask.sdk.dria.factory.simple import Reasoning, ReasoningSchema, Simple, SimpleOutput
from gridtask.sdk.dria.factory.text import (
    GenerateGraph,
    GraphOutput,
    GraphRelation,
    SemanticTriplet,
    SemanticTripletOutput,
    SemanticUnit,
    TextClassification,
    TextClassificationOutput,
    TextMatching,
    TextMatchingOutput,
)

SINGLETONS: list[type[SingletonTemplate]] = [
    Simple, EvolveInstruct, ScoreComplexity, SelfInstruct, MagPie, GenerateSubtopics, Question, Answer,
    MultiHopQuestion, ListExtender, GenerateCode, Clair, RandomVars, ShortBio, BackStory,
    IterateCode, EvolveComplexity, EvolveQuality, GenerateGraph, TextMatching, TextClassification, SemanticTriplet,
    EvaluatePrediction, ValidatePrediction, InstructionBacktranslation, Reasoning,
]
"""Every singleton (the tests run each one on a devnet)."""

__all__ = [
    "EVALUATION_LABELS", "MUTATION_TEMPLATES", "QA", "QUALITY_METHODS", "SINGLETONS", "Answer", "AnswerOutput",
    "BackStory", "BacktranslationOutput", "BackstoryOutput", "BioOutput", "Clair", "ClairOutput", "CodeOutput",
    "DialogueOutput", "DialogueTurn", "EvaluatePrediction", "EvaluationOutput", "EvolveComplexity",
    "EvolveInstruct", "EvolveInstructOutput", "EvolveOutput", "EvolveQuality", "EvolveQualityOutput",
    "ExtendedListOutput", "GenerateCode", "GenerateGraph", "GenerateSubtopics", "GraphOutput", "GraphRelation",
    "InstructionBacktranslation", "InstructionOutput", "InstructionScore", "IterateCode", "IteratedCodeOutput",
    "ListExtender", "MagPie", "MultiHopQuestion", "MutationType", "PersonaBackstory", "PersonaBio", "QualityMethod",
    "Question", "QuestionOutput", "QuestionSet", "RandomVarOutput", "RandomVars", "Reasoning", "ReasoningSchema",
    "ScoreComplexity", "SelfInstruct", "SemanticTriplet", "SemanticTripletOutput", "SemanticUnit", "ShortBio",
    "Simple", "SimpleOutput", "SingletonTemplate", "SubtopicsOutput", "TextClassification",
    "TextClassificationOutput", "TextMatching", "TextMatchingOutput", "ValidatePrediction", "ValidationOutput",
]
