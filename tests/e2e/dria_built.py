"""Workflows built with the real ``dria-workflows`` package, shared by the node's engine
tests and the devnet's: one builder each, so both run the same JSON Dria's builder gives."""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import BaseModel

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import dria_workflows as D


def ask_until_yes(max_tokens: int) -> Any:
    """Ask a question about the sea, answer it, and ask again (``target_if_not``) until the
    answer contains "yes"; each question is pushed on the ``history`` stack."""
    b = D.WorkflowBuilder(topic="the sea")
    b.set_max_tokens(max_tokens)
    b.generative_step(id="ask", prompt="Ask a question about {{topic}}.", operator=D.Operator.GENERATION,
                      outputs=[D.Write.new("question"), D.Push.new("history")])
    b.generative_step(id="answer", prompt="Answer: {{question}}", operator=D.Operator.GENERATION,
                      outputs=[D.Write.new("answer")])
    b.flow([D.Edge(source="ask", target="answer"),
            D.Edge(source="answer", target="_end", condition=D.ConditionBuilder.build(
                expected="yes", expression=D.Expression.CONTAINS, input=D.Read.new("answer", True),
                target_if_not="ask"))])
    b.set_return_value(["question", "answer"])
    return b.build()


def with_schema(prompt: str, schema: type[BaseModel]) -> Any:
    """One step whose answer must match ``schema`` (the node retries until it does)."""
    b = D.WorkflowBuilder(q=prompt)
    b.generative_step(prompt="{{q}}", operator=D.Operator.GENERATION, schema=schema, outputs=[D.Write.new("answer")])
    b.flow([D.Edge(source="0", target="_end")])
    b.set_return_value("answer")
    return b.build()
