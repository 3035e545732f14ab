"""The SDK's public surface changes only on purpose (as httpx guards its own)."""

from __future__ import annotations

import inspect

import pytest

import gridtask.sdk as sdk

PUBLIC_NAMES = [
    "Client", "ClientState", "GroupOutcome", "GroupResult", "Member", "Model", "NoNodeWarning", "STEP_NAMES",
    "Simple", "StageTimeoutWarning", "SyncClient", "Task",
    "TaskHandle", "TaskResult", "TaskState", "TaskStep", "TaskType", "parse_task_id",
]


def test_public_names_are_exactly_these() -> None:
    """``__all__`` is these names, sorted; the package exposes nothing else without an
    underscore (a stray import would become API by accident); ``import *`` gives them."""
    assert sdk.__all__ == PUBLIC_NAMES
    exposed = {name for name, value in vars(sdk).items() if not name.startswith("_") and not inspect.ismodule(value)}
    assert exposed == set(PUBLIC_NAMES)
    star: dict[str, object] = {}
    exec("from gridtask.sdk import *", star)
    assert set(star) - {"__builtins__"} == set(PUBLIC_NAMES)


def test_task_states_mirror_the_contract() -> None:
    from pathlib import Path

    source = (Path(sdk.__file__).parents[1] / "chain" / "contracts" / "TaskNetwork.vy").read_text()
    for state in sdk.TaskState:
        if state.value:
            assert f"{state.name}: constant(uint256) = {state.value}" in source, state


def test_the_models_a_task_lists_are_capped_as_the_contract_caps_them() -> None:
    from pathlib import Path

    from gridtask.exceptions import ValidationError
    from gridtask.sdk._checks import MAX_TASK_MODELS, check_order

    source = (Path(sdk.__file__).parents[1] / "chain" / "contracts" / "selection.vy").read_text()
    assert f"MAX_TASK_MODELS: constant(uint256) = {MAX_TASK_MODELS}" in source
    models = [f"m{i}" for i in range(MAX_TASK_MODELS + 1)]
    with pytest.raises(ValidationError, match=f"models: at most {MAX_TASK_MODELS} per task"):
        check_order(sdk.TaskType.LLM, models, {"prompt": "hi"}, fee=1, models=None, min_vram=0, gpu="", size=1,
                    stage_timeout=None, validate="sampled", any_model=True)


def test_simple_builds_a_one_step_workflow_and_parses_the_first_result() -> None:
    simple = sdk.Simple()
    flow = simple.workflow(prompt="Hey there!").model_dump()
    # Dria's workflow format: the prompt is memory read by the one generation step
    assert flow["external_memory"] == {"prompt": "Hey there!"}
    assert flow["tasks"][0]["messages"][-1]["content"] == "{{prompt}}"
    assert flow["return_value"]["input"]["key"] == "response"
    result = sdk.TaskResult(id="0x1", task_input=flow, result="hello", model="tiny-llm")
    assert simple.parse_result([result]) == "hello"


def test_parse_task_id_refuses_malformed_ids() -> None:
    import pytest

    from gridtask.exceptions import ValidationError

    assert sdk.parse_task_id("0x" + "ab" * 32) == bytes.fromhex("ab" * 32)
    for bad in ["0x12", "zz" * 32, "", "0x" + "ab" * 33]:
        with pytest.raises(ValidationError, match="malformed task ID"):
            sdk.parse_task_id(bad)


def test_event_hooks_take_lists_of_callables_for_known_events_only() -> None:
    """Like httpx's ``event_hooks``: a typo or a bare function is refused at construction,
    with a typed error naming what is wrong, before any task is paid for."""
    import pytest

    from gridtask.exceptions import ValidationError

    key = "0x" + "11" * 32
    with pytest.raises(ValidationError, match=r"event_hooks: unknown event 'request'; one of \['step'\]"):
        sdk.Client(private_key=key, event_hooks={"request": [print]})
    with pytest.raises(ValidationError, match=r"event_hooks\['step'\]: must be a list of callables"):
        sdk.Client(private_key=key, event_hooks={"step": print})  # type: ignore[dict-item]


async def test_a_failing_hook_is_logged_and_the_others_still_run(caplog: object) -> None:
    """An observer never costs a paid task its result: a hook that raises is logged."""
    from gridtask.sdk._hooks import Hooks

    seen: list[sdk.TaskStep] = []

    def broken(step: sdk.TaskStep) -> None:
        raise RuntimeError("observer bug")

    async def kept(step: sdk.TaskStep) -> None:
        seen.append(step)

    await Hooks({"step": [broken, kept]}).step("0xab", b"\xab", "created", tx_started_at=1.0)
    assert [(s.name, s.detail) for s in seen] == [("created", {"tx_started_at": 1.0})]
    assert "observer bug" in caplog.text  # type: ignore[attr-defined]
