"""The EMBED agreement threshold, on real all-MiniLM-L6-v2 outputs (issue 8, "Scores that fit
the output").

Honest nodes rerun the same texts on 1 or 2 threads and with batch sizes 1, 32 or all of
them: their results differ in the 6th decimal (the bytes differ, so an exact score could
not compare them) and their scores' 128-bit similarity hashes land within
``SIMILARITY_BITS[EMBED]``. Cheats land far over it: a wrong model (one layer's weights
perturbed by 10%, or the last layer skipped), embeddings of other texts, random unit
vectors, the honest output with 5% or 10% relative noise, two vectors swapped.

Measured on 2 loaded CPU cores (torch 2.13, sentence-transformers 6.2) by running this
file (``.venv/bin/python tests/node/test_similarity.py``, about 6 minutes): 360 subject x
predicate sentences, batches of 1, 8, 32, 120 and 256 texts (25 batches); honest = every
pair of the 6 variants (threads 1/2 x batch size 1/32/all), 375 pairs, which held 2 to 4
different byte strings per batch of 8 or more texts; each cheat against the honest output
once per batch (25 trials; the swap 15, batches of 8 or more):

    honest pairs                          max  0 bits (375 pairs)
    layer 3 query weights * (1 + 0.1 g)   min 51      last layer skipped      min 53
    int8 dynamic quantization             min 52      other texts             min 56
    random unit vectors                   min 52      two vectors swapped     min 51
    1% / 5% / 10% relative noise          min 41 / 52 / 53

SIMILARITY_BITS[EMBED] = 16 sits between: an honest machine whose numbers differ by up to
1e-4 each (a hundred rounding steps, e.g. another kind of CPU or a GPU; not measured here)
still lands around 6 bits, and a result that looks unrelated (64 bits on average) passes
with probability 3e-19. The thread count did not change a single number on this CPU
(fresh processes with 1, 2 and 4 threads gave bit-identical raw vectors); the batch size
did. For comparison, a classic sign SimHash of the same batches moved only 0-3 bits for
5% noise and 0 for the perturbed layer: why the score's hash quantizes its projections
(gridtask.scoring.simhash).

The tests below check the same on 24 texts, so that they run in CI in seconds.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import sys
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from gridtask.node.executors.embed import MINILM, EmbedExecutor
from gridtask.scoring import SIMILARITY_BITS, canonical_json, hamming, score, scores_agree
from gridtask.types import TaskType

pytestmark = pytest.mark.slow

THRESHOLD = SIMILARITY_BITS[TaskType.EMBED]
HONEST_MAX_BITS = 2
"""Honest reruns measured 0 bits apart; this leaves room for a rare flipped bit."""
VARIANTS = list(itertools.product((1, 2), (1, 32, None)))
"""(threads, batch size) an honest node may use; None: the whole batch at once."""

TEXTS = [
    "The old fisherman repaired the leaking boat before the storm arrived.",
    "A quantum computer factored a large number in seconds.",
    "My neighbour's cat slept on the warm windowsill all afternoon.",
    "The central bank raised interest rates by half a point.",
    "A small startup in Berlin released an open-source database.",
    "The orchestra played Beethoven's ninth symphony.",
    "An autonomous drone delivered medicine to a remote village.",
    "The city council voted to build a new bicycle lane.",
    "A hungry student cooked pasta at three in the morning.",
    "The volcano erupted after centuries of silence.",
    "Rain.",
    "How do I reset my password if I no longer have access to the email address on the account?",
    "Les enfants jouent dans le jardin après l'école.",
    "def add(a, b): return a + b",
    "The mitochondria is the powerhouse of the cell, as every biology student learns early on.",
    "Shipping was delayed because the container ship ran aground in the canal.",
    "She won the chess tournament without losing a single game.",
    "Fresh bread smells wonderful in the early morning.",
    "Error 404: the page you requested could not be found.",
    "Glaciers in the Alps have lost half their volume since 1900.",
    "The referee showed a red card in the final minute.",
    "Buy two, get one free on all winter jackets this weekend only.",
    "The telescope captured an image of a galaxy thirteen billion light years away.",
    "He forgot his umbrella and walked home soaked.",
]
OTHER_TEXTS = [
    "The library extended its opening hours for the exam period.",
    "A new species of frog was discovered in the rainforest.",
    "The train to Milan leaves from platform nine.",
    "Our quarterly revenue grew by twelve percent.",
    "The bakery on the corner sells the best croissants in town.",
    "Solar panels now cover the roof of the school.",
    "The museum returned the stolen painting to its owners.",
    "A marathon runner collapsed near the finish line but recovered.",
]
BATCHES = [TEXTS[:1], TEXTS[:8], TEXTS]

Variants = dict[tuple[int, int | None], bytes]


def executor_result(vectors: np.ndarray) -> bytes:
    """The bytes a node scores for these vectors: the executor's rounding, canonical JSON."""
    rows = [[round(float(x), 6) + 0.0 for x in row] for row in vectors]
    return canonical_json({"embeddings": rows, "dim": 384})


