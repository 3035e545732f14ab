from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from gridtask.workflows import MAX_STEPS, Step, Workflow, WorkflowError, render, run_workflow


class Recorder:
    """A fake model: records each prompt and answers with it in upper case."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return prompt.upper()


def poem_workflow() -> Workflow:
    return Workflow(
        steps=[
            Step(prompt="poem about {{topic}}", output="poem"),
            Step(prompt="title for {{ poem }} ({{topic}})", output="title"),
        ],
        return_value="title",
        memory={"topic": "sea"},
    )


async def test_steps_read_inputs_and_earlier_outputs() -> None:
    model = Recorder()
    text, memory = await run_workflow(poem_workflow(), model)
    assert model.prompts == ["poem about sea", "title for POEM ABOUT SEA (sea)"]
    assert text == "TITLE FOR POEM ABOUT SEA (SEA)"
    assert memory == {"topic": "sea", "poem": "POEM ABOUT SEA", "title": text}


async def test_memory_argument_adds_to_and_overrides_the_built_inputs() -> None:
    model = Recorder()
    _, memory = await run_workflow(poem_workflow(), model, memory={"topic": "sky", "x": "1"})
    assert model.prompts[0] == "poem about sky"
    assert memory["x"] == "1"


async def test_workflow_runs_from_its_json_dump() -> None:
    dumped = json.loads(json.dumps(poem_workflow().model_dump()))
    assert Workflow.model_validate(dumped) == poem_workflow()
    assert (await run_workflow(dumped, Recorder()))[0] == "TITLE FOR POEM ABOUT SEA (SEA)"


async def test_unknown_placeholder_fails_before_any_generation() -> None:
    workflow = Workflow(
        steps=[Step(prompt="fine", output="a"), Step(prompt="{{a}} {{missing}}", output="b")],
        return_value="b",
    )
    model = Recorder()
    with pytest.raises(WorkflowError, match="missing"):
        await run_workflow(workflow, model)
    assert model.prompts == []


async def test_a_step_cannot_read_its_own_or_a_later_output() -> None:
    workflow = Workflow(
        steps=[Step(prompt="{{b}}", output="a"), Step(prompt="x", output="b")], return_value="a"
    )
    with pytest.raises(WorkflowError, match="step 0"):
        await run_workflow(workflow, Recorder())


async def test_return_value_never_written_is_an_error() -> None:
    workflow = Workflow(steps=[Step(prompt="x", output="a")], return_value="b")
    with pytest.raises(WorkflowError, match="return value"):
        await run_workflow(workflow, Recorder())


async def test_return_value_may_be_an_input() -> None:
    workflow = Workflow(steps=[Step(prompt="x", output="a")], return_value="k", memory={"k": "v"})
    assert (await run_workflow(workflow, Recorder()))[0] == "v"


@pytest.mark.parametrize(
    "data",
    [
        {"steps": [], "return_value": "a"},
        {"steps": [{"prompt": "x", "output": "a"}] * (MAX_STEPS + 1), "return_value": "a"},
        {"steps": [{"prompt": "x", "output": "not a name"}], "return_value": "a"},
        {"steps": [{"prompt": "", "output": "a"}], "return_value": "a"},
        {"steps": [{"prompt": "x", "output": "a", "model": "m"}], "return_value": "a"},
        {"steps": [{"prompt": "x", "output": "a"}]},
        {"steps": [{"prompt": "x", "output": "a"}], "return_value": "a", "memory": {"k": 1}},
        "not an object",
    ],
)
async def test_malformed_workflow_data_is_a_workflow_error(data: object) -> None:
    with pytest.raises(WorkflowError, match="malformed"):
        await run_workflow(data, Recorder())  # type: ignore[arg-type]


def test_models_refuse_bad_fields_at_build_time() -> None:
    with pytest.raises(ValidationError):
        Workflow(steps=[], return_value="a")
    with pytest.raises(ValidationError):
        Step(prompt="x", output="1abc")


async def test_memory_values_must_be_strings() -> None:
    with pytest.raises(WorkflowError, match="strings"):
        await run_workflow(poem_workflow(), Recorder(), memory={"topic": 3})  # type: ignore[dict-item]


def test_render_is_one_pass_and_leaves_single_braces_alone() -> None:
    memory = {"a": "{{b}}", "b": "B"}
    assert render("{{a}} {b} {{ b }}", memory) == "{{b}} {b} B"
    with pytest.raises(WorkflowError, match="unknown placeholder"):
        render("{{zzz}}", memory)
