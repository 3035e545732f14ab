"""The Dria layer, one module at a time: models and groups, tasks and results (``parse``),
singletons in both styles and their parsers, ``Dria.execute`` over a stand-in core client,
and ``DatasetGenerator`` over a stand-in ``Dria`` (pipelines, retries, the journal)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gridtask.chain.client import to_bytes32
from gridtask.exceptions import ConfigError, ResultParseError, TaskAborted, TaskErrored, TaskTimeout, ValidationError
from gridtask.sdk import Model as SdkModel
from gridtask.sdk import Simple as SdkSimple
from gridtask.sdk.dria import SINGLETONS, DatasetGenerator, Dria, DriaDataset, ExecuteResults, Model, Task, TaskResult
from gridtask.sdk.dria.client import TaskFailure, on_chain
from gridtask.sdk.dria.factory import (
    QA,
    Answer,
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
    MultiHopQuestion,
    Question,
    Reasoning,
    ScoreComplexity,
    SemanticTriplet,
    Simple,
    TextClassification,
    TextMatching,
    ValidatePrediction,
)
from gridtask.sdk.dria.prompt import Prompt
from gridtask.types import TaskType
from gridtask.workflows import as_json, parse_workflow

# ------------------------------------------------------------------ models


def test_groups_expand_to_members_in_order_without_duplicates() -> None:
    names = Model.expand([Model.TINY_LLM, Model.LOCAL, Model.CODER])
    assert names[0] == "tiny-llm" and names.count("tiny-llm") == 1
    assert names[1:] == [m.value for m in Model.CODER.members()]
    assert Model.expand(Model.EMBEDDING) == ["all-minilm-l6-v2"]
    assert Model.expand("my-own-model") == ["my-own-model"]  # a name the enum does not know


def test_every_model_fits_on_chain_and_every_group_is_refused_as_a_model_id() -> None:
    for model in Model:
        if model.is_group:
            assert model.members() and not any(m.is_group for m in model.members())
            with pytest.raises(ValidationError, match="is a group"):
                _ = model.model_id
        else:
            assert model.model_id == to_bytes32(model.value)
    for group in ("SMALL", "MID", "LARGE", "EMBEDDING", "CODER", "REASONING", "OLLAMA", "OPENAI"):
        assert Model[group].is_group


def test_every_dria_model_name_that_fits_on_chain_is_ours_with_the_same_value() -> None:
    """Dria 0.0.124's ``Model`` (names and values copied from the published package): each
    that fits a 32-byte model ID is here; the longer ones are the documented exceptions."""
    published = json.loads((Path(__file__).parent / "dria_0_0_124_models.json").read_text())["models"]
    too_long = {name for name, value in published.items() if len(value.encode()) > 32}
    assert too_long == {"NOUS_THETA", "PHI3_MEDIUM_128K", "LLAMA_3_1_70B_OR", "LLAMA_3_1_405B_OR",
                        "LLAMA_3_1_70B_OR_F", "LLAMA_3_3_70B_OR", "ANTHROPIC_HAIKU_3_5_OR",
                        "NOUS_HERMES_405B_OR", "DEEPSEEK_R1_70B_OR"}
    for name, value in published.items():
        if name not in too_long:
            assert Model[name].value == value, name
    assert Model.DEEPSEEK_2_5_OR is Model.DEEPSEEK_CHAT_OR  # Dria's two names for one model
    assert Model.QWEN2_5_CODER_32B_OR in Model.CODER.members()


def test_bad_model_names_are_refused_before_anything_is_paid() -> None:
    with pytest.raises(ValidationError, match="1 to 32 bytes"):
        Model.expand(["x" * 33])
    with pytest.raises(ValidationError, match="at least one model"):
        Model.expand([])
    with pytest.raises(ValueError):
        Task(workflow=Simple(prompt="a").workflow(), models=[])


def test_the_sdk_reexports_the_dria_types() -> None:
    assert SdkModel is Model and SdkSimple is Simple


# ------------------------------------------------------------------ TaskResult.parse


@pytest.mark.parametrize("text", [
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    '[{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}]',
    '{"tool_calls": [{"function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]}',
    '<function=get_weather>{{"city": "Paris"}}</function>',
    'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
])
def test_parse_reads_function_calls_in_every_format_for_any_model(text: str) -> None:
    """Dria 0.0.124 looks the parser up by model and fails for models outside its table."""
    result = TaskResult(id="0x1", task_input={}, result=text, model="my-own-model")
    calls = result.parse()
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]


def test_parse_of_a_result_without_a_call_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="holds no function call"):
        TaskResult(id="0x1", task_input={}, result="just text", model="m").parse()
    with pytest.raises(ValidationError, match="must be a JSON object"):
        TaskResult(id="0x1", task_input={}, result="<function=f>[1]</function>", model="m").parse()


# ------------------------------------------------------------------ singletons


def result(text: str, model: str = "tiny-llm", **memory: str) -> TaskResult:
    return TaskResult(id="0xabc", task_input={}, result=text, model=model, memory=memory)


def test_both_styles_build_the_same_workflow_and_parse() -> None:
    old = Simple()
    flow_old = old.workflow(prompt="Hey there!").model_dump()
    new = Simple(prompt="Hey there!")
    assert flow_old == new.workflow().model_dump()
    assert old.parse_result([result("hello")]) == "hello"
    outputs = new.callback([result("hello")])
    assert outputs[0].generation == "hello" and outputs[0].prompt == "Hey there!" and outputs[0].model == "tiny-llm"
    # the prompt is memory, never a template: braces in it are text
    assert Simple(prompt="{{x}}").workflow().external_memory == {"prompt": "{{x}}"}


def test_every_singleton_builds_a_valid_workflow_in_dria_format() -> None:
    inputs: dict[str, dict[str, Any]] = {
        "Simple": {"prompt": "p"}, "EvolveInstruct": {"prompt": "p", "mutation_type": "DEEPEN"},
        "ScoreComplexity": {"instructions": ["a", "b"]},
        "SelfInstruct": {"num_instructions": 2, "criteria_for_query_generation": "c",
                         "application_description": "a", "context": "x"},
        "MagPie": {"instructor_persona": "a", "responding_persona": "b", "num_turns": 3},
        "GenerateSubtopics": {"topic": "t"}, "Question": {"context": "c", "persona": "p"},
        "Answer": {"context": "c", "question": "q", "persona": "p"}, "MultiHopQuestion": {"chunks": ["a", "b", "c"]},
        "ListExtender": {"e_list": ["a"]}, "GenerateCode": {"instruction": "i", "language": "python"},
        "Clair": {"task": "t", "student_solution": "s"}, "RandomVars": {"simulation_description": "d"},
        "ShortBio": {"persona_traits": ["t"], "simulation_description": "d"},
        "BackStory": {"persona_traits": ["t"], "simulation_description": "d"},
        "IterateCode": {"code": "print(1)", "instruction": "i", "language": "python"},
        "EvolveComplexity": {"instruction": "i"},
        "EvolveQuality": {"prompt": "p", "response": "r", "method": "DEEPENING"},
        "GenerateGraph": {"context": "c"}, "TextMatching": {"task_description": "t", "language": "English"},
        "TextClassification": {"task_description": "t", "language": "English", "clarity": "clear",
                               "difficulty": "college"},
        "SemanticTriplet": {"unit": "sentence", "language": "English", "high_score": 4, "low_score": 2,
                            "difficulty": "college"},
        "EvaluatePrediction": {"prediction": "p", "question": "q", "context": "c"},
        "ValidatePrediction": {"prediction": "p", "correct_answer": "a"},
        "InstructionBacktranslation": {"instruction": "i", "generation": "g"}, "Reasoning": {"prompt": "p"},
    }
    assert set(inputs) == {s.__name__ for s in SINGLETONS} and len(SINGLETONS) >= 9
    for singleton in SINGLETONS:
        flow = singleton(**inputs[singleton.__name__]).workflow()
        dumped = json.loads(json.dumps(flow.model_dump(mode="json")))
        assert parse_workflow(dumped).return_value is not None
        assert singleton().workflow(**inputs[singleton.__name__]).model_dump() == flow.model_dump()


def test_inputs_are_checked_with_one_clear_error() -> None:
    with pytest.raises(ValidationError, match="no inputs given; it needs \\['prompt'\\]"):
        Simple().workflow()
    with pytest.raises(ValidationError, match="mutation_type"):
        EvolveInstruct(prompt="p", mutation_type="SIDEWAYS")
    with pytest.raises(ValidationError, match="chunks"):
        MultiHopQuestion(chunks=["only one"])
    with pytest.raises(ValidationError, match="method"):
        EvolveQuality(prompt="p", response="r", method="LOUDER")
    with pytest.raises(ValidationError, match="low_score \\(4\\) is above high_score \\(2\\)"):
        SemanticTriplet(unit="sentence", language="English", high_score=2, low_score=4, difficulty="college")


def test_parsers_read_well_formed_answers() -> None:
    evolved = EvolveInstruct(prompt="p", mutation_type="DEEPEN").callback([result("## New Prompt: deeper {p}")])
    assert evolved[0].mutated_prompt == "deeper p" and evolved[0].original_prompt == "p"
    scores = ScoreComplexity(instructions=["a", "b"]).callback([result("[1] Score: 2\n[2] Score: 9")])
    assert [(s.instruction, s.score) for s in scores] == [("a", 2), ("b", 9)]
    subtopics = GenerateSubtopics(topic="t").callback([result('```json\n["x", "y"]\n```')])
    assert [s.subtopic for s in subtopics] == ["x", "y"]
    code = GenerateCode(instruction="i", language="python").callback([result("```python\nprint(1)\n```")])
    assert code[0].code == "print(1)"
    clair = Clair(task="t", student_solution="s").callback(
        [result("<reasoning>r</reasoning> <corrected_student_solution>c</corrected_student_solution>")])
    assert (clair[0].reasoning, clair[0].corrected_student_solution) == ("r", "c")
    multi = MultiHopQuestion(chunks=["a", "b", "c"]).parse_result(
        [result("<1hop>a?</1hop><2hop>b?</2hop><3hop>c?</3hop><answer>d</answer>")])
    assert multi[0]["1-hop"] == "a?" and multi[0]["answer"] == "d"  # Dria's aliases in the old style
    questions = Question(context="c", persona="p", num_questions=2).callback([result("1. one?\n2. two?\n3. three?")])
    assert [q.question for q in questions] == ["one?", "two?"]
    iterated = IterateCode(code="print(1)", instruction="print 2", language="python").callback(
        [result("Sure:\n```python\nprint(2)\n```\nDone.")])
    assert (iterated[0].code, iterated[0].iterated_code, iterated[0].language) == ("print(1)", "print(2)", "python")
    evolved = EvolveComplexity(instruction="add 2 and 2").callback([result("New instruction: add 2 and 2 in base 3")])
    assert evolved[0].evolved_instruction == "add 2 and 2 in base 3" and evolved[0].instruction == "add 2 and 2"
    quality = EvolveQuality(prompt="p", response="r", method="DETAILS").parse_result([result("Improved response: r!")])
    assert quality == [{"response": "r", "evolved_response": "r!", "method": "DETAILS", "model": "tiny-llm"}]
    graph = GenerateGraph(context="c").callback([result(
        'Here it is:\n```json\n[{"node_1": "sea", "node_2": "tide", "edge": "the sea has tides"},\n'
        ' {"node_1": "moon"}, "junk", {"node_1": "moon", "node_2": "tide", "edge": "pulls"}]\n```')])
    assert [(g.graph.node_1, g.graph.node_2, g.graph.edge) for g in graph] == [
        ("sea", "tide", "the sea has tides"), ("moon", "tide", "pulls")]  # the partial entries are left out
    matching = TextMatching(task_description="t", language="English").parse_result(
        [result('Sure! {"input": "a short text", "positive_document": "a longer text"} Hope it helps.')])
    assert matching == [{"input": "a short text", "positive_document": "a longer text", "model": "tiny-llm"}]
    classified = TextClassification(task_description="t", language="English", clarity="clear",
                                    difficulty="college").callback(
        [result('```json\n{"input_text": "great film", "label": "positive", "misleading_label": "negative"}\n```')])
    assert (classified[0].input_text, classified[0].label, classified[0].misleading_label) == (
        "great film", "positive", "negative")
    triplet = SemanticTriplet(unit="sentence", language="English", high_score=4, low_score=2,
                              difficulty="college").parse_result([result('{"S1": "a", "S2": "b", "S3": "c"}')])
    assert triplet == [{"triplet": {"S1": "a", "S2": "b", "S3": "c"}, "model": "tiny-llm"}]
    evaluate = EvaluatePrediction(prediction="p", question="q", context="c")
    assert [evaluate.callback([result(t)])[0].evaluation for t in (
        "[correct]", "Label: [Partially_Correct]", "[incorrect]", "It is [irrelevant].")] == [
        "[correct]", "[partially_correct]", "[incorrect]", "[irrelevant]"]
    validate = ValidatePrediction(prediction="p", correct_answer="a")
    assert [validate.callback([result(t)])[0].validation for t in ("true", "False.", "**TRUE**")] == [True, False, True]
    rated = InstructionBacktranslation(instruction="i", generation="g").callback(
        [result("Clear and complete, but Score: 3 would be harsh.\nScore: 4")])
    assert (rated[0].score, rated[0].reasoning) == ("4", "Clear and complete, but Score: 3 would be harsh.")
    reasoning = Reasoning(prompt="p").callback([result("  First, p means ...  ")])
    assert reasoning[0].reasoning == "First, p means ..." and reasoning[0].model == "tiny-llm"


@pytest.mark.parametrize("singleton,text,wanted", [
    (ScoreComplexity(instructions=["a", "b"]), "[1] Score: 2", "instruction(s) [2]"),
    (GenerateSubtopics(topic="t"), "words words", "list of subtopics"),
    (GenerateCode(instruction="i", language="python"), "no fence", "fenced code block"),
    (Clair(task="t", student_solution="s"), "<reasoning>r</reasoning>", "<corrected_student_solution>"),
    (MultiHopQuestion(chunks=["a", "b", "c"]), "<1hop>a</1hop>", "<2hop>"),
    (IterateCode(code="c", instruction="i", language="python"), "print(2)", "fenced code block"),
    (EvolveComplexity(instruction="i"), "New instruction:  ", "new instruction"),
    (EvolveQuality(prompt="p", response="r", method="HELPFULNESS"), "Improved response:", "improved response"),
    (GenerateGraph(context="c"), '[{"node_1": "a", "node_2": "b"}, 7]', '"node_1", "node_2", "edge"'),
    (TextMatching(task_description="t", language="English"), '{"input": "x", "positive_document": 3}',
     '"input" and "positive_document"'),
    (TextClassification(task_description="t", language="English", clarity="clear", difficulty="college"),
     "positive, I think", '"input_text", "label" and "misleading_label"'),
    (SemanticTriplet(unit="sentence", language="English", high_score=4, low_score=2, difficulty="college"),
     '["a", "b", "c"]', '"S1", "S2" and "S3"'),
    (EvaluatePrediction(prediction="p", question="q", context="c"), "correct", "label (one of [correct]"),
    (ValidatePrediction(prediction="p", correct_answer="a"), "It is not true", "true or false"),
    (InstructionBacktranslation(instruction="i", generation="g"), "Score: 9", "'Score: <1-5>'"),
    (Reasoning(prompt="p"), "  \n ", "reasoning"),
])
def test_an_answer_a_parser_cannot_read_is_a_typed_error_naming_the_task(singleton: Any, text: str,
                                                                        wanted: str) -> None:
    with pytest.raises(ResultParseError, match=f"{type(singleton).__name__}: the result of task 0xabc") as info:
        singleton.callback([result(text)])
    assert wanted in str(info.value)


# ------------------------------------------------------------------ Dria.execute (stand-in core client)


class Handle:
    def __init__(self, n: int, model_run: str) -> None:
        self.task_id = f"0x{n:064x}"
        self.node, self.fee, self.group, self.model_run = "0x" + "11" * 20, 1, None, model_run


class FakeClient:
    """The core client's surface that ``Dria`` uses; ``delays[prompt]`` makes a task slow,
    ``errors[prompt]`` makes it fail. ``counts[model]``: the nodes serving it (no node serves
    two); an any-of task runs the first listed that a node serves."""

    def __init__(self, counts: dict[str, int], delays: dict[str, float] | None = None,
                 errors: dict[str, Exception] | None = None) -> None:
        from gridtask.sdk._client import ClientState

        self.state = ClientState.OPENED
        self.counts, self.delays, self.errors = counts, delays or {}, errors or {}
        self.submitted: list[tuple[str, list[str], bool]] = []
        self.chain = self
        self.running = self.most_running = 0

    async def open(self) -> None:
        return None

    async def serving(self, models: list[str], *, any_model: bool = False) -> int:
        assert any_model or len(models) == 1  # one model, or a list of alternatives
        return sum(self.counts.get(m, 0) for m in models)

    async def submit(self, task_type: TaskType, models: list[str], inputs: dict[str, Any], **kw: Any) -> Handle:
        assert task_type == TaskType.LLM
        prompt = inputs["workflow"]["external_memory"]["prompt"]
        self.submitted.append((prompt, models, kw.get("any_model", False)))
        self.excluded = list(kw.get("exclude", ()))
        handle = Handle(len(self.submitted), next(m for m in models if self.counts.get(m)))
        handle.prompt = prompt  # type: ignore[attr-defined]
        return handle

    async def result(self, handle: Handle, timeout: float) -> dict[str, Any]:
        prompt = handle.prompt  # type: ignore[attr-defined]
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delays.get(prompt, 0.01))
        finally:
            self.running -= 1
        if prompt in self.errors:
            raise self.errors[prompt]
        return {"text": f"answer to {prompt}", "memory": {"response": f"answer to {prompt}"}}


def tasks(*prompts: str, models: list[Model | str] | None = None) -> list[Task]:
    return [Task(workflow=Simple(prompt=p).workflow(), models=models or [Model.SMALL]) for p in prompts]


async def test_execute_sends_the_alternatives_as_one_any_of_task_and_says_which_ran() -> None:
    """Model.SMALL has more members than a task lists on chain: the served one is among the
    four sent, in the group's order, as one any-of task; the result names the model that ran."""
    client = FakeClient({"llama3.1:8b-instruct-fp16": 4})
    results = await Dria(client=client).execute(tasks("a"), timeout=5)  # type: ignore[arg-type]
    small = Model.expand([Model.SMALL])
    assert client.submitted == [("a", [*small[:3], "llama3.1:8b-instruct-fp16"], True)]
    assert results[0].model == "llama3.1:8b-instruct-fp16"
    assert results[0].result == "answer to a" and results[0].memory["response"] == "answer to a"
    await Dria(client=client).execute(tasks("b", models=["tiny-llm", "llama3.1:8b-instruct-fp16"]), timeout=5)
    assert client.submitted[1] == ("b", ["tiny-llm", "llama3.1:8b-instruct-fp16"], True)  # two: as listed


