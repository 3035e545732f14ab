from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from gridtask.node.executors.base import Executor, ExecutorSet, InvalidTaskParameters
from gridtask.node.executors.echo import ECHO, EchoExecutor
from gridtask.node.executors.embed import MAX_TEXTS, MINILM, EmbedExecutor, minilm_path
from gridtask.node.executors.llm import DEFAULT_MAX_TOKENS, EMPTY_ANSWER, LocalLLMExecutor
from gridtask.node.executors.tiny_llm import MARKER_FILE, TINY_LLM, build_tiny_llm
from gridtask.types import TaskErrorCode, TaskType
from gridtask.workflows import Step, Workflow


@pytest.fixture(scope="module")
def embedder() -> EmbedExecutor:
    return EmbedExecutor(batch_size=8)


@pytest.fixture(scope="module")
def llm(tiny_llm_dir: Path) -> LocalLLMExecutor:
    return LocalLLMExecutor(TINY_LLM, tiny_llm_dir, max_new_tokens_limit=64)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


# --- registry -------------------------------------------------------------------------


def test_executor_set_finds_by_task_type_and_model(tiny_llm_dir: Path) -> None:
    echo, embed = EchoExecutor(), EmbedExecutor()
    llm = LocalLLMExecutor(TINY_LLM, tiny_llm_dir)
    executors = ExecutorSet([echo, embed, llm])
    assert executors.find(TaskType.ECHO, ECHO) is echo
    assert executors.find(1, MINILM) is embed
    assert executors.find(TaskType.LLM, TINY_LLM) is llm
    assert executors.all_models() == sorted([ECHO, MINILM, TINY_LLM])
    assert all(isinstance(e, Executor) for e in (echo, embed, llm))


def test_unknown_model_is_invalid_parameters_with_its_code() -> None:
    executors = ExecutorSet([EchoExecutor()])
    with pytest.raises(InvalidTaskParameters, match="unknown model") as info:
        executors.find(TaskType.LLM, ECHO)
    assert info.value.code == TaskErrorCode.UNKNOWN_MODEL
    with pytest.raises(InvalidTaskParameters, match="unknown model"):
        executors.find(99, ECHO)


def test_two_executors_for_one_model_are_refused() -> None:
    with pytest.raises(ValueError, match="two executors"):
        ExecutorSet([EchoExecutor(), EchoExecutor()])


# --- echo -----------------------------------------------------------------------------


async def test_echo_returns_its_data() -> None:
    data = {"a": [1, 2.5, "x", None, True]}
    assert await EchoExecutor().run(ECHO, {"data": data}) == {"echo": data}


@pytest.mark.parametrize("inputs", [{}, {"text": "x"}, ["data"], {"data": b"bytes"}])
async def test_echo_refuses_inputs_that_are_not_json_data(inputs: object) -> None:
    with pytest.raises(InvalidTaskParameters) as info:
        await EchoExecutor().run(ECHO, inputs)  # type: ignore[arg-type]
    assert info.value.code == TaskErrorCode.INVALID_PARAMETERS


async def test_executor_refuses_a_model_it_does_not_serve() -> None:
    with pytest.raises(InvalidTaskParameters) as info:
        await EchoExecutor().run("gpt-5", {"data": 1})
    assert info.value.code == TaskErrorCode.UNKNOWN_MODEL


# --- embed ----------------------------------------------------------------------------


def test_minilm_path_is_the_packaged_model_directory() -> None:
    path = minilm_path()
    assert (path / "model.safetensors").is_file()
    assert (path / "modules.json").is_file()


@pytest.mark.parametrize(
    "inputs",
    [
        {},
        {"texts": "one string"},
        {"texts": []},
        {"texts": ["ok", 3]},
        {"texts": ["x"] * (MAX_TEXTS + 1)},
    ],
)
async def test_embed_refuses_malformed_texts_without_loading(inputs: dict) -> None:
    executor = EmbedExecutor()
    with pytest.raises(InvalidTaskParameters):
        await executor.run(MINILM, inputs)
    assert executor._model is None  # refused before paying for the model


@pytest.mark.slow
async def test_embed_gives_one_384_vector_per_text(embedder: EmbedExecutor) -> None:
    result = await embedder.run(MINILM, {"texts": ["hello world", "good morning"]})
    assert result["dim"] == 384
    assert [len(v) for v in result["embeddings"]] == [384, 384]
    assert all(round(x, 6) == x for v in result["embeddings"] for x in v)
    json.dumps(result, allow_nan=False)


@pytest.mark.slow
async def test_embed_is_deterministic(embedder: EmbedExecutor) -> None:
    inputs = {"texts": ["The cat sits on the mat.", "Proof of stake"]}
    first = await embedder.run(MINILM, inputs)
    second = await embedder.run(MINILM, inputs)
    assert json.dumps(first) == json.dumps(second)


@pytest.mark.slow
async def test_embed_similar_texts_are_closer_than_unrelated_ones(embedder: EmbedExecutor) -> None:
    texts = [
        "A man is playing a guitar.",
        "Someone plays an acoustic guitar.",
        "The stock market fell sharply today.",
    ]
    guitar, guitar2, market = (await embedder.run(MINILM, {"texts": texts}))["embeddings"]
    assert cosine(guitar, guitar2) > cosine(guitar, market) + 0.3


# --- tiny LLM -------------------------------------------------------------------------


