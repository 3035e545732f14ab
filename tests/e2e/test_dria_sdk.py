"""Dria's API on a real devnet: every singleton, model alternatives (one any-of task), execute of a list with
a slow and a failing task, and the seed example with only its imports changed.

One devnet for the module: two nodes serving the tiny model (``tiny-llm``); one serving the
tiny model under the name ``llama3.1:8b-instruct-fp16`` (what the seed example asks for)
and a scripted OpenAI-compatible model (``scripted``) that answers each singleton's prompt
in the format its parser reads; one serving ``held``, a model that answers only when the
test lets it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gridtask.chain.client import ChainClient, to_bytes32
from gridtask.config import save_config, secret_value
from gridtask.devnet import DEVNET_MODELS_DIR, Devnet
from gridtask.exceptions import ResultParseError, TaskAborted, TaskErrored, TaskTimeout
from gridtask.keys import Identity
from gridtask.node.executors.tiny_llm import TINY_LLM, build_tiny_llm
from gridtask.sdk import Client
from gridtask.sdk.dria import DatasetGenerator, Dria, DriaDataset, Model, Prompt, Task
from gridtask.sdk.dria.factory import (
    Answer,
    BackStory,
    Clair,
    EvaluatePrediction,
    EvolveComplexity,
    EvolveInstruct,
    EvolveQuality,
    GenerateCode,
    GenerateGraph,
    GenerateSubtopics,
    InstructionBacktranslation,
    IterateCode,
    ListExtender,
    MagPie,
    MultiHopQuestion,
    Question,
    RandomVars,
    Reasoning,
    ScoreComplexity,
    SelfInstruct,
    SemanticTriplet,
    ShortBio,
    Simple,
    SingletonTemplate,
    TextClassification,
    TextMatching,
    ValidatePrediction,
)
from gridtask.types import TaskState, TaskType
from gridtask.workflows import Edge, WorkflowBuilder, Write

from .conftest import assert_conserved, start_devnet
from .model_server import HeldModelServer
from .scripted_model import ScriptedModelServer

pytestmark = pytest.mark.e2e
LLAMA = Model.LLAMA3_1_8B_FP16.value
ROOT = Path(__file__).resolve().parents[2]

# What the scripted model answers, by a phrase of the singleton's prompt (first match wins).
SCRIPT = [
    ("subtopics of", '["tides", "reefs", "currents"]'),
    ("Rank these instructions", "[1] Score: 3\n[2] Score: 8"),
    ("You write queries", "1. How do I reset my password?\n2. Where is my invoice?"),
    ("<1hop>", "<1hop>Who?</1hop> <2hop>Where?</2hop> <3hop>Why?</3hop> <answer>Because.</answer>"),
    ("Extend this list", "1. plum\n2. apple\n3. cherry"),
    ("fenced block", "Here:\n```python\nprint('hi')\n```"),
    ("You are a teacher", "<reasoning>sign slip</reasoning><corrected_student_solution>x = 2"
                          "</corrected_student_solution>"),
    ("List the traits", "age, job"),
    ("Describe 2 different people", "1. age: 30; job: baker\n2. age: 41; job: smith"),
    ("#Given Prompt#", "## New Prompt: Explain tides, with one example and in under 50 words."),
    ("Give a one-word title", '{"title": "Tides", "words": 1}'),
    ("Rate the title", '```json\n{"rating": 4}\n```'),
    ("Revise this", "Revised:\n```python\nprint('hi there')\n```"),
    ("Make this instruction harder", "New instruction: Explain tides and name the two forces behind them."),
    ("Improve the response below", "Improved response: Tides are the sea's rise and fall, pulled by the moon."),
    ("Build a knowledge graph", '[{"node_1": "moon", "node_2": "tide", "edge": "the moon pulls the tide"}, '
                                '{"node_1": "tide", "node_2": "sea", "edge": "tides move the sea"}]'),
    ("text-matching task", '{"input": "Why do tides happen?", "positive_document": "The moon pulls the sea."}'),
    ("text-classification task", '```json\n{"input_text": "Lovely film.", "label": "positive", '
                                 '"misleading_label": "negative"}\n```'),
    ("semantic similarity from 1", '{"S1": "The sea rises.", "S2": "The tide comes in.", "S3": "Sea salt is cheap."}'),
    ("Judge a predicted answer", "[partially_correct]"),
    ("say the same as the correct answer", "false"),
    ("Rate how well this answer", "Right, but terse.\nScore: 4"),
    ("Think out loud", "The moon's pull is uneven across the Earth, so the sea bulges."),
]


def scripted_reply(messages: list[dict[str, str]]) -> str:
    """Answer a singleton's prompt in the format its parser expects (``SCRIPT``), and
    anything else with ``re: <prompt>``."""
    prompt = messages[-1]["content"]
    return next((a for phrase, a in SCRIPT if phrase in prompt), f"re: {prompt[:60]}")


class Net:
    def __init__(self, net: Devnet, config: Path, held: HeldModelServer) -> None:
        self.devnet, self.config_path, self.held = net, config, held
        assert net.config is not None
        self.config = net.config


@pytest.fixture(scope="module")
def dria_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("dria")
    tiny = build_tiny_llm(DEVNET_MODELS_DIR / TINY_LLM).resolve()
    scripted, held = ScriptedModelServer(scripted_reply), HeldModelServer()

    async def start() -> Devnet:
        net = await start_devnet(tmp, nodes=2, node_models=[f"llm:{TINY_LLM}={tiny}"])
        net.add_node([f"llm:{LLAMA}={tiny}", f"openai:scripted={scripted.url}"])
        net.add_node([f"openai:held={held.url}"])
        await net.wait_nodes()
        return net

    net = asyncio.run(start())
    try:
        assert net.config is not None
        yield Net(net, save_config(net.config, tmp / "config.json"), held)
    finally:
        net.stop()
        scripted.close()
        held.close()


def dria_for(net: Net) -> Dria:
    return Dria(config=net.config)


CASES: list[tuple[SingletonTemplate, dict[str, Any]]] = [
    (Simple(prompt="Hey there!"), {"generation": "re: Hey there!"}),
    (EvolveInstruct(prompt="Explain tides.", mutation_type="CONCRETIZE"),
     {"mutated_prompt": "Explain tides, with one example and in under 50 words.", "original_prompt": "Explain tides."}),
    (ScoreComplexity(instructions=["add 2 and 2", "prove Fermat"]), {"score": 3}),
    (SelfInstruct(num_instructions=2, criteria_for_query_generation="short", application_description="a help desk",
                  context="billing"), {"instructions": ["How do I reset my password?", "Where is my invoice?"]}),
    (MagPie(instructor_persona="a teacher", responding_persona="a pupil", num_turns=2), {}),
    (GenerateSubtopics(topic="the sea"), {"subtopic": "tides"}),
    (Question(context="The sea has tides.", persona="a child"), {"question": "re: You are a child. Read this text"}),
    (Answer(context="The sea has tides.", question="Why?", persona="a sailor"), {"question": "Why?"}),
    (MultiHopQuestion(chunks=["a", "b", "c"]), {"one_hop": "Who?", "answer": "Because."}),
    (ListExtender(e_list=["apple", "pear"]), {"extended_list": ["apple", "pear", "plum", "cherry"]}),
    (GenerateCode(instruction="print hi", language="python"), {"code": "print('hi')"}),
    (Clair(task="solve x + 1 = 3", student_solution="x = 4"), {"corrected_student_solution": "x = 2"}),
    (RandomVars(simulation_description="a village", num_of_samples=2), {"persona_traits": ["age: 30", "job: baker"]}),
    (ShortBio(persona_traits=["age: 30"], simulation_description="a village"), {}),
    (BackStory(persona_traits=["age: 30"], simulation_description="a village"), {}),
    (IterateCode(code="print('hi')", instruction="greet everyone", language="python"),
     {"code": "print('hi')", "iterated_code": "print('hi there')"}),
    (EvolveComplexity(instruction="Explain tides."),
     {"evolved_instruction": "Explain tides and name the two forces behind them.", "instruction": "Explain tides."}),
    (EvolveQuality(prompt="What are tides?", response="Sea moves.", method="DETAILS"),
     {"evolved_response": "Tides are the sea's rise and fall, pulled by the moon.", "method": "DETAILS"}),
    (GenerateGraph(context="The moon pulls the tides of the sea."),
     {"graph": {"node_1": "moon", "node_2": "tide", "edge": "the moon pulls the tide"}}),
    (TextMatching(task_description="match questions to answers", language="English"),
     {"input": "Why do tides happen?", "positive_document": "The moon pulls the sea."}),
    (TextClassification(task_description="film review sentiment", language="English", clarity="clear",
                        difficulty="high school"),
     {"input_text": "Lovely film.", "label": "positive", "misleading_label": "negative"}),
    (SemanticTriplet(unit="sentence", language="English", high_score=4, low_score=1, difficulty="college"),
     {"triplet": {"S1": "The sea rises.", "S2": "The tide comes in.", "S3": "Sea salt is cheap."}}),
    (EvaluatePrediction(prediction="The moon.", question="What pulls the tides?", context="The moon and sun do."),
     {"evaluation": "[partially_correct]", "question": "What pulls the tides?"}),
    (ValidatePrediction(prediction="The sun.", correct_answer="The moon."), {"validation": False}),
    (InstructionBacktranslation(instruction="What pulls the tides?", generation="The moon."),
     {"score": "4", "reasoning": "Right, but terse."}),
    (Reasoning(prompt="Why are there two tides a day?"),
     {"reasoning": "The moon's pull is uneven across the Earth, so the sea bulges."}),
]


@pytest.mark.parametrize("singleton,expected", CASES, ids=[type(s).__name__ for s, _ in CASES])
async def test_each_singleton_runs_on_a_node_and_its_parser_reads_the_answer(
        dria_net: Net, singleton: SingletonTemplate, expected: dict[str, Any]) -> None:
    """The workflow runs on the devnet (a node with the scripted model), the result comes
    back, and ``callback`` reads it into ``OutputSchema`` objects naming the model."""
    dria = dria_for(dria_net)
    results = await dria.execute(Task(workflow=singleton.workflow(), models=["scripted"]), timeout=120)
    assert len(results) == 1 and results[0].model == "scripted" and results[0].node
    outputs = singleton.callback(results)
    assert outputs and all(isinstance(o, type(singleton).OutputSchema) for o in outputs)
    assert all(o.model == "scripted" for o in outputs)  # type: ignore[attr-defined]
    first = outputs[0].model_dump()
    for field, value in expected.items():
        assert first[field] == value or str(first[field]).startswith(str(value)), (field, first)
    if isinstance(singleton, MagPie):  # every turn came from the workflow's memory
        turns = outputs[0].dialogue  # type: ignore[attr-defined]
        assert len(turns) == 2 and all("re: You are a" in t.instructor + t.responder for t in turns), results[0].memory
    if isinstance(singleton, RandomVars):
        assert len(outputs) == 2  # one output per person


async def test_a_prompt_makes_a_dataset_and_enrich_adds_a_field_on_the_devnet(dria_net: Net, tmp_path: Path) -> None:
    """Dria's ``Prompt``: a JSON-schema generation on a node (it checks the answer against the
    schema), as a dataset step over rows, then ``enrich`` over the entries."""

    class Title(BaseModel):
        title: str
        words: int

    class Rating(BaseModel):
        rating: int

    dataset = DriaDataset("prompted", path=tmp_path / "prompted")
    generator = DatasetGenerator(dataset, dria_for(dria_net), progress=False)
    rows = [{"body": f"The sea, part {i}."} for i in range(3)]
    await generator.generate(rows, Prompt("Give a one-word title to: {{text}}", Title, input_map={"text": "body"}),
                             ["scripted"])
    assert dataset.get_entries() == [{"title": "Tides", "words": 1}] * 3 and not dataset.failed
    await generator.enrich(Prompt("Rate the title {{title}} from 1 to 5.", Rating), ["scripted"])
    assert dataset.get_entries() == [{"title": "Tides", "words": 1, "rating": 4}] * 3 and not dataset.failed
    tasks = {r["task"] for r in dataset.records() if r.get("kind") == "done"}
    assert len(tasks) == 6  # six tasks on chain, each paid once
    async with ChainClient.from_config(dria_net.config, Identity.generate()) as chain:
        for key in tasks:
            info = await chain.get_task(bytes.fromhex(key.removeprefix("0x")))
            assert info is not None and info.state == TaskState.SUCCESS
    await assert_conserved(dria_net.devnet)


async def test_every_singleton_runs_on_the_tiny_model_at_once(dria_net: Net) -> None:
    """All singletons as one list on the tiny model: each produces a result from
    ``tiny-llm``; each parser either reads it into its schema or says what it lacked
    (``ResultParseError`` naming the task): the tiny model's text is gibberish."""
    singletons = [s for s, _ in CASES]
    dria = dria_for(dria_net)
    results = await dria.execute([Task(workflow=s.workflow(), models=[Model.TINY_LLM]) for s in singletons],
                                 timeout=240)
    assert not results.failures, results.failures
    assert len(results) == len(singletons)
    parsed = 0
    for singleton, result in zip(singletons, results, strict=True):
        assert result.model == TINY_LLM and str(result.result).strip()
        try:
            outputs = singleton.callback([result])
        except ResultParseError as exc:
            assert result.id in str(exc) and type(singleton).__name__ in str(exc)
        else:
            parsed += 1
            assert all(isinstance(o, BaseModel) and o.model == TINY_LLM for o in outputs)  # type: ignore[attr-defined]
    assert parsed >= 5  # the free-text singletons (Simple, Answer, ShortBio, ...) always parse
    await assert_conserved(dria_net.devnet)


