"""Scores by task type and the one agreement rule (SPEC8 §4), without a model.

The real MiniLM outputs that fix the EMBED threshold are in tests/node/test_similarity.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from gridtask.crypto import result_digest
from gridtask.exceptions import ValidationError
from gridtask.scoring import (
    SIMHASH_BITS,
    SIMILARITY_BITS,
    SIMILARITY_TASK_TYPES,
    canonical_json,
    hamming,
    result_matches_score,
    score,
    scores_agree,
    simhash,
)
from gridtask.types import TaskType

# Exact numbers: (i*7 + j*3) % 11 tenths, so the input is the same float on every machine.
FIXED_VECTORS = [[((i * 7 + j * 3) % 11) / 10 - 0.5 for j in range(384)] for i in range(4)]
FIXED_SIMHASH = 0x82108337C1F72F2A1E8CCE2255F7059A


def unit_vectors(rng: np.random.Generator, texts: int, dim: int = 384) -> np.ndarray:
    vectors = rng.normal(size=(texts, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def with_noise(rng: np.random.Generator, vectors: np.ndarray, relative: float) -> np.ndarray:
    """Each vector plus noise whose norm is ``relative`` times the vector's."""
    noise = rng.normal(size=vectors.shape)
    noise *= relative * np.linalg.norm(vectors, axis=1, keepdims=True) / np.linalg.norm(noise, axis=1, keepdims=True)
    return vectors + noise


def embed_result(vectors: np.ndarray | list) -> bytes:
    """What the node scores: the executor's result, canonical, rounded as the executor rounds."""
    rows = np.asarray(vectors).round(6).tolist()
    return canonical_json({"embeddings": rows, "dim": len(rows[0]) if rows else 384})


# --- the score -------------------------------------------------------------------------------


@pytest.mark.parametrize("task_type", [TaskType.ECHO, TaskType.LLM])
def test_exact_types_score_the_result_digest(task_type: TaskType) -> None:
    result = canonical_json({"data": "hello"})
    assert score(result, task_type) == result_digest(result)
    assert score(result, task_type).hex() == "f00ffd020c49d52427f7344a42f74cc008246b906d0725882540b9cfb2828be6"
    assert score(canonical_json({"data": "hellp"}), task_type) != score(result, task_type)


def test_embed_score_is_simhash_then_low_half_of_the_digest() -> None:
    result = canonical_json({"embeddings": FIXED_VECTORS, "dim": 384})
    value = score(result, TaskType.EMBED)
    assert len(value) == 32
    assert value[:16] == FIXED_SIMHASH.to_bytes(16, "big")
    assert value[16:] == result_digest(result)[16:]
    assert value.hex() == "82108337c1f72f2a1e8cce2255f7059a29348011e44f9b0aa16b33ca665166ca"


def test_score_needs_the_task_type() -> None:
    with pytest.raises(TypeError):
        score(b"{}")  # type: ignore[call-arg]


def test_simhash_is_fixed_for_a_fixed_input() -> None:
    """The planes come from a fixed seed: another seed or stream changes this value, and
    then nodes of different versions would disagree."""
    assert simhash(FIXED_VECTORS) == FIXED_SIMHASH
    assert simhash(np.array(FIXED_VECTORS)) == FIXED_SIMHASH


