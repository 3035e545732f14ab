"""The OpenAI-compatible executor against a small fake HTTP server (starlette + uvicorn),
for what a real server does not do on demand: answer garbage, an empty or null completion,
a 500, or show which requests and headers reached it.

The executor against a real OpenAI-compatible server (``transformers serve`` with the tiny
model), and a devnet node using it, are in ``tests/e2e/test_openai_server.py``.

The fake answers deterministically: the reply is the last user message with its words
reversed. A few model names make it misbehave.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gridtask.node.executors.base import ExecutorFailure, InvalidTaskParameters
from gridtask.node.executors.llm import EMPTY_ANSWER, OpenAICompatibleExecutor

MODEL = "llama3.2:1b"


def reverse_words(text: str) -> str:
    return " ".join(reversed(text.split()))


class FakeChatServer:
    """Records every request; answers by ``reverse_words`` or, for some models, badly."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, Any], str | None]] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append((body, request.headers.get("authorization")))
        model = body["model"]
        if model == "broken":
            return JSONResponse({"error": "model crashed"}, status_code=500)
        if model == "garbage":
            return JSONResponse({"object": "not a completion"})
        last = body["messages"][-1]["content"]
        content = {"empty": "", "null": None, "lossy": "caf\ufffd au lait\ufffd", "all-lossy": "\ufffd\ufffd"}.get(
            model, reverse_words(last)
        )
        message = {"role": "assistant", "content": content}
        return JSONResponse({"object": "chat.completion", "choices": [{"message": message}]})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FakeChatServer]]:
    fake = FakeChatServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound before the thread starts: no race for the port
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(fake.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", fake
    uv.should_exit = True
    thread.join(timeout=5)
    sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_request_carries_the_key_the_remote_name_and_greedy_settings(
    server: tuple[str, FakeChatServer],
) -> None:
    """What the server is sent (a real server answers without showing it)."""
    url, fake = server
    executor = OpenAICompatibleExecutor("llama-1b", url, api_key="sk-test", remote_model=MODEL)
    result = await executor.run("llama-1b", {"prompt": "one two three", "max_tokens": 7})
    assert result == {"text": "three two one"}
    body, authorization = fake.requests[-1]
    assert body["model"] == MODEL
    assert body["messages"] == [{"role": "user", "content": "one two three"}]
    assert (body["temperature"], body["seed"], body["max_tokens"], body["stream"]) == (0, 0, 7, False)
    assert authorization == "Bearer sk-test"


async def test_no_key_sends_no_authorization_header(server: tuple[str, FakeChatServer]) -> None:
    url, fake = server
    await OpenAICompatibleExecutor(MODEL, url).run(MODEL, {"prompt": "a b"})
    assert fake.requests[-1][1] is None


async def test_bytes_the_server_could_not_decode_are_dropped(server: tuple[str, FakeChatServer]) -> None:
    """U+FFFD marks bytes that were not UTF-8, as the local executor drops them."""
    url, _ = server
    executor = OpenAICompatibleExecutor(MODEL, url, remote_model="lossy")
    assert await executor.run(MODEL, {"prompt": "hi"}) == {"text": "caf au lait"}
    executor = OpenAICompatibleExecutor(MODEL, url, remote_model="all-lossy")
    assert await executor.run(MODEL, {"prompt": "hi"}) == {"text": EMPTY_ANSWER}


@pytest.mark.parametrize("remote_model", ["empty", "null"])
async def test_empty_completion_becomes_a_non_empty_answer(
    server: tuple[str, FakeChatServer], remote_model: str
) -> None:
    executor = OpenAICompatibleExecutor(MODEL, server[0], remote_model=remote_model)
    assert await executor.run(MODEL, {"prompt": "hi"}) == {"text": EMPTY_ANSWER}


@pytest.mark.parametrize("remote_model", ["broken", "garbage"])
async def test_bad_server_answer_is_a_local_failure(
    server: tuple[str, FakeChatServer], remote_model: str
) -> None:
    executor = OpenAICompatibleExecutor(MODEL, server[0], remote_model=remote_model)
    with pytest.raises(ExecutorFailure) as info:
        await executor.run(MODEL, {"prompt": "hi"})
    assert not isinstance(info.value, InvalidTaskParameters)


async def test_down_server_is_a_local_failure_not_invalid_parameters() -> None:
    executor = OpenAICompatibleExecutor(MODEL, f"http://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(Exception) as info:
        await executor.run(MODEL, {"prompt": "hi"})
    assert isinstance(info.value, ExecutorFailure)
    assert not isinstance(info.value, InvalidTaskParameters)


async def test_invalid_inputs_never_reach_the_server(server: tuple[str, FakeChatServer]) -> None:
    url, fake = server
    executor = OpenAICompatibleExecutor(MODEL, url, max_new_tokens_limit=16)
    before = len(fake.requests)
    refused: list[dict[str, Any]] = [{"prompt": "hi", "max_tokens": 17}, {"prompt": ["hi"]}, {"workflow": {}}]
    for inputs in refused:
        with pytest.raises(InvalidTaskParameters):
            await executor.run(MODEL, inputs)
    with pytest.raises(InvalidTaskParameters):
        await executor.run("other-model", {"prompt": "hi"})
    assert len(fake.requests) == before