async def embed(executor: EmbedExecutor, texts: list[str], *, batch_size: int | None = 32, threads: int = 2) -> bytes:
    """The canonical result bytes of a real run of the embed executor."""
    executor.batch_size = batch_size or len(texts)
    torch.set_num_threads(threads)
    return canonical_json(await executor.run(MINILM, {"texts": texts}))


async def honest_variants(minilm: EmbedExecutor, texts: list[str]) -> Variants:
    return {(threads, size): await embed(minilm, texts, batch_size=size, threads=threads) for threads, size in VARIANTS}


def distance(a: bytes, b: bytes) -> int:
    """Hamming distance of the high halves of two EMBED scores."""
    sa, sb = score(a, TaskType.EMBED), score(b, TaskType.EMBED)
    return hamming(int.from_bytes(sa[:16], "big"), int.from_bytes(sb[:16], "big"))


def load_minilm() -> EmbedExecutor:
    executor = EmbedExecutor()
    executor.load()
    return executor


def make_wrong_models(minilm: EmbedExecutor) -> dict[str, EmbedExecutor]:
    """MiniLM with one layer's weights perturbed by 10%, with its last layer skipped, and
    with int8 weights: models a node might run instead to save work, or by mistake."""
    perturbed, shallow, int8 = EmbedExecutor(), EmbedExecutor(), EmbedExecutor()
    perturbed._model, shallow._model = copy.deepcopy(minilm._model), copy.deepcopy(minilm._model)
    weight = perturbed._model[0].auto_model.encoder.layer[3].attention.self.query.weight
    with torch.no_grad():
        weight.mul_(1 + 0.1 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    shallow._model[0].auto_model.encoder.layer = shallow._model[0].auto_model.encoder.layer[:5]
    with warnings.catch_warnings():  # torch's eager quantization warns that it is deprecated
        warnings.simplefilter("ignore")
        int8._model = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(minilm._model), {torch.nn.Linear}, dtype=torch.qint8
        )
    return {"layer 3 perturbed": perturbed, "last layer skipped": shallow, "int8 weights": int8}


async def cheats(
    rng: np.random.Generator,
    honest_result: bytes,
    batch: list[str],
    other_texts: list[str],
    minilm: EmbedExecutor,
    wrong_models: dict[str, EmbedExecutor],
) -> dict[str, bytes]:
    """Results a node could deliver without running the right model on the right texts."""
    vectors = np.array(json.loads(honest_result)["embeddings"])

    def noisy(relative: float) -> bytes:
        noise = rng.normal(size=vectors.shape)
        noise *= relative * np.linalg.norm(vectors, axis=1, keepdims=True) / np.linalg.norm(
            noise, axis=1, keepdims=True
        )
        return executor_result(vectors + noise)

    random_vectors = rng.normal(size=vectors.shape)
    delivered = {
        "random unit vectors": executor_result(random_vectors / np.linalg.norm(random_vectors, axis=1, keepdims=True)),
        "1% noise": noisy(0.01),
        "5% noise": noisy(0.05),
        "10% noise": noisy(0.10),
        "other texts": await embed(minilm, other_texts),
    }
    if len(batch) > 1:
        first, last = rng.choice(len(batch), 2, replace=False)
        swapped = vectors.copy()
        swapped[[first, last]] = swapped[[last, first]]
        delivered["two vectors swapped"] = executor_result(swapped)
    for name, model in wrong_models.items():
        delivered[name] = await embed(model, batch)
    return delivered