async def test_a_group_from_the_start_is_refused_for_a_task_with_alternatives() -> None:
    client = FakeClient({"tiny-llm": 1})
    with pytest.raises(ValidationError, match="validate='always' runs each task as a group"):
        await Dria(client=client).execute(tasks("a"), timeout=5, validate="always")  # type: ignore[arg-type]
    assert client.submitted == []


def test_a_long_list_of_alternatives_keeps_the_served_ones_in_its_order() -> None:
    assert on_chain(["a", "b", "c", "d", "e", "f"], {"f": 1, "b": 2}) == ("a", "b", "c", "f")
    assert on_chain(["a", "b", "c", "d", "e"], {}) == ("a", "b", "c", "d")  # none served: the first four
    assert on_chain(["a", "b"], {}) == ("a", "b")


async def test_a_slow_task_holds_only_its_own_slot_and_the_timeout_names_it() -> None:
    """batch_size 2, six tasks, the first one slow: the five others finish through the
    second slot; at the timeout the slow one is named with its key, the rest returned."""
    client = FakeClient({"tiny-llm": 1}, delays={"slow": 30}, errors={"bad": TaskErrored(1, message="bad")})
    dria = Dria(client=client, batch_size=2)  # type: ignore[arg-type]
    started = time.monotonic()
    results = await dria.execute(tasks("slow", "a", "b", "bad", "c", "d"), timeout=1.5)
    assert time.monotonic() - started < 3
    assert isinstance(results, ExecuteResults) and [r.result for r in results] == [
        "answer to a", "answer to b", "answer to c", "answer to d"]
    assert [(f.index, type(f.error)) for f in results.failures] == [(0, TaskTimeout), (3, TaskErrored)]
    slow = results.unfinished[0]
    assert slow.task_id == f"0x{1:064x}" and slow.task_id in str(slow.error)


