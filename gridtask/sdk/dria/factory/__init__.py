"""Dria's singletons (``dria.factory``): each has pydantic inputs, an ``OutputSchema``,
``workflow()`` and a parser (``callback`` / ``parse_result``)."""

from gridtask.sdk.dria.factory._base import SingletonTemplate
from gridtask.sdk.dria.factory.code import Clair, ClairOutput, CodeOutput, GenerateCode
from gridtask.sdk.dria.factory.instruct import (
    MUTATION_TEMPLATES,
    DialogueOutput,
    DialogueTurn,
    EvolveInstruct,
    EvolveInstructOutput,
    InstructionOutput,
    InstructionScore,
    MagPie,
    MutationType,
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
from gridtask.sdk.dria.factory.simple import Simple, SimpleOutput

SINGLETONS: list[type[SingletonTemplate]] = [
    Simple, EvolveInstruct, ScoreComplexity, SelfInstruct, MagPie, GenerateSubtopics, Question, Answer,
    MultiHopQuestion, ListExtender, GenerateCode, Clair, RandomVars, ShortBio, BackStory,
]
"""Every singleton (the tests run each one on a devnet)."""

__all__ = [
    "MUTATION_TEMPLATES", "QA", "SINGLETONS", "Answer", "AnswerOutput", "BackStory", "BackstoryOutput",
    "BioOutput", "Clair", "ClairOutput", "CodeOutput", "DialogueOutput", "DialogueTurn", "EvolveInstruct",
    "EvolveInstructOutput", "ExtendedListOutput", "GenerateCode", "GenerateSubtopics", "InstructionOutput",
    "InstructionScore", "ListExtender", "MagPie", "MultiHopQuestion", "MutationType", "PersonaBackstory",
    "PersonaBio", "Question", "QuestionOutput", "QuestionSet", "RandomVarOutput", "RandomVars",
    "ScoreComplexity", "SelfInstruct", "ShortBio", "Simple", "SimpleOutput", "SingletonTemplate",
    "SubtopicsOutput",
]
