"""The language model's answer is valid text: bytes that are not UTF-8 (half a character
at the end of ``max_tokens``, a stray byte from a byte-level model) are dropped, never
shown as U+FFFD."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridtask.node.executors.llm import LocalLLMExecutor, without_invalid_bytes
from gridtask.node.executors.tiny_llm import TINY_LLM

# Each of these made the tiny model answer with U+FFFD before the fix.
PROMPTS = ["Hey there!", "hello", "Hi", "Write a poem about the sea.", "héllo wörld", "日本語", "a"]


@pytest.fixture(scope="module")
def llm(tiny_llm_dir: Path) -> LocalLLMExecutor:
    executor = LocalLLMExecutor(TINY_LLM, tiny_llm_dir)
    executor.load()
    return executor


def test_half_a_character_is_dropped_not_replaced(llm: LocalLLMExecutor) -> None:
    """The tiny model's own byte-level tokenizer, cut in the middle of a character."""
    tokenizer = llm._tokenizer
    ids = tokenizer("日本語", add_special_tokens=False).input_ids
    cut = next(n for n in range(1, len(ids)) if "\ufffd" in tokenizer.decode(ids[:n]))
    decoded = tokenizer.decode(ids[:cut])
    assert "\ufffd" in decoded  # what the tokenizer gives on its own
    text = without_invalid_bytes(decoded)
    assert "\ufffd" not in text and "日本語".startswith(text)
    assert without_invalid_bytes(tokenizer.decode(ids)) == "日本語"  # whole characters untouched


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS)
async def test_the_tiny_models_answers_are_valid_utf8(llm: LocalLLMExecutor, prompt: str) -> None:
    text = (await llm.run(TINY_LLM, {"prompt": prompt, "max_tokens": 32}))["text"]
    assert text.strip() and "\ufffd" not in text
    assert text.encode("utf-8").decode("utf-8") == text
    assert text == (await llm.run(TINY_LLM, {"prompt": prompt, "max_tokens": 32}))["text"]  # deterministic