async def test_tasks_in_flight_follow_the_nodes_serving_their_model_across_calls() -> None:
    """Two per serving node (one running, one queued): more would sit in the contract's queue
    past their stage deadline. The slots are shared by concurrent ``execute`` calls."""
    client = FakeClient({"tiny-llm": 2, "llama3.2:1b": 1}, delays={str(i): 0.05 for i in range(40)})
    dria = Dria(client=client)  # type: ignore[arg-type]
    await asyncio.gather(*(dria.execute(t, timeout=10) for t in tasks(*map(str, range(20)), models=[Model.TINY_LLM])))
    assert client.most_running == 4
    client.most_running = 0
    await dria.execute(tasks(*map(str, range(20, 30)), models=["llama3.2:1b"]), timeout=10)
    assert client.most_running == 2


def test_rpc_token_is_the_paying_key_and_anything_else_is_a_clear_error(tmp_path: Path) -> None:
    key = "0x" + "42" * 32
    config = {"config_path": tmp_path / "none.json", "rpc_url": "http://127.0.0.1:9", "contract": "0x" + "00" * 20,
              "relay_url": "http://127.0.0.1:9"}
    dria = Dria(rpc_token=key, **config)
    assert dria.client.identity.private_key.hex() == "42" * 32
    with pytest.raises(ConfigError, match="rpc_token: gridtask takes the paying account's private key"):
        Dria(rpc_token="dria-community-token", **config)
    with pytest.raises(ValidationError, match="either a client or the options"):
        Dria(rpc_token=key, client=dria.client)