@pytest.mark.parametrize(
    ("result", "match"),
    [
        (b"not json", "must be JSON"),
        (b"\xff", "must be JSON"),
        (b'{"vectors": [[1.0]]}', "no such list"),
        (b'{"embeddings": [1.0, 2.0]}', "no such list"),
        (b'[[1.0]]', "no such list"),
        (b'{"embeddings": [[1.0, 2.0], [1.0]]}', "one length"),
        (b'{"embeddings": [["1.0"]]}', "numbers only"),
        (b'{"embeddings": [[true]]}', "numbers only"),
        (b'{"embeddings": [[NaN]]}', "finite numbers only"),
        (b'{"embeddings": [[-Infinity]]}', "finite numbers only"),
    ],
)
def test_a_malformed_embedding_result_is_a_validation_error(result: bytes, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        score(result, TaskType.EMBED)


def test_an_empty_batch_hashes_to_zero() -> None:
    assert simhash([]) == 0
    assert score(canonical_json({"embeddings": [], "dim": 384}), TaskType.EMBED)[:16] == bytes(16)


def test_simhash_refuses_non_finite_numbers_and_ragged_input() -> None:
    with pytest.raises(ValidationError, match="finite"):
        simhash([[float("inf"), 0.0]])
    with pytest.raises(ValidationError, match="equal-length vectors"):
        simhash([1.0, 2.0])


# --- the similarity hash's behaviour ----------------------------------------------------------


def test_rounding_differences_keep_every_bit() -> None:
    """Honest reruns differ by one step of the 6th decimal in some numbers (measured on MiniLM).

    Jittering every number so (harsher than any measured rerun) flips 0.1 bit on average;
    over 400 such trials never more than 2."""
    rng = np.random.default_rng(0)
    for texts in (1, 8, 64, 256):
        vectors = unit_vectors(rng, texts).round(6)
        jitter = rng.integers(-1, 2, size=vectors.shape) * 1e-6
        assert hamming(simhash(vectors), simhash(vectors + jitter)) <= 2


def test_perturbed_or_unrelated_vectors_look_random() -> None:
    rng = np.random.default_rng(1)
    vectors = unit_vectors(rng, 32)
    base = simhash(vectors)
    assert hamming(base, simhash(with_noise(rng, vectors, 0.05))) > 40
    assert hamming(base, simhash(unit_vectors(rng, 32))) > 40
    assert hamming(base, simhash(vectors * 1.5)) > 40  # vectors of the wrong length


def test_order_matters() -> None:
    rng = np.random.default_rng(2)
    vectors = unit_vectors(rng, 32)
    swapped = vectors.copy()
    swapped[[3, 17]] = swapped[[17, 3]]
    assert hamming(simhash(vectors), simhash(swapped)) > 40  # every bit randomized, not only half


def test_the_distance_grows_with_the_perturbation() -> None:
    """Below the grid step few bits move, above it about half: the hash resolves distance."""
    rng = np.random.default_rng(3)
    vectors = unit_vectors(rng, 32)
    base = simhash(vectors)
    distances = [
        np.mean([hamming(base, simhash(with_noise(rng, vectors, r))) for _ in range(8)])
        for r in (1e-4, 1e-3, 1e-2, 1e-1)
    ]
    assert distances == sorted(distances)
    assert distances[0] < 2 and distances[-1] > 50


def test_a_full_batch_hashes_in_tens_of_milliseconds() -> None:
    rows = unit_vectors(np.random.default_rng(4), 256).round(6).tolist()
    simhash(rows)  # planes drawn and cached
    start = time.perf_counter()
    for _ in range(10):
        simhash(rows)
    per_call = (time.perf_counter() - start) / 10
    assert per_call < 0.05  # measured ~5 ms from Python lists, 0.5 ms from an array


# --- the agreement rule -----------------------------------------------------------------------


def test_every_task_type_has_a_threshold_and_only_similarity_types_a_nonzero_one() -> None:
    assert set(SIMILARITY_BITS) == set(TaskType)
    assert {t for t, bits in SIMILARITY_BITS.items() if bits} == SIMILARITY_TASK_TYPES == {TaskType.EMBED}
    assert 0 < SIMILARITY_BITS[TaskType.EMBED] < SIMHASH_BITS // 4


@pytest.mark.parametrize("task_type", [TaskType.ECHO, TaskType.LLM])
def test_exact_types_agree_only_on_equal_scores(task_type: TaskType) -> None:
    a = score(b'{"text":"a poem"}', task_type)
    assert scores_agree(a, a, task_type)
    flipped = bytes([a[0] ^ 1]) + a[1:]  # one bit of the high half
    assert not scores_agree(a, flipped, task_type)
    assert not scores_agree(a, a[:31] + bytes([a[31] ^ 1]), task_type)


def flip_high_bits(value: bytes, bits: int) -> bytes:
    high = int.from_bytes(value[:16], "big") ^ ((1 << bits) - 1)
    return high.to_bytes(16, "big") + value[16:]


def test_similarity_types_agree_within_the_threshold_of_the_high_half() -> None:
    threshold = SIMILARITY_BITS[TaskType.EMBED]
    a = score(embed_result(FIXED_VECTORS), TaskType.EMBED)
    other_bytes = a[:16] + bytes(16)  # same hash, other result bytes: the low half is not compared
    assert scores_agree(a, other_bytes, TaskType.EMBED)
    assert scores_agree(a, flip_high_bits(a, threshold), TaskType.EMBED)
    assert not scores_agree(a, flip_high_bits(a, threshold + 1), TaskType.EMBED)
    assert scores_agree(flip_high_bits(a, threshold + 1), a, TaskType.EMBED) is False  # symmetric


def test_the_networks_threshold_overrides_the_default() -> None:
    a = score(embed_result(FIXED_VECTORS), TaskType.EMBED)
    b = flip_high_bits(a, 3)
    assert scores_agree(a, b, TaskType.EMBED, similarity_bits=3)
    assert not scores_agree(a, b, TaskType.EMBED, similarity_bits=2)
    # 0 means the high halves must be equal; the low half (the digest's) is not compared,
    # as on chain: two honest reruns differ there
    assert not scores_agree(a, flip_high_bits(a, 1), TaskType.EMBED, similarity_bits=0)
    assert scores_agree(a, a[:16] + bytes(16), TaskType.EMBED, similarity_bits=0)
    # and an exact type ignores any threshold: the whole score, as the contract compares it
    echo = score(b"x", TaskType.ECHO)
    assert not scores_agree(echo, flip_high_bits(echo, 1), TaskType.ECHO, similarity_bits=1)


def test_honest_like_results_agree_and_noisy_ones_do_not() -> None:
    """End to end through the score: rounding jitter agrees, 5% noise does not."""
    rng = np.random.default_rng(5)
    vectors = unit_vectors(rng, 32)
    honest = score(embed_result(vectors), TaskType.EMBED)
    rerun = score(embed_result(vectors + rng.integers(-1, 2, size=vectors.shape) * 1e-6), TaskType.EMBED)
    noisy = score(embed_result(with_noise(rng, vectors, 0.05)), TaskType.EMBED)
    assert honest != rerun  # the bytes differ ...
    assert scores_agree(honest, rerun, TaskType.EMBED)  # ... and still agree
    assert not scores_agree(honest, noisy, TaskType.EMBED)


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33)])
def test_scores_agree_refuses_a_score_of_the_wrong_length(bad: bytes) -> None:
    with pytest.raises(ValidationError, match="a score is 32 bytes"):
        scores_agree(bytes(32), bad, TaskType.ECHO)