UNSERVED = Model.GEMMA2_9B_OL.value  # no node of this devnet serves it


def node_of(net: Net, index: int) -> str:
    return net.devnet.node_identities[index].address


async def created_by(client: Client, task_id: str) -> Any:
    """The task's TaskCreated log."""
    return next(e for e in await client.events(task_id) if e.name == "TaskCreated")


async def test_alternatives_go_on_chain_as_one_any_of_task_and_the_result_names_the_model(dria_net: Net) -> None:
    """``[UNSERVED, "scripted"]``: one task, any-of, listing both; only node2 serves
    ``scripted``, so it runs there and the result says ``scripted``."""
    dria = dria_for(dria_net)
    results = await dria.execute(Task(workflow=Simple(prompt="Hi").workflow(), models=[UNSERVED, "scripted"]),
                                 timeout=120)
    assert len(results) == 1 and results[0].model == "scripted" and results[0].result == "re: Hi"
    assert results[0].node == node_of(dria_net, 2)
    async with Client(config=dria_net.config) as client:
        created = await created_by(client, results[0].id)
        assert [bytes(m) for m in created.args["model_ids"]] == [to_bytes32(UNSERVED), to_bytes32("scripted")]
        assert created.args["any_model"] is True


async def test_the_core_client_submits_an_any_of_task(dria_net: Net) -> None:
    """``Client.submit(..., any_model=True)``: the parameters name the first listed model the
    node the contract picked serves (the hash committed at creation covers them with the
    model left open: the node checks it and runs them)."""
    async with Client(config=dria_net.config) as client:
        handle = await client.submit(TaskType.LLM, [UNSERVED, "scripted"], {"prompt": "any of"}, any_model=True)
        output = await client.result(handle, timeout=120)
        assert "re: any of" in str(output)
        assert handle.model_run == "scripted" and handle.node == node_of(dria_net, 2)
        info = await client.task(handle.task_id)
        assert info is not None and info.state == TaskState.SUCCESS


