"""The workflow engine inside a node's LLM executors: a workflow built with the real
``dria-workflows`` package runs on the tiny model and on an OpenAI-compatible server, and
each way a workflow can fail becomes a task error with its own code."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from gridtask.node.executors.base import InvalidTaskParameters
from gridtask.node.executors.llm import LocalLLMExecutor, OpenAICompatibleExecutor
from gridtask.node.executors.tiny_llm import TINY_LLM
from gridtask.types import TaskErrorCode
from gridtask.workflows import as_json
from tests.e2e.dria_built import ask_until_yes, with_schema
from tests.e2e.scripted_model import ScriptedModelServer, by_rules

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import dria_workflows as D


class Answer(BaseModel):
    answer: str
    confidence: int


@pytest.fixture
def tiny(tiny_llm_dir: Path) -> LocalLLMExecutor:
    return LocalLLMExecutor(TINY_LLM, tiny_llm_dir, max_new_tokens_limit=64)


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    served = ScriptedModelServer(by_rules(
        ("Ask a question", ["Why is it blue?", "Why is it salty?"]),
        ("Answer: Why is it blue?", "no idea"),
        ("Answer: Why is it salty?", "yes: salt"),
        ("Is water wet?", '{"answer": "yes"}'),
        ("That answer is not valid", '{"answer": "yes", "confidence": 9}'),
    ))
    yield served
    served.close()


async def test_a_real_dria_workflow_runs_on_the_tiny_model_deterministically(tiny: LocalLLMExecutor) -> None:
    workflow = ask_until_yes(8)
    workflow.config.max_steps = 6  # the tiny model never says "yes": ask, answer, ask, answer, ask, answer
    inputs = {"workflow": as_json(workflow)}
    with pytest.raises(InvalidTaskParameters) as failed:
        await tiny.run(TINY_LLM, inputs)
    assert failed.value.code == TaskErrorCode.WORKFLOW_FAILED
    assert "max_steps of 6 reached" in str(failed.value)
    inputs["workflow"]["steps"][1]["condition"]["expression"] = "NotContains"  # now it ends at once
    first = await tiny.run(TINY_LLM, inputs)
    assert first == await tiny.run(TINY_LLM, inputs)  # greedy: the same text on every node
    assert first["trace"] == ["ask", "answer"]
    question = await tiny.chat([{"role": "user", "content": "Ask a question about the sea."}], 8, None)
    assert first["memory"]["question"] == question != ""
    assert json.loads(first["text"]) == [question, first["memory"]["answer"]]
    assert first["stacks"] == {"history": [question]}


async def test_the_tiny_model_cannot_match_a_schema_and_the_task_fails_with_code_6(tiny: LocalLLMExecutor) -> None:
    with pytest.raises(InvalidTaskParameters) as failed:
        await tiny.run(TINY_LLM, {"workflow": as_json(with_schema("Is water wet?", Answer)), "max_tokens": 4})
    assert failed.value.code == TaskErrorCode.WORKFLOW_FAILED
    assert "task '0': schema: the answer did not match the task's JSON schema in 3 attempts" in str(failed.value)


async def test_search_is_refused_before_the_model_loads(tiny_llm_dir: Path) -> None:
    fresh = LocalLLMExecutor(TINY_LLM, tiny_llm_dir)
    b = D.WorkflowBuilder(query="x")
    b.search_step(search_query="{{query}}", outputs=[D.Write.new("r")])
    b.flow([D.Edge(source="0", target="_end")])
    b.set_return_value("r")
    with pytest.raises(InvalidTaskParameters) as refused:
        await fresh.run(TINY_LLM, {"workflow": as_json(b.build())})
    assert refused.value.code == TaskErrorCode.UNSUPPORTED_OPERATOR
    assert "task '0': operator: operator 'search' is not offered" in str(refused.value)
    assert fresh._model is None  # no model ran, none was even loaded


async def test_a_malformed_workflow_is_invalid_parameters_naming_task_and_field(tiny: LocalLLMExecutor) -> None:
    data = as_json(ask_until_yes(8))
    data["tasks"][1]["outputs"][0]["type"] = "append"
    with pytest.raises(InvalidTaskParameters) as refused:
        await tiny.run(TINY_LLM, {"workflow": data})
    assert refused.value.code == TaskErrorCode.INVALID_PARAMETERS
    assert "task 'answer': outputs.0.type: Input should be 'write', 'insert' or 'push'" in str(refused.value)


async def test_on_a_server_a_condition_loops_back_until_it_holds(server: ScriptedModelServer) -> None:
    executor = OpenAICompatibleExecutor("scripted", server.url)
    result = await executor.run("scripted", {"workflow": as_json(ask_until_yes(8))})
    assert result["trace"] == ["ask", "answer", "ask", "answer"]  # "no idea" -> target_if_not: ask again
    assert json.loads(result["text"]) == ["Why is it salty?", "yes: salt"]
    assert result["stacks"]["history"] == ["Why is it blue?", "Why is it salty?"]
    assert [body["max_tokens"] for body in server.bodies] == [8] * 4  # config.max_tokens


async def test_on_a_server_a_schema_is_sent_and_a_bad_answer_retried(server: ScriptedModelServer) -> None:
    executor = OpenAICompatibleExecutor("scripted", server.url)
    result = await executor.run("scripted", {"workflow": as_json(with_schema("Is water wet?", Answer))})
    assert json.loads(result["text"]) == {"answer": "yes", "confidence": 9}
    first, retry = server.bodies
    assert first["response_format"]["json_schema"]["schema"] == Answer.model_json_schema()
    assert retry["messages"][1] == {"role": "assistant", "content": '{"answer": "yes"}'}
    assert "'confidence' is a required property" in retry["messages"][2]["content"]
