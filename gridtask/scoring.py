"""What a node commits as its score, and the one rule by which two scores agree.

A result is first made canonical (JSON with sorted keys, no spaces), so that two honest
nodes with the same answer commit the same bytes. Then, by task type (SPEC8 §4):

- exact types (ECHO, LLM: deterministic output): the score is ``result_digest(R)``, the
  keccak of the framed result the contract can recompute in a dispute; two scores agree
  when they are equal.
- similarity types (EMBED: vectors that differ in their last digits between machines,
  thread counts and batch sizes): the high 128 bits are a SimHash of the embeddings, the
  low 128 bits the low half of ``result_digest(R)``. Two scores agree when their high
  halves differ in at most ``SIMILARITY_BITS[type]`` bits. The low half still binds the
  score to the exact bytes delivered: a creator disputes on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from gridtask.crypto import result_digest
from gridtask.exceptions import ValidationError
from gridtask.types import TaskType

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "SCORE_BYTES",
    "SIMHASH_BITS",
    "SIMHASH_RESOLUTION",
    "SIMILARITY_BITS",
    "SIMILARITY_TASK_TYPES",
    "canonical_json",
    "hamming",
    "result_matches_score",
    "score",
    "scores_agree",
    "simhash",
]

SCORE_BYTES = 32
SIMHASH_BITS = 128
"""The SimHash fills the score's high half; the low half stays a digest of the exact bytes."""
_HALF = SCORE_BYTES // 2

SIMILARITY_TASK_TYPES: frozenset[TaskType] = frozenset({TaskType.EMBED})
"""Task types whose score's high half is a SimHash (the others hash their exact output)."""

SIMILARITY_BITS: dict[TaskType, int] = {
    TaskType.ECHO: 0,
    TaskType.EMBED: 16,
    TaskType.LLM: 0,
    TaskType.SOURCE: 0,
    TaskType.SCRIPT: 0,
}
"""Per task type, the largest Hamming distance between the high 128 bits of two scores of a
similarity type (SIMILARITY_TASK_TYPES) that still agree; 0 means the high halves must be
equal. Exact types compare the whole score whatever their entry. The contract's deploy default.

EMBED, 16 bits, measured on real all-MiniLM-L6-v2 outputs (tests/node/test_similarity.py):
honest reruns on 1 or 2 threads with batch sizes 1, 32 or all were 0 bits apart (375
pairs), every cheat tried (a perturbed layer, a skipped layer, int8 weights, other texts,
random vectors, 1-10% noise, two vectors swapped) at least 41 bits (25 trials each). At
16, a machine whose numbers differ by up to 1e-4 each (a hundred times a rerun's
rounding) still agrees, and an unrelated result (64 bits apart on average) passes with
probability 3e-19."""

SIMHASH_RESOLUTION = 0.02
"""Grid step of the similarity hash, in the vectors' units (MiniLM's are unit vectors):
batches whose projections differ by much less agree, by more look unrelated."""

_SIMHASH_SEED = 0x6772_6964_7461_736B  # "gridtask": fixed, so every machine draws the same planes