async def test_an_all_of_task_still_needs_one_node_serving_every_model(dria_net: Net) -> None:
    """``[TINY_LLM, LLAMA]`` without ``any_model``: each is served, by different nodes, none
    serves both: it waits in the queue until its deadline, then is aborted and refunded."""
    async with Client(config=dria_net.config) as client:
        owed = await client.chain.balance_of()
        handle = await client.submit(TaskType.LLM, [TINY_LLM, LLAMA], {"prompt": "all of"}, fee=77 * 10**9,
                                     stage_timeout=5)
        info = await client.task(handle.task_id)
        assert info is not None and info.state == TaskState.QUEUED
        assert (await created_by(client, handle.task_id)).args["any_model"] is False
        with pytest.raises(TaskAborted, match="no progress by the QUEUED deadline"):
            await client.result(handle, timeout=60)
        assert await client.chain.balance_of() == owed + 77 * 10**9
    await assert_conserved(dria_net.devnet)


async def test_a_list_with_a_slow_and_a_failing_task_returns_what_finished(dria_net: Net) -> None:
    """One task is held by its model, one asks for an operator no node offers: at the
    timeout ``execute`` returns the finished one and names the others, with their errors;
    the slow task's key is given (it is still on chain)."""
    builder = WorkflowBuilder(query="tides")
    builder.search_step(search_query="{{query}}", outputs=[Write.new("found")])  # no node has a search backend
    builder.flow([Edge(source="0", target="_end")])
    builder.set_return_value("found")
    unrunnable = builder.build()
    dria = dria_for(dria_net)
    tasks = [Task(workflow=Simple(prompt="fast").workflow(), models=[Model.TINY_LLM]),
             Task(workflow=Simple(prompt="slow").workflow(), models=["held"]),
             Task(workflow=unrunnable, models=[Model.TINY_LLM])]
    started = asyncio.get_running_loop().time()
    # 15 s: before the held node gives up on its task (7.5 s before the devnet's 30 s stage deadline)
    results = await dria.execute(tasks, timeout=15)
    assert asyncio.get_running_loop().time() - started < 25
    assert len(results) == 1 and results[0].result and results[0].model == TINY_LLM
    failures = {f.index: f for f in results.failures}
    assert set(failures) == {1, 2}
    assert isinstance(failures[1].error, TaskTimeout) and not failures[1].finished
    assert failures[1].task_id and failures[1].task_id in str(failures[1].error)
    assert results.unfinished == [failures[1]]
    assert isinstance(failures[2].error, TaskErrored) and failures[2].finished
    assert dria_net.held.asked.is_set()  # the slow one really was running on its node
    async with Client(config=dria_net.config) as client:
        info = await client.task(failures[1].task_id)
        assert info is not None and info.state == TaskState.STARTED
    dria_net.held.release.set()  # let the node finish it
    await assert_conserved(dria_net.devnet)


