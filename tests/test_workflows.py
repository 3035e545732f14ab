"""Workflows in Dria's format: the builder gives the real ``dria-workflows`` JSON, a malformed
workflow is refused naming the task and field, and the engine runs memory, conditions,
fallbacks, schemas, function calls and limits as Dria's executor does (with a scripted model)."""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any

import pytest
from pydantic import BaseModel, Field

import gridtask.workflows as G
from gridtask.workflows import (
    MAX_STEPS,
    ConditionBuilder,
    CustomTool,
    Edge,
    Expression,
    LimitExceeded,
    Pop,
    Push,
    Read,
    SchemaViolation,
    Step,
    UnsupportedOperator,
    Workflow,
    WorkflowBuilder,
    WorkflowError,
    WorkflowFailed,
    Write,
    as_json,
    parse_workflow,
    run_workflow,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # dria_workflows' Task.schema shadows BaseModel.schema
    import dria_workflows as D
logging.getLogger().setLevel(logging.WARNING)  # dria_workflows configures INFO logging on import


class Model:
    """A scripted model: answers from ``answers`` in turn (then echoes the last message)."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[dict[str, str]], int, dict[str, Any] | None]] = []

    async def __call__(self, messages: list[dict[str, str]], max_tokens: int, schema: dict[str, Any] | None) -> str:
        self.calls.append((messages, max_tokens, schema))
        return self.answers.pop(0) if self.answers else messages[-1]["content"].upper()

    @property
    def prompts(self) -> list[str]:
        return [messages[-1]["content"] for messages, _, _ in self.calls]


async def run(workflow: Any, model: Model, **kwargs: Any) -> G.WorkflowResult:
    return await run_workflow(workflow, model, max_tokens=kwargs.pop("max_tokens", 16), **kwargs)


# ----------------------------------------------------------------- the builder and the format


class Verdict(BaseModel):
    verdict: str = Field(description="yes or no")
    score: int


class Calculator(D.CustomTool):  # type: ignore[misc]
    name: str = "calculator"
    description: str = "adds two numbers"
    lhs: int = Field(..., description="left")
    rhs: int = Field(..., description="right")

    def execute(self, **kwargs: Any) -> Any:
        return self.lhs + self.rhs


class MyCalculator(CustomTool):
    name: str = "calculator"
    description: str = "adds two numbers"
    lhs: int = Field(..., description="left")
    rhs: int = Field(..., description="right")


def poem_and_judge(M: Any) -> Any:
    """The same workflow with either package ``M``: memory of both kinds, every input and
    output kind, a condition with a loop back, a fallback, several return keys."""
    b = M.WorkflowBuilder(topic="sea", items=["a", "b"])
    b.set_max_tokens(100)
    b.set_max_steps(7)
    b.set_max_time(30)
    b.generative_step(prompt="poem about {{topic}}", operator=M.Operator.GENERATION,
                      outputs=[M.Write.new("poem"), M.Push.new("drafts"), M.Insert.new("docs")])
    b.generative_step(id="judge", prompt="Is {{poem}} good? {{items}} {{n}}", operator=M.Operator.GENERATION,
                      inputs=[M.String.new("lit", "hello", True), M.Peek.new("items", 1, False),
                              M.Size.new("n", True), M.Pop.new("drafts", False)],
                      outputs=[M.Write.new("verdict")])
    b.flow([M.Edge(source="0", target="judge"),
            M.Edge(source="judge", target="_end", fallback="_end",
                   condition=M.ConditionBuilder.build(expected="yes", expression=M.Expression.CONTAINS,
                                                      input=M.Read.new("verdict", True), target_if_not="0"))])
    b.set_return_value(["poem", "verdict"])
    return b.build()


def with_tool(M: Any, tool: Any) -> Any:
    b = M.WorkflowBuilder(question="1+2")
    b.add_custom_tool(tool)
    b.generative_step(prompt="{{question}}", operator=M.Operator.FUNCTION_CALLING_RAW, outputs=[M.Write.new("call")])
    b.flow([M.Edge(source="0", target="_end")])
    b.set_return_value("call")
    return b.build()


def stack_return(M: Any) -> Any:
    b = M.WorkflowBuilder()
    b.generative_step(prompt="idea", operator=M.Operator.GENERATION, outputs=[M.Push.new("ideas")])
    b.flow([M.Edge(source="0", target="_end")])
    b.set_return_value("ideas")
    return b.build()


def real_json(workflow: Any) -> dict[str, Any]:
    return json.loads(workflow.model_dump_json(exclude_unset=True, exclude_none=True))


@pytest.mark.parametrize("build", [poem_and_judge, stack_return])
def test_builder_gives_the_json_of_the_real_dria_workflows(build: Any) -> None:
    assert as_json(build(G)) == real_json(build(D))


def test_custom_tools_give_the_json_of_the_real_dria_workflows() -> None:
    real = real_json(with_tool(D, Calculator(lhs=0, rhs=0)))
    assert as_json(with_tool(G, MyCalculator(lhs=0, rhs=0))) == real
    assert real["config"]["custom_tools"][0]["parameters"]["required"] == ["lhs", "rhs"]


def test_a_schema_class_becomes_its_json_schema() -> None:
    def build(M: Any) -> Any:
        b = M.WorkflowBuilder(q="x")
        b.generative_step(prompt="{{q}}", operator=M.Operator.GENERATION, schema=Verdict, outputs=[M.Write.new("v")])
        b.flow([M.Edge(source="0", target="_end")])
        b.set_return_value("v")
        return b.build()

    mine = as_json(build(G))
    assert mine["tasks"][0]["schema"] == Verdict.model_json_schema()
    # the real package keeps the class: gridtask reads its workflow object as it is
    assert as_json(build(D)) == mine
    del mine["tasks"][0]["schema"]
    assert real_json_without_schema(build(D)) == mine


def real_json_without_schema(workflow: Any) -> dict[str, Any]:
    for task in workflow.tasks:
        task.schema = None
    return real_json(workflow)


def test_real_workflow_objects_and_dumps_parse_as_they_are() -> None:
    real = poem_and_judge(D)
    assert parse_workflow(real) == parse_workflow(real.model_dump()) == parse_workflow(real_json(real))
    assert parse_workflow(real.model_dump_json(exclude_none=True)) == parse_workflow(real)
    assert D.validate_workflow_json(json.dumps(as_json(poem_and_judge(G))))


def test_first_format_converts_to_one_generation_task_per_step() -> None:
    workflow = Workflow(steps=[Step(prompt="poem about {{topic}}", output="poem"),
                               Step(prompt="title for {{poem}}", output="title")],
                        return_value="title", memory={"topic": "sea"})
    assert [t.id for t in workflow.tasks] == ["step0", "step1", "_end"]
    assert [(e.source, e.target) for e in workflow.steps] == [("step0", "step1"), ("step1", "_end")]
    assert Workflow.model_validate(json.loads(json.dumps(workflow.model_dump()))) == workflow


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": [], "return_value": "a"}, "steps: 1 to 8"),
        ({"steps": [{"prompt": "x", "output": "a"}] * (MAX_STEPS + 1), "return_value": "a"}, "steps: 1 to 8"),
        ({"steps": [{"prompt": "x", "output": "not a name"}], "return_value": "a"}, "output"),
        ({"steps": [{"prompt": "x", "output": "a"}], "return_value": "a", "memory": {"k": 1}}, "strings"),
        ("not an object", "not JSON"),
    ],
)
def test_malformed_first_format_is_a_workflow_error(data: object, message: str) -> None:
    with pytest.raises(WorkflowError, match=message):
        parse_workflow(data)


def dria_dict(**changes: Any) -> dict[str, Any]:
    data = as_json(poem_and_judge(G))
    for path, value in changes.items():
        target = data
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tasks__1__operator": "dance"}, "task 'judge': operator: Input should be"),
        ({"tasks__1__inputs__0__required": "maybe"}, "task 'judge': inputs.0.required"),
        ({"steps__0__target": "nowhere"}, "step 0 (0 -> nowhere): target: 'nowhere' is not a task"),
        ({"steps__1__condition__target_if_not": "ghost"}, "condition.target_if_not: 'ghost' is not a task"),
        ({"steps__1__fallback": "ghost"}, "fallback: 'ghost' is not a task"),
        ({"tasks__1__messages__0__content": "{{unheard}}"},
         "task 'judge': messages[0].content: reads unknown placeholder {{unheard}}"),
        ({"tasks__0__inputs__0__value__key": "nothing"}, "task '0': inputs[0]: required input 'topic' reads 'nothing'"),
        ({"tasks__1__inputs__3__value__type": "pop"}, "task 'judge': inputs[3]: required input 'n' reads stack 'n'"),
        ({"config__max_steps": 0}, "config.max_steps: Input should be greater than or equal to 1"),
        ({"tasks__1__id": "0"}, "tasks[1]: id: two tasks have the ID '0'"),
        ({"tasks__0__schema": {"type": "nonsense"}}, "task '0': schema: not a valid JSON schema"),
        ({"return_value__input__0__key": "nope"}, "return_value.input[0]: return value reads 'nope'"),
        ({"steps": [{"source": "0", "target": "judge"}]}, "task 'judge': steps: no step leaves this task"),
    ],
)
def test_a_malformed_workflow_names_the_task_and_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkflowError) as refused:
        parse_workflow(dria_dict(**changes))
    assert message in str(refused.value)


# ------------------------------------------------------------------------------- the engine


async def test_a_condition_that_fails_routes_to_target_if_not_and_memory_flows() -> None:
    # 1st poem, "no" -> back to task 0, 2nd poem, "yes" -> _end
    model = Model("poem one", "no", "poem two", "yes indeed")
    result = await run(poem_and_judge(G), model)
    assert result.trace == ["0", "judge", "0", "judge"]
    assert model.prompts[0] == "poem about sea"
    # judge reads: the poem, items[1] (peek), the size of stack n (none: 0), and pops drafts
    assert model.prompts[1] == "Is poem one good? b 0"
    assert model.prompts[3] == "Is poem two good? b 0"
    assert result.memory.stacks["drafts"] == []  # pushed twice, popped twice
    assert result.memory.files == ["poem one", "poem two"]  # insert
    assert result.text == json.dumps(["poem two", "yes indeed"], separators=(",", ":"))
    assert model.calls[0][1] == 100  # config.max_tokens wins over the task's max_tokens


async def test_every_expression_and_the_branch_it_takes() -> None:
    cases = [("Equal", "7", "7", True), ("Equal", "seven", "7", False), ("Equal", "7 ", "7", True),
             ("NotEqual", "a", "b", True),
             ("Contains", "xyz", "y", True), ("NotContains", "xyz", "y", False),
             ("GreaterThan", "10", "9", True), ("LessThan", "10", "9", False),
             ("GreaterThanOrEqual", "9", "9", True), ("LessThanOrEqual", "9.5", "9", False)]
    for expression, answer, expected, holds in cases:
        b = WorkflowBuilder()
        b.generative_step(prompt="q", outputs=[Write.new("a")])
        b.generative_step(id="yes", prompt="y", outputs=[Write.new("b")])
        b.generative_step(id="no", prompt="n", outputs=[Write.new("b")])
        b.flow([Edge(source="0", target="yes", condition=ConditionBuilder.build(
            expected=expected, expression=Expression(expression), input=Read.new("a", True), target_if_not="no")),
            Edge(source="yes", target="_end"), Edge(source="no", target="_end")])
        b.set_return_value("b")
        result = await run(b.build(), Model(answer, "went"))
        assert result.trace == ["0", "yes" if holds else "no"], expression


async def test_a_number_condition_on_text_fails_naming_the_task() -> None:
    b = WorkflowBuilder()
    b.generative_step(prompt="q", outputs=[Write.new("a")])
    b.flow([Edge(source="0", target="_end", condition=ConditionBuilder.build(
        expected=3, expression=Expression.GREATER_THAN, input=Read.new("a", True), target_if_not="_end"))])
    b.set_return_value("a")
    with pytest.raises(WorkflowFailed, match="task '0': condition: condition GreaterThan compares numbers"):
        await run(b.build(), Model("many"))


async def test_push_then_pop_round_trips_and_get_all_lists_the_stack() -> None:
    b = WorkflowBuilder(seed=["s1"])
    b.generative_step(prompt="first", outputs=[Push.new("seed")])
    b.generative_step(id="take", prompt="later", outputs=[Write.new("out")])
    b.flow([Edge(source="0", target="take"), Edge(source="take", target="_end")])
    b.set_return_value("out")
    data = as_json(b.build())
    # inputs named apart from their keys, as a hand-written Dria workflow may have them
    data["tasks"][1]["messages"][0]["content"] = "{{top}} | {{all}} | {{n}} | {{lit}}"
    data["tasks"][1]["inputs"] = [
        {"name": "top", "value": {"type": "pop", "key": "seed"}, "required": True},
        {"name": "all", "value": {"type": "get_all", "key": "seed"}, "required": True},
        {"name": "n", "value": {"type": "size", "key": "seed"}, "required": True},
        {"name": "lit", "value": {"type": "string", "key": "const"}, "required": True}]
    model = Model("pushed", "done")
    result = await run(data, model)
    # pop took the pushed entry first (a stack), so get_all and size see only the external one
    assert model.prompts[1] == "pushed | s1 \n | 1 | const"
    assert result.memory.stacks["seed"] == ["s1"]


async def test_a_required_empty_input_fails_the_step_and_takes_the_fallback() -> None:
    b = WorkflowBuilder(queue=["only"])
    b.generative_step(prompt="{{queue}}", inputs=[Pop.new("queue", True)], outputs=[Write.new("a")])
    b.generative_step(id="rescue", prompt="rescued", outputs=[Write.new("a")])
    b.flow([Edge(source="0", target="0", fallback="rescue"), Edge(source="rescue", target="_end")])
    b.set_return_value("a")
    model = Model("one", "saved")
    result = await run(b.build(), model)
    assert result.trace == ["0", "0", "rescue"]  # the second pop found the stack empty
    assert result.text == "saved" and len(model.calls) == 2
    # without a fallback, the same failure ends the run naming the task and the input
    data = as_json(b.build())
    del data["steps"][0]["fallback"]
    with pytest.raises(WorkflowFailed, match="task '0': required input 'queue' \\(pop 'queue'\\) is empty"):
        await run(data, Model("one"))


def schema_workflow() -> Workflow:
    b = WorkflowBuilder(q="is the sea wet?")
    b.generative_step(prompt="{{q}}", schema=Verdict, outputs=[Write.new("v")])
    b.flow([Edge(source="0", target="_end")])
    b.set_return_value("v")
    return b.build()


async def test_an_answer_that_breaks_the_schema_is_asked_again_with_the_error() -> None:
    model = Model("not json", '{"verdict": "yes"}', '```json\n{"verdict": "yes", "score": 3}\n```')
    result = await run(schema_workflow(), model)
    assert result.text == '{"verdict":"yes","score":3}'
    assert len(model.calls) == 3 and all(schema == Verdict.model_json_schema() for _, _, schema in model.calls)
    retry = model.calls[1][0]
    assert retry[-2] == {"role": "assistant", "content": "not json"}
    assert "not JSON" in retry[-1]["content"] and '"verdict"' in retry[-1]["content"]
    assert "'score' is a required property" in model.calls[2][0][-1]["content"]


async def test_an_answer_that_never_matches_the_schema_fails_with_a_named_error() -> None:
    model = Model('{"verdict": 1, "score": 2}', "[]", "nope", "never asked")
    with pytest.raises(SchemaViolation) as failed:
        await run(schema_workflow(), model)
    assert len(model.calls) == G.SCHEMA_ATTEMPTS == 3
    assert str(failed.value).startswith("task '0': schema: the answer did not match the task's JSON schema in 3")
    assert "not JSON" in str(failed.value)


async def test_a_schema_that_is_never_met_takes_the_fallback_when_there_is_one() -> None:
    data = as_json(schema_workflow())
    data["tasks"].insert(1, {"id": "plain", "messages": [{"role": "user", "content": "say it plainly"}],
                             "operator": "generation", "outputs": [{"type": "write", "key": "v", "value": "__result"}]})
    data["steps"] = [{"source": "0", "target": "_end", "fallback": "plain"}, {"source": "plain", "target": "_end"}]
    model = Model("a", "b", "c", "plainly: yes")
    result = await run(data, model)
    assert result.trace == ["0", "plain"] and result.text == "plainly: yes"
    assert len(model.calls) == 4  # three attempts at the schema, then the fallback task


async def test_function_calling_returns_the_checked_call_and_runs_nothing() -> None:
    workflow = with_tool(D, Calculator(lhs=0, rhs=0))  # built with the real package
    model = Model('{"name": "calculator", "arguments": {"lhs": "x"}}',
                  '{"name": "calculator", "arguments": {"lhs": 1, "rhs": 2}}')
    result = await run(workflow, model)
    assert json.loads(result.text) == {"name": "calculator", "arguments": {"lhs": 1, "rhs": 2}}
    messages = model.calls[0][0]
    assert '"name": "calculator"' in messages[0]["content"] and messages[-1]["content"] == "1+2"
    assert len(model.calls) == 2  # the first call lacked rhs and had a string lhs: asked again
    parsed = D.OpenAIParser().parse(result.text)  # Dria's own parser reads the answer
    assert parsed[0].name == "calculator" and parsed[0].arguments.rhs == 2


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["tasks"][0].update(operator="search"), "task '0': operator: operator 'search' is not offered"),
        (lambda d: d["tasks"][0].update(operator="sample"), "operator 'sample' is not offered"),
        (lambda d: d["tasks"][0].update(operator="function_calling"), "function calling needs the workflow's custom"),
        (lambda d: d["steps"][0].update(condition={"input": {"type": "read", "key": "topic"}, "expected": "x",
                                                   "expression": "HaveSimilar", "target_if_not": "_end"}),
         "step 0: condition.expression: expression 'HaveSimilar'"),
    ],
)
async def test_what_the_node_does_not_offer_fails_before_any_model_runs(mutate: Any, message: str) -> None:
    b = WorkflowBuilder(topic="x")
    b.generative_step(prompt="{{topic}}", outputs=[Write.new("a")])
    b.flow([Edge(source="0", target="_end")])
    b.set_return_value("a")
    data = as_json(b.build())
    mutate(data)
    model = Model()
    with pytest.raises(UnsupportedOperator, match=message):
        await run(data, model)
    assert model.calls == []


async def test_a_search_step_built_with_dria_is_refused_unrun() -> None:
    b = D.WorkflowBuilder(query="x")
    b.search_step(search_query="{{query}}", outputs=[D.Write.new("r")])
    b.flow([D.Edge(source="0", target="_end")])
    b.set_return_value("r")
    model = Model()
    with pytest.raises(UnsupportedOperator, match="no search backend"):
        await run(b.build(), model)
    assert model.calls == []


def looping(max_steps: int = 5, max_time: int = 100) -> Workflow:
    b = WorkflowBuilder()
    b.set_max_steps(max_steps)
    b.set_max_time(max_time)
    b.generative_step(prompt="again", outputs=[Write.new("a")])
    b.flow([Edge(source="0", target="0")])
    b.set_return_value("a")
    return b.build()


async def test_max_steps_stops_a_loop_after_that_many_tasks() -> None:
    model = Model()
    with pytest.raises(LimitExceeded, match="config.max_steps: max_steps of 5 reached"):
        await run(looping(5), model)
    assert len(model.calls) == 5


async def test_max_time_stops_the_run_between_and_during_steps() -> None:
    now = [0.0]

    async def slow(messages: list[dict[str, str]], max_tokens: int, schema: Any) -> str:
        now[0] += 4
        return "x"

    with pytest.raises(LimitExceeded, match="config.max_time: max_time of 10 s reached before '0'"):
        await run_workflow(looping(50, 10), slow, max_tokens=4, clock=lambda: now[0])
    assert now[0] == 12  # three generations of 4 s: the fourth would start past 10 s

    async def hangs(messages: list[dict[str, str]], max_tokens: int, schema: Any) -> str:
        import asyncio
        await asyncio.sleep(30)
        return "x"

    with pytest.raises(LimitExceeded, match="while '0' was generating"):
        await run_workflow(looping(50, 1), hangs, max_tokens=4)


async def test_max_tokens_is_capped_by_the_node_limit() -> None:
    model = Model("a")
    b = WorkflowBuilder()
    b.set_max_tokens(1000)
    b.generative_step(prompt="q", outputs=[Write.new("a")])
    b.flow([Edge(source="0", target="_end")])
    b.set_return_value("a")
    await run(b.build(), model, max_tokens_limit=128)
    assert model.calls[0][1] == 128


async def test_return_value_post_process_and_json_entries() -> None:
    data = as_json(stack_return(G))
    data["return_value"] = {"input": {"type": "read", "key": "x"}, "post_process": [
        {"process_type": "trim"}, {"process_type": "to_upper"}, {"process_type": "append", "rhs": "!"}]}
    data["tasks"][0]["outputs"].append({"type": "write", "key": "x", "value": "__result"})
    result = await run(data, Model('  {"a": [1, 2]}  '))
    assert result.text == '{"A":[1,2]}!'  # JSON answers are kept as JSON and printed compactly
    assert result.as_result()["stacks"] == {"ideas": ['{"a":[1,2]}']}


async def test_first_format_runs_as_before() -> None:
    workflow = Workflow(steps=[Step(prompt="poem about {{topic}}", output="poem"),
                               Step(prompt="title for {{ poem }} ({{topic}})", output="title")],
                        return_value="title", memory={"topic": "sea"})
    model = Model()
    result = await run(workflow.model_dump(), model)
    assert model.prompts == ["poem about sea", "title for POEM ABOUT SEA (sea)"]
    assert result.text == "TITLE FOR POEM ABOUT SEA (SEA)"
    assert result.as_result()["memory"] == {"topic": "sea", "poem": "POEM ABOUT SEA", "title": result.text}
    # a step that reads an output written only later fails at run time, before generating
    late = Workflow(steps=[Step(prompt="{{b}}", output="a"), Step(prompt="x", output="b")], return_value="a")
    model = Model()
    with pytest.raises(WorkflowFailed, match="task 'step0': required input 'b'"):
        await run(late, model)
    assert model.calls == []
