"""Model specs as operators write them: a language model may not take a fixed model's name,
or applications (which tell a model's task type by its name) would refuse to send it work."""

from __future__ import annotations

import pytest

from gridtask.node.settings import build_executors


@pytest.mark.parametrize("spec", ["llm:echo=/models/x", "openai:all-minilm-l6-v2=http://127.0.0.1:1"])
def test_a_language_model_named_like_a_fixed_model_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="give the language model another name"):
        build_executors([spec])


def test_language_models_with_their_own_names_are_built() -> None:
    executors = build_executors(["echo", "llm:my-model=/models/x", "openai:llama3=http://127.0.0.1:1#llama3:8b"])
    assert sorted(executors.all_models()) == ["echo", "llama3", "my-model"]