def test_tiny_llm_build_is_reproducible_and_idempotent(tmp_path: Path, tiny_llm_dir: Path) -> None:
    again = build_tiny_llm(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_llm_dir / name).read_bytes(), name
    stamp = (again / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_llm(again) == again
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((again / MARKER_FILE).read_text())["seed"] == 0


def test_tiny_llm_with_another_seed_has_other_weights(tmp_path: Path, tiny_llm_dir: Path) -> None:
    other = build_tiny_llm(tmp_path / "other", seed=1)
    assert (other / "model.safetensors").read_bytes() != (
        tiny_llm_dir / "model.safetensors"
    ).read_bytes()


# --- local LLM ------------------------------------------------------------------------


@pytest.mark.slow
async def test_llm_is_deterministic_across_separately_loaded_instances(tiny_llm_dir: Path) -> None:
    inputs = {"prompt": "What is the capital of France?", "max_tokens": 16}
    first = await LocalLLMExecutor(TINY_LLM, tiny_llm_dir).run(TINY_LLM, inputs)
    second = await LocalLLMExecutor(TINY_LLM, tiny_llm_dir).run(TINY_LLM, inputs)
    assert first == second
    assert first["text"].strip()


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["", " ", "</s>", "hello", "ünïcødé ✓ 42"])
async def test_llm_answer_is_never_empty(llm: LocalLLMExecutor, prompt: str) -> None:
    for max_tokens in (1, 4):
        result = await llm.run(TINY_LLM, {"prompt": prompt, "max_tokens": max_tokens})
        assert result["text"].strip()


@pytest.mark.slow
async def test_llm_uses_the_default_max_tokens(llm: LocalLLMExecutor) -> None:
    prompt = "Once upon a time"
    default = await llm.run(TINY_LLM, {"prompt": prompt})
    lengths = {n: await llm.run(TINY_LLM, {"prompt": prompt, "max_tokens": n}) for n in
               (DEFAULT_MAX_TOKENS - 1, DEFAULT_MAX_TOKENS, DEFAULT_MAX_TOKENS + 1)}
    # The model does not stop early on this prompt, so one token more or less is another text...
    assert len({r["text"] for r in lengths.values()}) == 3, lengths
    # ...and the answer without max_tokens is exactly the one of DEFAULT_MAX_TOKENS tokens.
    assert default == lengths[DEFAULT_MAX_TOKENS]


@pytest.mark.parametrize(
    "inputs",
    [
        {},
        {"prompt": 42},
        {"prompt": "hi", "max_tokens": "8"},
        {"prompt": "hi", "max_tokens": True},
        {"prompt": "hi", "max_tokens": 0},
        {"prompt": "hi", "max_tokens": 65},
        {"prompt": "hi", "workflow": {}},
        {"workflow": "not an object"},
        {"workflow": {"steps": [], "return_value": "x"}},
    ],
)
async def test_llm_refuses_malformed_inputs(llm: LocalLLMExecutor, inputs: dict) -> None:
    with pytest.raises(InvalidTaskParameters):
        await llm.run(TINY_LLM, inputs)


@pytest.mark.slow
async def test_llm_prompt_longer_than_the_model_is_invalid(llm: LocalLLMExecutor) -> None:
    with pytest.raises(InvalidTaskParameters, match="over the model"):
        await llm.run(TINY_LLM, {"prompt": "word " * 3000, "max_tokens": 4})


@pytest.mark.slow
async def test_llm_runs_a_workflow_and_returns_its_memory(llm: LocalLLMExecutor, poem_then_title: Workflow) -> None:
    inputs = {"workflow": poem_then_title.model_dump(), "max_tokens": 8}
    result = await llm.run(TINY_LLM, inputs)
    assert set(result["memory"]) == {"topic", "poem", "title"}
    assert result["text"] == result["memory"]["title"] != ""
    alone = await llm.run(TINY_LLM, {"prompt": "Write a poem about the sea.", "max_tokens": 8})
    assert result["memory"]["poem"] == alone["text"]
    json.dumps(result)


async def test_llm_workflow_with_unknown_placeholder_is_invalid(llm: LocalLLMExecutor) -> None:
    workflow = Workflow(steps=[Step(prompt="About {{nobody}}", output="a")], return_value="a")
    with pytest.raises(InvalidTaskParameters, match="nobody"):
        await llm.run(TINY_LLM, {"workflow": workflow.model_dump()})


@pytest.mark.slow
async def test_llm_blank_decoding_falls_back_to_the_token_strings(
    tiny_llm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = LocalLLMExecutor(TINY_LLM, tiny_llm_dir)
    executor.load()
    decoded: list[list[int]] = []

    def blank(ids: list[int], **kwargs: object) -> str:
        decoded.append(list(ids))
        return " \n"

    monkeypatch.setattr(executor._tokenizer, "decode", blank)
    first = await executor.run(TINY_LLM, {"prompt": "hello", "max_tokens": 3})
    (ids,) = decoded
    tokens = executor._tokenizer.convert_ids_to_tokens(ids)
    assert ids and first == {"text": " ".join(str(t) for t in tokens)}
    assert first["text"] != EMPTY_ANSWER
    assert first == await executor.run(TINY_LLM, {"prompt": "hello", "max_tokens": 3})


@pytest.mark.slow
async def test_llm_keeps_the_event_loop_serving_while_it_works(tiny_llm_dir: Path) -> None:
    executor = LocalLLMExecutor(TINY_LLM, tiny_llm_dir)  # fresh: loading is part of the work
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    await executor.run(TINY_LLM, {"prompt": "tick tock", "max_tokens": 32})
    seen = ticks
    task.cancel()
    assert seen > 5