def test_scores_agree_refuses_a_negative_threshold() -> None:
    with pytest.raises(ValidationError, match="0 or more"):
        scores_agree(bytes(32), bytes(32), TaskType.EMBED, similarity_bits=-1)



# --- what a dispute proves ---------------------------------------------------------------------


@pytest.mark.parametrize("task_type", [TaskType.ECHO, TaskType.LLM])
def test_an_exact_result_matches_only_its_own_score(task_type: TaskType) -> None:
    result = canonical_json({"text": "a poem"})
    assert result_matches_score(result, score(result, task_type), task_type)
    assert not result_matches_score(canonical_json({"text": "a poen"}), score(result, task_type), task_type)


def test_an_embedding_result_matches_on_the_digest_half_only() -> None:
    """The contract compares the low 128 bits in a dispute: a node cannot deliver other
    vectors that happen to hash alike, and a creator cannot claim a mismatch over a SimHash
    bit its own machine rounded differently."""
    result = embed_result(FIXED_VECTORS)
    committed = score(result, TaskType.EMBED)
    assert result_matches_score(result, committed, TaskType.EMBED)
    assert result_matches_score(result, flip_high_bits(committed, 5), TaskType.EMBED)
    rerun = embed_result(np.array(FIXED_VECTORS) + 1e-6)
    assert scores_agree(score(rerun, TaskType.EMBED), committed, TaskType.EMBED)  # an honest rerun agrees ...
    assert not result_matches_score(rerun, committed, TaskType.EMBED)  # ... but is not the delivered result
    # an exact type's whole score is the digest
    echo = canonical_json({"echo": "x"})
    assert result_matches_score(echo, score(echo, TaskType.ECHO), TaskType.ECHO)
    assert not result_matches_score(echo, flip_high_bits(score(echo, TaskType.ECHO), 1), TaskType.ECHO)