def canonical_json(value: Any) -> bytes:
    """The one byte form of a result or parameters: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def score(result: bytes, task_type: TaskType) -> bytes:
    """The 32-byte score of a canonical result of ``task_type``.

    ``ValidationError`` when a similarity type's result is not the JSON its executor
    returns (for EMBED, ``{"embeddings": [[number, ...], ...], ...}``).
    """
    digest = result_digest(result)
    if TaskType(task_type) not in SIMILARITY_TASK_TYPES:
        return digest
    return simhash(_embeddings(result)).to_bytes(_HALF, "big") + digest[_HALF:]


def hamming(a: int, b: int) -> int:
    """Bits in which two hashes differ."""
    return (a ^ b).bit_count()


def scores_agree(a: bytes, b: bytes, task_type: TaskType, similarity_bits: int | None = None) -> bool:
    """Whether two nodes' scores count as the same answer: the rule the contract applies in
    ``validateTaskGroup``, and the SDK and relay apply off chain.

    Exact task types compare the whole score. Similarity types (``SIMILARITY_TASK_TYPES``,
    fixed by type, as in the contract) compare the high 128 bits by Hamming distance:
    ``similarity_bits`` is the network's threshold (its ``similarity_bits(task_type)``
    getter; ``None`` takes this module's default; 0 means the high halves must be equal).
    """
    if len(a) != SCORE_BYTES or len(b) != SCORE_BYTES:
        raise ValidationError(f"a score is {SCORE_BYTES} bytes, got {len(a)} and {len(b)}")
    if TaskType(task_type) not in SIMILARITY_TASK_TYPES:
        return a == b
    bits = SIMILARITY_BITS.get(TaskType(task_type), 0) if similarity_bits is None else similarity_bits
    if bits < 0:
        raise ValidationError(f"similarity_bits: must be 0 or more (got {bits})")
    high = slice(0, _HALF)
    return hamming(int.from_bytes(a[high], "big"), int.from_bytes(b[high], "big")) <= bits


def result_matches_score(result: bytes, committed: bytes, task_type: TaskType) -> bool:
    """Whether delivered result bytes are the ones a node's committed score binds: the test
    ``disputeResult`` makes on chain, so a creator disputes exactly when this is False.

    Exact types: the whole score is ``result_digest``. Similarity types: the low 128 bits
    are the digest's; the high half is not recomputed, as the contract cannot (it would also
    differ if another machine's float rounding flipped a bit). Which types are which is
    fixed by type, never by the network's threshold, exactly as on chain.
    """
    digest = result_digest(result)
    if TaskType(task_type) not in SIMILARITY_TASK_TYPES:
        return digest == committed
    return digest[_HALF:] == committed[_HALF:]


def simhash(vectors: Sequence[Sequence[float]] | np.ndarray) -> int:
    """The 128-bit similarity hash of a batch of vectors, taken as one vector.

    Each bit projects the whole batch on a random hyperplane, as Charikar's SimHash does,
    but keeps the parity of the projection's cell on a grid of step ``SIMHASH_RESOLUTION``
    (with a random offset per bit) instead of its sign. Why: the sign only moves with the
    angle, and a cheat's angle is tiny (5% noise on MiniLM vectors moved 0-3 sign bits of
    128, a 10% perturbation of one layer 0, while an honest rerun moves each number by at
    most 1e-6). A bit now flips with probability about ``|d| / resolution`` (saturating at
    one half), where d is the projection of the difference between the two batches:
    honest reruns (d ~ 1e-5) keep every bit, anything off by more than the resolution
    looks random (~64 bits). The expected distance grows with the root-mean-square
    distance between corresponding vectors, ``sqrt(2 * (1 - mean cosine))`` for unit
    vectors.

    Hyperplane b's block for text j is ``s[j, b] * t[j] * r[:, b]``: r a ±1 matrix
    (dim × 128), s ±1 signs per position and bit, t ±1 signs per position and dimension.
    Only ``(dim + texts) x 128 + texts x dim`` signs are stored instead of a plane per
    text, yet no two positions share a plane up to sign, so order matters (swapping two
    vectors randomizes every bit), and the projection of a batch of n unit vectors,
    divided by sqrt(n), is of order 1 whatever n. Planes, signs
    and offsets come from numpy's PCG64 raw output with a fixed seed: a bit stream that is
    the same on every machine and numpy version (its normal sampler is not); only the
    projection itself is floating point. Bit 0 is the most significant. An empty batch
    hashes to 0.
    """
    import numpy as np

    array = np.asarray(vectors, dtype=np.float64)
    if array.size == 0:
        return 0
    if array.ndim != 2:
        raise ValidationError(f"simhash takes a list of equal-length vectors (got an array of shape {array.shape})")
    if not np.isfinite(array).all():
        raise ValidationError("simhash: vectors must hold finite numbers (got NaN or infinity)")
    texts, dim = array.shape
    flipped = array * _dimension_signs(texts, dim)
    projection = ((flipped @ _planes(dim)) * _position_signs(texts)).sum(axis=0) / math.sqrt(texts)
    cells = np.floor(projection / SIMHASH_RESOLUTION + _offsets())
    return int.from_bytes(np.packbits(cells.astype(np.int64) & 1).tobytes(), "big")


def _embeddings(result: bytes) -> list[list[float]]:
    """The ``embeddings`` of an EMBED result (the executor's ``{"embeddings": ..., "dim": ...}``)."""
    try:
        value = json.loads(result, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"an embedding result must be JSON ({exc})") from None
    vectors = value.get("embeddings") if isinstance(value, dict) else None
    if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
        raise ValidationError('an embedding result is {"embeddings": [[number, ...], ...]}: no such list found')
    lengths = {len(v) for v in vectors}
    if len(lengths) > 1:
        raise ValidationError(f"an embedding result's vectors must have one length (got {sorted(lengths)})")
    kinds = {type(x) for vector in vectors for x in vector}  # one pass, no per-number call
    if not kinds <= {float, int}:
        odd = next(x for vector in vectors for x in vector if type(x) not in (float, int))
        raise ValidationError(f"an embedding holds numbers only (got {odd!r})")
    return vectors


def _refuse_constant(name: str) -> float:
    """``NaN`` and ``Infinity`` parse in Python's JSON but are no embedding (nor standard JSON)."""
    raise ValidationError(f"an embedding holds finite numbers only (got {name})")


def _random_signs(stream: int, rows: int, columns: int = SIMHASH_BITS) -> np.ndarray:
    """``rows`` x ``columns`` matrix of ±1.0 from the raw PCG64 stream ``stream``, each row
    from its own whole 64-bit words."""
    import numpy as np

    words_per_row = -(-columns // 64)
    words = np.random.PCG64([_SIMHASH_SEED, stream]).random_raw(rows * words_per_row)
    bits = np.unpackbits(words.astype(">u8").view(np.uint8)).reshape(rows, words_per_row * 64)
    return bits[:, :columns].astype(np.float64) * 2.0 - 1.0


@lru_cache(maxsize=1)
def _offsets() -> np.ndarray:
    """128 grid offsets in [0, 1): 53 raw bits each, so exactly the same float everywhere."""
    import numpy as np

    raw = np.random.PCG64([_SIMHASH_SEED, 2]).random_raw(SIMHASH_BITS)
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


@lru_cache(maxsize=4)
def _planes(dim: int) -> np.ndarray:
    """The dim x 128 hyperplane matrix, drawn once per dimension and cached."""
    return _random_signs(0, dim)


@lru_cache(maxsize=32)
def _position_signs(texts: int) -> np.ndarray:
    """The texts x 128 per-position signs of each plane, cached per batch size."""
    return _random_signs(1, texts)


@lru_cache(maxsize=32)
def _dimension_signs(texts: int, dim: int) -> np.ndarray:
    """The texts x dim per-position flips of the vectors' coordinates, cached per shape."""
    return _random_signs(3, texts, dim)
