"""Fixtures shared by the node's tests: models are built or loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in these tests may reach a model hub; a stray download fails instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny causal LM, built once for the whole session (a few seconds on 2 cores)."""
    from gridtask.node.executors.tiny_llm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("models") / "tiny-llm")
