"""What no node would run is refused before paying, with one message naming the limit, and
the node's executors refuse the same inputs with the very same message (one rule, in
``gridtask.limits``). These need no chain: a refused ``submit`` never even opens the client."""

from __future__ import annotations

from typing import Any

import pytest

from gridtask import limits
from gridtask.config import NetworkConfig
from gridtask.exceptions import ValidationError
from gridtask.keys import Identity
from gridtask.node.executors.base import InvalidTaskParameters
from gridtask.node.executors.echo import EchoExecutor
from gridtask.node.executors.embed import EmbedExecutor
from gridtask.node.executors.llm import OpenAICompatibleExecutor
from gridtask.params import TaskParams
from gridtask.relay.app import DEFAULT_MAX_PARAMS_BYTES
from gridtask.sdk import Client, ClientState, SyncClient, TaskType
from gridtask.types import TaskErrorCode
from gridtask.workflows import Step, Workflow

# Nothing listens here: a check that let a task through would fail to connect instead.
NOWHERE = NetworkConfig(
    rpc_url="http://127.0.0.1:9", contract="0x" + "11" * 20, relay_url="http://127.0.0.1:9",
    private_key="0x" + Identity.generate().private_key.hex(),
)

OVER_LIMITS: list[tuple[TaskType, str, dict[str, Any], str]] = [
    (TaskType.EMBED, "all-minilm-l6-v2", {"texts": ["x"] * 8000}, "texts: at most 256 per task (got 8000)"),
    (TaskType.EMBED, "all-minilm-l6-v2", {"texts": []}, "texts: at least 1 per task (got 0)"),
    (TaskType.EMBED, "all-minilm-l6-v2", {"texts": ["a", 3]}, "texts[1]: must be str (got int)"),
    (TaskType.EMBED, "all-minilm-l6-v2", {"texts": "one"}, "texts: must be list (got str)"),
    (TaskType.LLM, "tiny-llm", {"prompt": "x" * 100_001}, "prompt: at most 100000 characters (got 100001)"),
    (TaskType.LLM, "tiny-llm", {"prompt": "hi", "max_tokens": 129}, "max_tokens: at most 128 (got 129)"),
    (TaskType.LLM, "tiny-llm", {"prompt": "hi", "max_tokens": 0}, "max_tokens: at least 1 (got 0)"),
    (TaskType.LLM, "tiny-llm", {"prompt": "hi", "max_tokens": True}, "max_tokens: must be int (got bool)"),
    (TaskType.LLM, "tiny-llm", {"max_tokens": 4}, "inputs: give exactly one of 'prompt' and 'workflow'"),
    (TaskType.LLM, "tiny-llm", {"workflow": {"steps": [{"prompt": "{{nobody}}", "output": "a"}],
                                             "return_value": "a"}},
     "workflow: task 'step0': inputs[0]: required input 'nobody' reads"),
    (TaskType.ECHO, "echo", {"not-data": 1}, "data: missing from the inputs"),
    (TaskType.ECHO, "echo", {"data": "x" * 1_000_001}, "data: at most 1000000 characters of JSON (got 1000003)"),
]


@pytest.mark.parametrize(("task_type", "model", "inputs", "message"), OVER_LIMITS)
async def test_submit_refuses_before_opening_anything(task_type: TaskType, model: str, inputs: dict[str, Any],
                                                       message: str) -> None:
    client = Client(config=NOWHERE)
    with pytest.raises(ValidationError) as refused:
        await client.submit(task_type, model, inputs)
    assert str(refused.value).startswith(message)
    assert client.state == ClientState.UNOPENED  # no chain call, no transaction, no fee


@pytest.mark.parametrize(("task_type", "model", "inputs", "message"), OVER_LIMITS)
async def test_a_node_refuses_the_same_inputs_with_the_same_message(
    task_type: TaskType, model: str, inputs: dict[str, Any], message: str
) -> None:
    """Through the executors as a node runs them: a client that skipped the checks meets the
    same rule on the node, as a task error (no model is loaded to say so)."""
    executor = {TaskType.ECHO: EchoExecutor(), TaskType.EMBED: EmbedExecutor(),
                TaskType.LLM: OpenAICompatibleExecutor(model, "http://127.0.0.1:9")}[task_type]
    with pytest.raises(InvalidTaskParameters) as refused:
        await executor.run(model, inputs)
    assert str(refused.value).startswith(message)
    assert refused.value.code == TaskErrorCode.INVALID_PARAMETERS


def test_a_node_with_a_lower_max_tokens_limit_names_its_own() -> None:
    with pytest.raises(ValidationError, match=r"max_tokens: at most 16 \(got 32\)"):
        limits.check_llm({"prompt": "hi", "max_tokens": 32}, max_tokens_limit=16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fee": 0}, "fee: must be a positive number of wei (got 0)"),
        ({"fee": -5}, "fee: must be a positive number of wei (got -5)"),
        ({"fee": 1.5}, "fee: must be an integer number of wei (got 1.5)"),
        ({"stage_timeout": 0}, "stage_timeout: must be a positive number of seconds (got 0)"),
        ({"stage_timeout": -1}, "stage_timeout: must be a positive number of seconds (got -1)"),
    ],
)
async def test_fee_and_stage_timeout_must_be_positive(kwargs: dict[str, Any], message: str) -> None:
    client = Client(config=NOWHERE)
    with pytest.raises(ValidationError) as refused:
        await client.submit(TaskType.ECHO, "echo", {"data": 1}, **kwargs)
    assert str(refused.value) == message
    assert client.state == ClientState.UNOPENED