def test_drias_api_mode_and_log_level_are_taken_as_dria_takes_them(tmp_path: Path) -> None:
    config = {"config_path": tmp_path / "none.json", "rpc_url": "http://127.0.0.1:9", "contract": "0x" + "00" * 20,
              "relay_url": "http://127.0.0.1:9"}
    logger = logging.getLogger("gridtask")
    before = logger.level
    try:
        dria = Dria("0x" + "42" * 32, True, logging.WARNING, **config)  # Dria's own positional order
        assert dria.api_mode is True and logger.level == logging.WARNING
        Dria("0x" + "42" * 32, **config)  # no log_level: the level the program set stays
        assert logger.level == logging.WARNING
        with pytest.raises(ValidationError, match="log_level: a logging level"):
            Dria("0x" + "42" * 32, log_level="LOUD", **config)
        with pytest.raises(ValidationError, match="api_mode: must be True or False"):
            Dria("0x" + "42" * 32, api_mode="yes", **config)  # type: ignore[arg-type]
    finally:
        logger.setLevel(before)


async def test_a_single_task_raises_its_own_error() -> None:
    client = FakeClient({"tiny-llm": 1}, errors={"bad": TaskAborted("gone", fee=1)})
    with pytest.raises(TaskAborted):
        await Dria(client=client).execute(tasks("bad")[0], timeout=5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="non-empty list of Task"):
        await Dria(client=client).execute([], timeout=5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="timeout"):
        await Dria(client=client).execute(tasks("a"), timeout=0)  # type: ignore[arg-type]


