"""Dria workflows on a real devnet: a workflow built with the real ``dria-workflows`` package
runs on a node as it is (its JSON, unconverted), and each way a workflow fails comes back to
the application as a ``TaskErrored`` with its code and words, with the fee refunded and the
money conserved.

One devnet for the module, with one node serving ``scripted`` (an OpenAI-compatible server
whose answers the test chooses: conditions and schema retries are then deterministic) and
the tiny model.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

import gridtask.sdk._checks as sdk_checks
from gridtask.devnet import DEVNET_MODELS_DIR, Devnet
from gridtask.exceptions import TaskErrored
from gridtask.node.executors.tiny_llm import TINY_LLM, build_tiny_llm
from gridtask.sdk import Client
from gridtask.types import TaskErrorCode, TaskType
from gridtask.workflows import as_json

from .conftest import assert_conserved, start_devnet
from .dria_built import ask_until_yes, with_schema
from .scripted_model import ScriptedModelServer, by_rules

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import dria_workflows as D

FEE = 7 * 10**15


class Verdict(BaseModel):
    verdict: str
    score: int


class Net:
    def __init__(self, devnet: Devnet, server: ScriptedModelServer) -> None:
        self.devnet, self.server = devnet, server


@pytest.fixture(scope="module")
def wf_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("workflows")
    tiny = build_tiny_llm(DEVNET_MODELS_DIR / TINY_LLM).resolve()
    rules = by_rules(
        ("Ask a question about the sea", ["Why is it blue?", "Why is it salty?"]),
        ("Answer: Why is it blue?", "no idea"),
        ("Answer: Why is it salty?", "yes, salt"),
        ("Judge this", '{"verdict": "good"}'),  # no score: invalid, asked again
        ("That answer is not valid", '{"verdict": "good", "score": 8}'),
    )

    def reply(messages: list[dict[str, str]]) -> str:
        if "Never valid" in messages[0]["content"]:  # and on every retry of that conversation
            return "I refuse to answer in JSON"
        return rules(messages)

    server = ScriptedModelServer(reply)
    devnet = asyncio.run(start_devnet(tmp, nodes=1, node_models=[f"openai:scripted={server.url}",
                                                                 f"llm:{TINY_LLM}={tiny}"]))
    try:
        yield Net(devnet, server)
    finally:
        devnet.stop()
        server.close()


async def submit_and_wait(net: Net, model: str, inputs: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                          *, unchecked: bool = False) -> tuple[dict[str, Any] | TaskErrored, int]:
    """Run one task; returns (its result or its TaskErrored, what the creator's balance gained)."""
    assert net.devnet.config is not None
    async with Client(config=net.devnet.config) as client:
        owed = await client.chain.balance_of()
        if unchecked:  # a client that does not check (another program): the node must refuse it
            monkeypatch.setattr(sdk_checks, "check_task", lambda *args: None)
        handle = await client.submit(TaskType.LLM, model, inputs, fee=FEE)
        monkeypatch.undo()
        try:
            outcome: dict[str, Any] | TaskErrored = await client.result(handle, timeout=90)
        except TaskErrored as exc:
            outcome = exc
        return outcome, await client.chain.balance_of() - owed


async def test_a_workflow_built_with_dria_workflows_runs_as_it_is(
    wf_net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = json.loads(ask_until_yes(16).model_dump_json())  # Dria's JSON, exactly as it dumps it
    asked = len(wf_net.server.bodies)
    result, refunded = await submit_and_wait(wf_net, "scripted", {"workflow": workflow}, monkeypatch)
    assert isinstance(result, dict), result
    # "no idea" does not contain "yes": target_if_not sends the run back to "ask"
    assert result["trace"] == ["ask", "answer", "ask", "answer"]
    assert json.loads(result["text"]) == ["Why is it salty?", "yes, salt"]
    assert result["stacks"] == {"history": ["Why is it blue?", "Why is it salty?"]}
    assert [b["max_tokens"] for b in wf_net.server.bodies[asked:]] == [16] * 4
    assert refunded == 0
    await assert_conserved(wf_net.devnet)


async def test_a_schema_answer_is_retried_on_the_node_until_it_validates(
    wf_net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = {"workflow": as_json(with_schema("Judge this", Verdict))}
    result, _ = await submit_and_wait(wf_net, "scripted", inputs, monkeypatch)
    assert isinstance(result, dict), result
    assert json.loads(result["text"]) == {"verdict": "good", "score": 8}
    await assert_conserved(wf_net.devnet)


@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ("schema never met", TaskErrorCode.WORKFLOW_FAILED, None),
        ("search", TaskErrorCode.UNSUPPORTED_OPERATOR, None),
        ("malformed", TaskErrorCode.INVALID_PARAMETERS,
         "workflow: task 'answer': messages[0].content: reads unknown placeholder {{nobody}}"),
    ],
)
async def test_a_failing_workflow_is_a_task_error_with_its_code_and_the_fee_comes_back(
    wf_net: Net, monkeypatch: pytest.MonkeyPatch, case: str, code: TaskErrorCode, words: str | None
) -> None:
    unchecked = False
    if case == "schema never met":
        inputs = {"workflow": as_json(with_schema("Never valid", Verdict))}
    elif case == "search":
        b = D.WorkflowBuilder(query="tides")
        b.search_step(search_query="{{query}}", outputs=[D.Write.new("found")])
        b.flow([D.Edge(source="0", target="_end")])
        b.set_return_value("found")
        inputs = {"workflow": json.loads(b.build().model_dump_json())}
    else:
        data = as_json(ask_until_yes(16))
        data["tasks"][1]["messages"][0]["content"] = "Answer: {{nobody}}"
        inputs, unchecked = {"workflow": data}, True
    asked = len(wf_net.server.bodies)
    outcome, refunded = await submit_and_wait(wf_net, "scripted", inputs, monkeypatch, unchecked=unchecked)
    assert isinstance(outcome, TaskErrored), outcome
    assert outcome.code == code
    assert (words or code.explanation) in str(outcome)
    assert refunded == FEE  # the fee came back to the creator's balance
    if case != "schema never met":
        assert len(wf_net.server.bodies) == asked  # refused before any model ran
    else:
        assert len(wf_net.server.bodies) == asked + 3  # three attempts, then the task error
    await assert_conserved(wf_net.devnet)


async def test_the_tiny_model_runs_a_dria_workflow_on_the_devnet(wf_net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = ask_until_yes(16)
    workflow.steps[1].condition.expression = D.Expression.NOT_CONTAINS  # the tiny model never says yes
    result, _ = await submit_and_wait(wf_net, TINY_LLM, {"workflow": as_json(workflow), "max_tokens": 8},
                                      monkeypatch)
    assert isinstance(result, dict), result
    assert result["trace"] == ["ask", "answer"]
    assert json.loads(result["text"]) == [result["memory"]["question"], result["memory"]["answer"]]
    await assert_conserved(wf_net.devnet)