@pytest.mark.parametrize("timeout", [0, -1, 0.0])
async def test_a_wait_that_is_not_positive_is_refused_before_submitting(timeout: float) -> None:
    client = Client(config=NOWHERE)
    with pytest.raises(ValidationError, match="timeout: must be a positive number of seconds"):
        await client.run(TaskType.ECHO, "echo", {"data": 1}, timeout=timeout)
    assert client.state == ClientState.UNOPENED


def test_the_sync_client_refuses_a_zero_wait_too() -> None:
    with SyncClient(config=NOWHERE) as client, pytest.raises(ValidationError, match=r"timeout: .*\(got 0\)"):
        client.run(TaskType.ECHO, "echo", {"data": 1}, timeout=0)


def test_parameters_larger_than_the_relay_takes_are_refused() -> None:
    result_key = "ab" * 32
    fits = TaskParams(task_type=TaskType.ECHO, model="echo", inputs={"data": "x"}, result_key=result_key).encode()
    limits.check_params_size(fits)
    big = b"x" * (DEFAULT_MAX_PARAMS_BYTES - limits.SEAL_OVERHEAD_BYTES + 1)
    with pytest.raises(ValidationError, match=rf"parameters: at most {DEFAULT_MAX_PARAMS_BYTES} bytes"):
        limits.check_params_size(big)
    limits.check_params_size(big[:-1])  # exactly the relay's limit once sealed


async def test_submit_refuses_parameters_over_the_relay_limit() -> None:
    """Texts within the count limit but too large in total for the relay."""
    client = Client(config=NOWHERE)
    texts = ["y" * (20 * 1024)] * 250  # 5 MB of text, 250 texts
    with pytest.raises(ValidationError, match="parameters: at most 4194304 bytes encrypted"):
        await client.submit(TaskType.EMBED, "all-minilm-l6-v2", {"texts": texts})
    assert client.state == ClientState.UNOPENED


@pytest.mark.parametrize(
    ("task_type", "model", "message"),
    [
        (TaskType.LLM, "echo", "model: 'echo' runs echo tasks, not text-generation tasks"),
        (TaskType.EMBED, "tiny-llm", "model: 'tiny-llm' runs text-generation tasks, not embedding tasks"),
        (TaskType.LLM, "all-minilm-l6-v2", "model: 'all-minilm-l6-v2' runs embedding tasks, not text-generation"),
        (TaskType.ECHO, "my-llama", "model: 'my-llama' runs text-generation tasks, not echo tasks (use echo)"),
    ],
)
async def test_a_model_of_another_task_type_is_refused(task_type: TaskType, model: str, message: str) -> None:
    inputs = {TaskType.ECHO: {"data": 1}, TaskType.EMBED: {"texts": ["a"]}, TaskType.LLM: {"prompt": "a"}}[task_type]
    client = Client(config=NOWHERE)
    with pytest.raises(ValidationError) as refused:
        await client.submit(task_type, model, inputs)
    assert str(refused.value).startswith(message)
    assert client.state == ClientState.UNOPENED


def test_every_task_type_has_its_models_by_name() -> None:
    assert limits.task_type_of("echo") == TaskType.ECHO
    assert limits.task_type_of("all-minilm-l6-v2") == TaskType.EMBED
    assert limits.task_type_of("tiny-llm") == TaskType.LLM
    assert limits.task_type_of("llama3") == TaskType.LLM


def test_the_node_executors_use_the_fixed_model_names() -> None:
    from gridtask.node.executors.echo import ECHO
    from gridtask.node.executors.embed import MINILM

    assert limits.task_type_of(ECHO) == EchoExecutor.task_type
    assert limits.task_type_of(MINILM) == EmbedExecutor.task_type


def test_a_valid_workflow_passes_and_echo_data_may_be_any_json() -> None:
    workflow = Workflow(steps=[Step(prompt="Poem about {{topic}}", output="poem")], return_value="poem",
                        memory={"topic": "sea"})
    limits.check_task(TaskType.LLM, "tiny-llm", {"workflow": workflow.model_dump(), "max_tokens": 8})
    for data in [True, None, 0, [1, "a"], {"k": False}]:
        assert limits.check_echo({"data": data}) == data


@pytest.mark.parametrize(
    ("code", "params", "expected"),
    [
        (3, {"texts": ["x"] * 8000}, "texts: at most 256 per task (got 8000)"),
        (3, {"texts": ["fine"]}, TaskErrorCode.INVALID_PARAMETERS.explanation),
        (1, {"texts": ["x"] * 8000}, TaskErrorCode.PARAMETERS_HASH_MISMATCH.explanation),
        (4, None, TaskErrorCode.UNDECRYPTABLE.explanation),
        (99, None, "the node reported task error code 99, which this version does not know"),
    ],
)
def test_a_task_error_is_explained(code: int, params: dict[str, Any] | None, expected: str) -> None:
    raw = None if params is None else TaskParams(
        task_type=TaskType.EMBED, model="all-minilm-l6-v2", inputs=params, result_key="ab" * 32).encode()
    assert limits.explain_task_error(code, raw) == expected