# ------------------------------------------------------------------ DatasetGenerator (stand-in Dria)


class FakeDria:
    """``execute`` of one task: the answer is ``answer(prompt memory)``; ``fail[key]`` tries fail first."""

    def __init__(self, answer: Any, fail: dict[str, int] | None = None) -> None:
        self.answer, self.fail = answer, dict(fail or {})
        self.calls: list[dict[str, str]] = []
        self.excluded: list[list[str]] = []

    async def __aenter__(self) -> FakeDria:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, tasks: list[Task], timeout: float, exclude: list[str]) -> ExecuteResults:
        (task,) = tasks
        memory = task.workflow["external_memory"]
        self.calls.append(memory)
        self.excluded.append(list(exclude))
        n = len(self.calls)
        key = json.dumps(memory, sort_keys=True)
        for marker, left in list(self.fail.items()):
            if marker in key and left:
                self.fail[marker] = left - 1
                return ExecuteResults([], [TaskFailure(0, task, f"0x{n}", TaskAborted("node died", fee=1),
                                                       node=f"0xnode{n}")])
        return ExecuteResults([TaskResult(id=f"0x{n}", task_input=task.workflow, result=self.answer(memory),
                                          model="tiny-llm", node="0xgood")])


def qa_answer(memory: dict[str, str]) -> str:
    if "question" in memory:
        return f"A({memory['question']})"
    return "1. first?\n2. second?" if memory.get("num_questions") == "2" else f"Q({memory['context']})"


