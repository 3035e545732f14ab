"""The OpenAI-compatible executor against a server this project did not write.

``transformers serve`` (Hugging Face's OpenAI-compatible server, from the pinned
``transformers``) serves the tiny model built here, offline (``HF_HUB_OFFLINE=1``), in its
own process. The executor is asked directly, then through a whole devnet: a node started
with ``--model openai:NAME=URL#MODEL`` runs a prompt task on a real anvil, through the real
relay, for the SDK.

The tiny model is a base model with no chat template, and a chat endpoint must have one to
turn messages into tokens; the served copy gets the simplest one, ``<s>`` and the user's
text, which is exactly what ``LocalLLMExecutor`` feeds the same weights. So the server's
answer is checked word for word against the local executor's: same weights, greedy
decoding, same text, whichever backend a node uses.

The small fake server in ``tests/node/test_openai_executor.py`` stays for what a real
server does not do on demand: garbage bodies, empty or null completions, a 500.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gridtask.chain.anvil import free_port
from gridtask.node.executors.base import ExecutorFailure, InvalidTaskParameters
from gridtask.node.executors.llm import EMPTY_ANSWER, LocalLLMExecutor, OpenAICompatibleExecutor
from gridtask.node.executors.tiny_llm import TINY_LLM, build_tiny_llm
from gridtask.sdk import Client, TaskState, TaskType
from gridtask.workflows import Workflow

from .conftest import assert_all_ended_and_conserved, start_devnet

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVED = "tiny-served"
"""The model ID the node announces on chain for the served model."""
CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}"
"""The prompt as the local executor gives it to the same base model: ``<s>`` and the text."""
TRANSFORMERS = Path(sys.executable).with_name("transformers")
START_TIMEOUT_S = 240  # imports torch and FastAPI, then loads the model, on a busy 2-core machine


@dataclass(frozen=True)
class ServedModel:
    url: str
    model: str
    """The name the server knows the model by: its directory (``transformers serve DIR``)."""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("models") / TINY_LLM)


@pytest.fixture(scope="module")
def local(tiny_dir: Path) -> LocalLLMExecutor:
    """The same weights run in-process: what every answer is checked against."""
    executor = LocalLLMExecutor(SERVED, tiny_dir)
    executor.load()
    return executor


@pytest.fixture(scope="module")
def served(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    home = tmp_path_factory.mktemp("transformers-serve")
    model_dir = home / "tiny-chat"
    shutil.copytree(tiny_dir, model_dir)
    (model_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    # The server names a model "NAME@REVISION": a directory with an "@" would not load.
    assert "@" not in str(model_dir) and "#" not in str(model_dir)
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(home / "hf"))
    log_path = home / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(TRANSFORMERS), "serve", str(model_dir), "--device", "cpu", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log_path)
        yield ServedModel(url=url, model=str(model_dir))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """The model is loaded before the server listens, so a healthy server can answer."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"transformers serve did not come up in {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


def executor_for(served: ServedModel) -> OpenAICompatibleExecutor:
    """The executor a node builds from ``--model openai:tiny-served=URL#MODEL``."""
    return OpenAICompatibleExecutor(SERVED, served.url, remote_model=served.model)


# --- the executor against the real server ----------------------------------------------


async def test_prompt_answer_is_the_local_models_word_for_word(served: ServedModel, local: LocalLLMExecutor) -> None:
    executor = executor_for(served)
    answers = {}
    for max_tokens in (4, 12):
        inputs = {"prompt": "hello", "max_tokens": max_tokens}
        answers[max_tokens] = await executor.run(SERVED, inputs)
        assert answers[max_tokens] == await local.run(SERVED, inputs)
        assert answers[max_tokens]["text"].strip() and answers[max_tokens]["text"] != EMPTY_ANSWER
    assert answers[4] != answers[12]  # max_tokens reached the server


async def test_default_max_tokens_and_a_base_url_ending_in_v1(served: ServedModel, local: LocalLLMExecutor) -> None:
    executor = OpenAICompatibleExecutor(SERVED, f"{served.url}/v1/", remote_model=served.model)
    prompt = {"prompt": "What is the capital of France?"}
    assert await executor.run(SERVED, prompt) == await local.run(SERVED, prompt)


async def test_workflow_runs_step_by_step_on_the_server(
    served: ServedModel, local: LocalLLMExecutor, poem_then_title: Workflow
) -> None:
    inputs = {"workflow": poem_then_title.model_dump(), "max_tokens": 6}
    result = await executor_for(served).run(SERVED, inputs)
    assert set(result["memory"]) == {"topic", "poem", "title"}
    assert result["text"] == result["memory"]["title"]
    assert result == await local.run(SERVED, inputs)


async def test_a_model_the_server_does_not_serve_is_a_local_failure(served: ServedModel) -> None:
    """The server refuses (400: it is pinned to another model): the node's problem, so the
    task is aborted and refunded, never reported as the task's fault."""
    executor = OpenAICompatibleExecutor(SERVED, served.url, remote_model="not-this-one")
    with pytest.raises(ExecutorFailure, match="answered 400") as info:
        await executor.run(SERVED, {"prompt": "hi"})
    assert not isinstance(info.value, InvalidTaskParameters)


# --- a whole devnet ---------------------------------------------------------------------


async def test_devnet_node_runs_a_prompt_task_through_transformers_serve(
    tmp_path: Path, served: ServedModel, local: LocalLLMExecutor
) -> None:
    spec = f"openai:{SERVED}={served.url}#{served.model}"  # as an operator writes it for `gridtask node`
    net = await start_devnet(tmp_path, nodes=1, node_models=[spec])
    try:
        assert net.config is not None
        inputs = {"prompt": "hello", "max_tokens": 8}
        async with Client(config=net.config) as client:
            handle = await client.submit(TaskType.LLM, SERVED, inputs)
            result = await client.result(handle, timeout=180)
            info = await client.task(handle.commitment)
        assert result == await local.run(SERVED, inputs)
        assert info is not None and info.state == TaskState.SUCCESS
        assert info.node.lower() == net.node_identities[0].address.lower()
        await assert_all_ended_and_conserved(net)
    finally:
        net.stop()