async def test_a_single_task_raises_its_error(dria_net: Net) -> None:
    dria = dria_for(dria_net)
    with pytest.raises(TaskTimeout, match="did not finish within"):
        dria_net.held.release.clear()
        await dria.execute(Task(workflow=Simple(prompt="slow").workflow(), models=["held"]), timeout=15)
    dria_net.held.release.set()


SEED_EXAMPLE = '''\
import os
import asyncio
from dria.factory import Simple
from dria.client import Dria
from dria.models import Task, Model

dria = Dria(rpc_token=os.environ["DRIA_RPC_TOKEN"])

async def evaluate():
    simple = Simple()
    res = await dria.execute(
        Task(
            workflow=simple.workflow(prompt="Hey there!").model_dump(),
            models=[Model.LLAMA3_1_8B_FP16],
        ),
        timeout=45,
    )
    return simple.parse_result(res)


if __name__ == "__main__":
    asyncio.run(evaluate())
'''
"""The Python example of ../shared/seeds/000_bccb0f1adcc871a2.txt (Dria's "Tasks" page), verbatim."""


def seed_example() -> str:
    """The seed's example with only its three imports changed."""
    source = SEED_EXAMPLE
    for old, new in (("from dria.factory import Simple", "from gridtask.sdk.dria.factory import Simple"),
                     ("from dria.client import Dria", "from gridtask.sdk.dria.client import Dria"),
                     ("from dria.models import Task, Model", "from gridtask.sdk.dria.models import Task, Model")):
        assert old in source
        source = source.replace(old, new)
    assert "from dria" not in source and "import dria" not in source
    return source