async def test_a_two_step_pipeline_fans_out_retries_and_lists_rows_that_fail_for_good(tmp_path: Path) -> None:
    rows = [{"context": f"text {i}", "persona": "p", "num_questions": 2 if i == 0 else 1} for i in range(4)]
    dria = FakeDria(qa_answer, fail={"text 1": 1, "text 3": 99})  # row 1 fails once, row 3 always
    dataset = DriaDataset("qa", path=tmp_path / "qa")
    generator = DatasetGenerator(dataset, dria, retries=2, progress=False)  # type: ignore[arg-type]
    out = await generator.generate(rows, QA, Model.LOCAL)
    entries = out.get_entries()
    # row 0 asked two questions (two answers), rows 1 and 2 one each; row 3 failed for good
    assert [e["prediction"] for e in entries] == ["A(first?)", "A(second?)", "A(Q(text 1))", "A(Q(text 2))"]
    assert all(e["model"] == "tiny-llm" for e in entries)
    assert [(f.row, f.step, f.singleton, f.attempts) for f in out.failed] == [("3", 0, "Question", 3)]
    assert "TaskAborted" in out.failed[0].error and out.failed[0].inputs["context"] == "text 3"
    # each retry was kept off the nodes the row had failed on (the contract takes two at most)
    excluded = [e for c, e in zip(dria.calls, dria.excluded, strict=True) if c.get("context") == "text 3"]
    assert len(excluded) == 3 and excluded[0] == [] and len(excluded[1]) == 1
    assert excluded[2][0] == excluded[1][0] and len(excluded[2]) == 2
    # exports
    lines = out.to_jsonl(tmp_path / "qa.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == entries
    assert list(out.to_pandas()["prediction"]) == [e["prediction"] for e in entries]
    hf = out.to_hf_dataset()
    assert hf.num_rows == 4 and "question" in hf.column_names


async def test_a_rerun_runs_only_rows_not_finished_before(tmp_path: Path) -> None:
    rows = [{"context": f"text {i}", "persona": "p"} for i in range(5)]
    dataset = DriaDataset("qa", path=tmp_path / "qa")
    first = FakeDria(qa_answer, fail={"text 4": 99})
    await DatasetGenerator(dataset, first, retries=0, progress=False).generate(rows, QA)  # type: ignore[arg-type]
    assert len(dataset.get_entries()) == 4 and len(first.calls) == 9
    # a torn last line (a kill in the middle of a write) is ignored
    with dataset.journal.open("a") as f:
        f.write('{"kind": "done", "ste')
    second = FakeDria(qa_answer)
    await DatasetGenerator(dataset, second, progress=False).generate(rows, QA)  # type: ignore[arg-type]
    assert [c["context"] for c in second.calls] == ["text 4", "text 4"]  # only the missing row, both steps
    assert len(dataset.get_entries()) == 5 and not dataset.failed
    with pytest.raises(ValidationError, match="belongs to another job"):
        await DatasetGenerator(dataset, second, progress=False).generate(rows[:2], QA)  # type: ignore[arg-type]


async def test_a_pipeline_whose_steps_do_not_fit_is_refused_before_anything_runs(tmp_path: Path) -> None:
    dria = FakeDria(lambda m: f"A({m['question']})" if "question" in m else "gen")
    generator = DatasetGenerator(DriaDataset("x", path=tmp_path / "x"), dria, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Answer needs \\['context', 'question', 'persona'\\], which Simple"):
        await generator.generate([{"prompt": "p"}], [Simple, Answer])
    with pytest.raises(ValidationError, match="instruction 0: Question"):
        await generator.generate([{"context": "c"}], QA)
    await generator.generate([{"prompt": "p"}], [Simple, (Answer, {"question": "generation", "context": "prompt",
                                                                   "persona": "prompt"})])
    assert dria.calls == [{"prompt": "p"}, {"persona": "p", "context": "p", "question": "gen"}]
    assert dria.calls and DriaDataset("x", path=tmp_path / "x").get_entries()[0]["prediction"] == "A(gen)"


class Title(BaseModel):
    title: str
    words: int


def title_answer(memory: dict[str, str]) -> str:
    text = memory.get("text") or memory.get("prediction", "")
    return f'Sure: {{"title": "T:{text}", "words": {len(text.split())}}}'


def test_a_prompt_is_one_generation_whose_answer_must_fit_its_schema() -> None:
    prompt = Prompt("Title for {{text}} ({{ n }} words)", Title, input_map={"text": "body"})
    assert prompt.variables == ["text", "n"] and prompt.description == "prompt"
    workflow = parse_workflow(as_json(prompt.workflow(text="a b", n=2)))
    assert workflow.external_memory == {"text": "a b", "n": "2"}  # non-text values go as JSON
    task = workflow.tasks[0]
    assert task.json_schema is not None and task.json_schema["required"] == ["title", "words"]
    assert prompt.callback([result('```json\n{"title": "x", "words": 3}\n```')]) == [Title(title="x", words=3)]
    with pytest.raises(ResultParseError, match="is not JSON that fits Title"):
        prompt.parse(result('{"title": "x"}'))
    with pytest.raises(ValidationError, match="no variables"):
        Prompt("no braces", Title)
    with pytest.raises(ValidationError, match="input_map"):
        Prompt("{{a}}", Title, input_map={"b": "c"})
    with pytest.raises(ValidationError, match="no value for \\['n'\\]"):
        prompt.workflow(text="x")
    assert Prompt("{{a}}", Title).name != Prompt("{{a}}!", Title).name  # another prompt, another step


async def test_a_prompt_is_a_dataset_step_and_enrich_adds_its_fields_to_every_entry(tmp_path: Path) -> None:
    rows = [{"body": f"text number {i}"} for i in range(3)]
    dataset = DriaDataset("titles", path=tmp_path / "titles")
    dria = FakeDria(title_answer, fail={"number 2": 99})
    prompt = Prompt("Title: {{text}}", Title, input_map={"text": "body"})
    await DatasetGenerator(dataset, dria, retries=0, progress=False).generate(rows, prompt)  # type: ignore[arg-type]
    assert dataset.get_entries() == [{"title": f"T:text number {i}", "words": 3} for i in range(2)]
    assert [f.row for f in dataset.failed] == ["2"]
    # enrich: a second prompt over those entries adds its fields; the entries become the merged rows
    class Tone(BaseModel):
        tone: str
    tone = Prompt("Tone of {{title}}", Tone)
    toner = FakeDria(lambda m: json.dumps({"tone": f"calm:{m['title']}"}), fail={"number 1": 1})
    generator = DatasetGenerator(dataset, toner, retries=0, progress=False)  # type: ignore[arg-type]
    await generator.enrich(tone)
    assert len(dataset.failed) == 1 and len(dataset.get_entries()) == 1  # one failed: rerun retries it
    await generator.enrich(tone)
    assert dataset.get_entries() == [{"title": f"T:text number {i}", "words": 3, "tone": f"calm:T:text number {i}"}
                                     for i in range(2)]
    assert len(toner.calls) == 3 and not dataset.failed  # 2 + the one retried; nothing finished ran twice
    await generator.enrich(tone)
    assert len(toner.calls) == 3  # done: nothing runs, nothing is paid
    # the generate job is still there: a rerun resumes it (row 2 only) and the entries stay enriched
    retry = FakeDria(title_answer)
    await DatasetGenerator(dataset, retry, progress=False).generate(rows, prompt)  # type: ignore[arg-type]
    assert [c["text"] for c in retry.calls] == ["text number 2"]
    assert all("tone" in e for e in dataset.get_entries())
    # the entries grew by that row: enriching them again pays for the new row only
    await generator.enrich(tone)
    assert len(toner.calls) == 4 and toner.calls[-1]["title"] == "T:text number 2"
    assert [e["tone"] for e in dataset.get_entries()] == [f"calm:T:text number {i}" for i in range(3)]
    with pytest.raises(ValidationError, match="has no entries yet"):
        await DatasetGenerator(DriaDataset("empty", path=tmp_path / "e"), toner).enrich(tone)  # type: ignore[arg-type]


async def test_imports_start_a_dataset_that_enrich_and_generate_read(tmp_path: Path) -> None:
    class Doc(BaseModel):
        text: str
        n: int = 0

    (tmp_path / "docs.json").write_text(json.dumps([{"text": "one two"}, {"text": "three", "n": 4}, {"n": 1}]))
    (tmp_path / "docs.csv").write_text("text,n\nalpha beta,2\ngamma,x\n")
    from_json = DriaDataset.from_json("j", "docs", Doc, tmp_path / "docs.json", path=tmp_path / "j")
    assert from_json.get_entries() == [{"text": "one two", "n": 0}, {"text": "three", "n": 4}]
    assert [i for i, _ in from_json.skipped] == [2]  # no text: left out, and said
    from_csv = DriaDataset.from_csv("c", "docs", Doc, tmp_path / "docs.csv", path=tmp_path / "c")
    assert from_csv.get_entries() == [{"text": "alpha beta", "n": 2}] and [i for i, _ in from_csv.skipped] == [1]
    headless = tmp_path / "headless.csv"
    headless.write_text("a b c;3\n")
    assert DriaDataset.from_csv("h", "", Doc, headless, delimiter=";", has_header=False,
                                path=tmp_path / "h").get_entries() == [{"text": "a b c", "n": 3}]
    import datasets

    hf = datasets.Dataset.from_list([{"body": "from the hub", "id": 7}])
    from_hf = DriaDataset.from_huggingface("hf", "", hf, Doc, mapping={"text": "body", "n": "id"}, path=tmp_path / "hf")
    assert from_hf.get_entries() == [{"text": "from the hub", "n": 7}]
    local = tmp_path / "local"
    local.mkdir()
    (local / "train.jsonl").write_text('{"text": "on disk", "n": 5}\n')
    assert DriaDataset.from_huggingface("l", "", str(local), Doc, path=tmp_path / "l").get_entries() == \
        [{"text": "on disk", "n": 5}]
    with pytest.raises(ValidationError, match="cannot read"):
        DriaDataset.from_json("bad", "", Doc, tmp_path / "missing.json", path=tmp_path / "bad")
    with pytest.raises(ValidationError, match="an import needs schema"):
        DriaDataset.from_json("bad", "", None, tmp_path / "docs.json", path=tmp_path / "bad")  # type: ignore[arg-type]
    # an imported dataset's entries are instructions for another, and enrich reads them
    dria = FakeDria(title_answer)
    out = DriaDataset("out", path=tmp_path / "out")
    await DatasetGenerator(out, dria, progress=False).generate(from_json, Prompt("{{text}}", Title))  # type: ignore[arg-type]
    assert [e["title"] for e in out.get_entries()] == ["T:one two", "T:three"]
    await DatasetGenerator(from_csv, dria, progress=False).enrich(Prompt("{{text}}", Title))  # type: ignore[arg-type]
    assert from_csv.get_entries() == [{"text": "alpha beta", "n": 2, "title": "T:alpha beta", "words": 2}]
    # a rerun of the script imports the same rows again: the enrichment it paid for stays
    again = DriaDataset.from_csv("c", "docs", Doc, tmp_path / "docs.csv", path=tmp_path / "c")
    assert again.get_entries() == from_csv.get_entries() and len(again.jobs()) == 2
    (tmp_path / "docs.csv").write_text("text,n\nnew rows,1\n")  # other rows: a fresh start
    assert DriaDataset.from_csv("c", "docs", Doc, tmp_path / "docs.csv", path=tmp_path / "c").get_entries() == \
        [{"text": "new rows", "n": 1}]


async def test_sampling_ratio_runs_a_share_of_the_rows_the_same_on_every_run(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}"} for i in range(10)]
    first = FakeDria(lambda m: "g")
    dataset = DriaDataset("s", path=tmp_path / "s")
    await DatasetGenerator(dataset, first, progress=False).generate(rows, Simple, sampling_ratio=0.3)  # type: ignore[arg-type]
    assert len(first.calls) == 3 and len(dataset.get_entries()) == 3
    picked = [c["prompt"] for c in first.calls]
    again = FakeDria(lambda m: "g")
    await DatasetGenerator(dataset, again, progress=False).generate(rows, Simple, sampling_ratio=0.3)  # type: ignore[arg-type]
    assert again.calls == []  # the same three rows: all finished
    assert sorted(picked) == sorted(e["prompt"] for e in dataset.get_entries())
    with pytest.raises(ValidationError, match="sampling_ratio"):
        await DatasetGenerator(dataset, again, progress=False).generate(rows, Simple, sampling_ratio=0)  # type: ignore[arg-type]


def test_dria_import_paths_and_a_workflow_built_with_the_real_dria_workflows() -> None:
    """``gridtask.sdk.dria.workflows`` is ``gridtask.workflows`` under Dria's path; a Task takes
    a workflow object built with the real ``dria_workflows`` package as it is."""
    dw = pytest.importorskip("dria_workflows")
    from gridtask.sdk.dria.workflows import Edge, Operator, WorkflowBuilder, Write

    ours = WorkflowBuilder(prompt="hi")
    ours.generative_step(prompt="{{prompt}}", operator=Operator.GENERATION, outputs=[Write.new("response")])
    ours.flow([Edge(source="0", target="_end")])
    ours.set_return_value("response")
    theirs = dw.WorkflowBuilder(prompt="hi")
    theirs.generative_step(prompt="{{prompt}}", operator=dw.Operator.GENERATION, outputs=[dw.Write.new("response")])
    theirs.flow([dw.Edge(source="0", target="_end")])
    theirs.set_return_value("response")
    assert Task(workflow=theirs.build(), models=[Model.TINY_LLM]).workflow == Task(
        workflow=ours.build(), models=[Model.TINY_LLM]).workflow


def test_the_core_does_not_import_the_dria_layer() -> None:
    """One direction of imports: Dria wraps the core client from outside."""
    import ast

    root = Path(__file__).resolve().parents[2] / "gridtask"
    core = [p for p in root.glob("sdk/_*.py") if p.name != "__init__.py"]
    core += [*root.glob("chain/*.py"), *root.glob("node/**/*.py"), *root.glob("relay/*.py"),
             *root.glob("workflows/*.py")]
    assert len(core) > 10
    for path in core:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("gridtask.sdk.dria") or n == "gridtask.sdk._dria" for n in names), path