# --- the CI checks --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> EmbedExecutor:
    return load_minilm()


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def honest(minilm: EmbedExecutor) -> list[Variants]:
    """Per batch, the result of every (threads, batch size) an honest node might use."""
    previous = torch.get_num_threads()
    try:
        return [asyncio.run(honest_variants(minilm, texts)) for texts in BATCHES]
    finally:
        torch.set_num_threads(previous)


def test_honest_reruns_land_under_the_threshold(honest: list[Variants]) -> None:
    differing_bytes = 0
    for results in honest:
        for a, b in itertools.combinations(results.values(), 2):
            differing_bytes += a != b
            assert distance(a, b) <= HONEST_MAX_BITS
            assert scores_agree(score(a, TaskType.EMBED), score(b, TaskType.EMBED), TaskType.EMBED)
    # the batch size changes the last digits: exact scores would have failed honest nodes
    assert differing_bytes > 0
    assert HONEST_MAX_BITS < THRESHOLD


async def test_cheats_land_over_the_threshold(honest: list[Variants], minilm: EmbedExecutor) -> None:
    rng = np.random.default_rng(8)
    wrong_models = make_wrong_models(minilm)
    closest: dict[str, int] = {}
    for batch, results in zip(BATCHES, honest, strict=True):
        reference = results[(2, 32)]
        others = (OTHER_TEXTS * 3)[: len(batch)]
        for name, result in (await cheats(rng, reference, batch, others, minilm, wrong_models)).items():
            bits = distance(reference, result)
            closest[name] = min(bits, closest.get(name, bits))
            agreed = scores_agree(score(reference, TaskType.EMBED), score(result, TaskType.EMBED), TaskType.EMBED)
            assert not agreed, f"{name} on {len(batch)} texts agreed with the honest score ({bits} bits apart)"
    assert len(closest) == 9
    assert min(closest.values()) > 2 * THRESHOLD, closest


# --- the full measurement (run this file) ---------------------------------------------------


def measurement_texts() -> list[str]:
    subjects = ["The old fisherman", "A quantum computer", "My neighbour's cat", "The central bank",
                "A small startup in Berlin", "The orchestra", "An autonomous drone", "The city council",
                "A hungry student", "The volcano"]  # fmt: skip
    predicates = ["repaired the leaking boat before the storm arrived", "factored a large number in seconds",
                  "slept on the warm windowsill all afternoon", "raised interest rates by half a point",
                  "released an open-source database", "played Beethoven's ninth symphony",
                  "delivered medicine to a remote village", "voted to build a new bicycle lane",
                  "cooked pasta at three in the morning", "erupted after centuries of silence",
                  "published a report on climate risk", "lost the keys to the laboratory"]  # fmt: skip
    texts = [f"{s} {p}." for s, p in itertools.product(subjects, predicates)]
    return texts + [f"{when}, {t[0].lower()}{t[1:]}" for when in ("Yesterday", "Last week") for t in texts]


async def measure() -> None:
    """Print the honest and cheat distances the module docstring reports."""
    minilm = load_minilm()
    wrong_models = make_wrong_models(minilm)
    texts = measurement_texts()
    rng = np.random.default_rng(2)
    found: dict[str, list[int]] = {}
    for size, trials in [(1, 10), (8, 6), (32, 6), (120, 2), (256, 1)]:
        for _ in range(trials):
            batch = list(rng.choice(texts, size, replace=False))
            results = await honest_variants(minilm, batch)
            for a, b in itertools.combinations(results.values(), 2):
                found.setdefault("honest pairs", []).append(distance(a, b))
            rest = [t for t in texts if t not in batch]
            others = list(rng.choice(rest, size, replace=False)) if len(rest) >= size else batch[1:] + batch[:1]
            reference = results[(2, 32)]
            for name, result in (await cheats(rng, reference, batch, others, minilm, wrong_models)).items():
                found.setdefault(name, []).append(distance(reference, result))
        print(f"batches of {size} done", file=sys.stderr)
    for name, bits in found.items():
        print(f"{name:24} min {min(bits):3} max {max(bits):3} mean {np.mean(bits):5.1f} over {len(bits)}")


if __name__ == "__main__":
    asyncio.run(measure())