async def test_the_seed_example_runs_with_only_its_imports_changed(dria_net: Net, tmp_path: Path) -> None:
    """``Dria(rpc_token=os.environ["DRIA_RPC_TOKEN"])`` (the application's key), one Simple task on
    ``Model.LLAMA3_1_8B_FP16`` (served by a devnet node under that name), in its own process."""
    script = tmp_path / "seed.py"
    script.write_text(seed_example())
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDTASK_")}
    env.update(GRIDTASK_CONFIG=str(dria_net.config_path), DRIA_RPC_TOKEN=secret_value(dria_net.config.private_key))
    async with Client(config=dria_net.config) as client:
        before = await client.chain.block_number()
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, str(script)], env=env, capture_output=True,
                                       text=True, timeout=150)
        assert proc.returncode == 0, proc.stderr[-3000:]
        events = await client.chain.get_logs(before, await client.chain.block_number())
        created = [e for e in events if e.name == "TaskCreated" and e.args["creator"] == client.identity.address]
        assert [list(map(bytes, e.args["model_ids"])) for e in created] == [[to_bytes32(LLAMA)]]
        info = await client.task(created[0].commitment or b"")
        assert info is not None and info.state == TaskState.SUCCESS


def test_seed_example_source_is_the_seed_with_three_imports_changed() -> None:
    source = seed_example()
    assert "Model.LLAMA3_1_8B_FP16" in source and 'Dria(rpc_token=os.environ["DRIA_RPC_TOKEN"])' in source
    assert source.count("gridtask.sdk.dria.") == 3
