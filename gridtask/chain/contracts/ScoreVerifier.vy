# pragma version 0.4.3
# pragma evm-version cancun
"""
@title ScoreVerifier
@notice Stateless checks of scores and results that TaskNetwork calls (a contract of
        its own, deployed first, so that TaskNetwork stays under EIP-170's code size
        limit). Byte for byte the rules of gridtask.crypto and gridtask.scoring:
        - result frame: uint256 length ‖ result ‖ zero bytes up to a whole word;
          result_digest(R) = keccak256(frame(R));
        - keccak-CTR: ciphertext word i = frame word i XOR keccak256(key ‖ uint256 i);
        - a score agrees with another: exact task types, the whole 32 bytes are
          equal; similarity types, the high 128 bits (a SimHash) differ in at most
          the type's threshold of bits;
        - a delivered result matches its score: exact types, the score is its
          digest; similarity types, the score's low 128 bits are the digest's.
"""

# @notice The most ciphertext a dispute re-decrypts: 513 words, a result of 16,384 bytes.
MAX_CIPHERTEXT: constant(uint256) = 16416
MAX_CIPHER_WORDS: constant(uint256) = 513
LOW128: constant(uint256) = 2**128 - 1
# Masks of the bit count (SWAR): 0x5555..., 0x3333..., 0x0f0f..., 0x0101... over 128 bits.
SWAR_1: constant(uint256) = (2**128 - 1) // 3
SWAR_2: constant(uint256) = (2**128 - 1) // 5
SWAR_4: constant(uint256) = (2**128 - 1) // 17
SWAR_BYTES: constant(uint256) = (2**128 - 1) // 255


@external
@pure
def agree(a: bytes32, b: bytes32, similarity: bool, bits: uint256) -> bool:
    """
    @notice Whether two scores agree.
    @param a One score.
    @param b The other.
    @param similarity The task type compares similarity hashes (EMBED).
    @param bits The type's Hamming threshold (similarity types only).
    @return True if they agree.
    """
    return self._agree(a, b, similarity, bits)


@external
@pure
def majority(scores: bytes32[3], voting: uint256, similarity: bool, bits: uint256) -> uint256:
    """
    @notice The members of a group of three whose scores agree with at least one other
            voting member (with three members any agreeing pair is a majority).
    @param scores The members' scores.
    @param voting Bit i set: member i scored and votes.
    @param similarity The task type compares similarity hashes.
    @param bits The type's Hamming threshold.
    @return Bit i set: member i agrees (0 when no two agree).
    """
    agreeing: uint256 = 0
    for i: uint256 in range(3):
        if voting & (1 << i) == 0:
            continue
        for j: uint256 in range(3):
            if j >= i:
                break
            if voting & (1 << j) != 0 and self._agree(scores[i], scores[j], similarity, bits):
                agreeing |= (1 << i) | (1 << j)
    return agreeing


@external
@pure
def resultMatches(
    result_key: bytes32, ciphertext: Bytes[MAX_CIPHERTEXT], score: bytes32, similarity: bool
) -> bool:
    """
    @notice Whether a delivered ciphertext decrypts to a result that fits the score. A
            malformed frame (a wrong length word, non-zero padding, a size that is not
            whole words) fits no score.
    @param result_key keccak("gridtask-result-key:" ‖ task ID ‖ nonce).
    @param ciphertext The delivered ciphertext.
    @param score The score the node committed.
    @param similarity The task type's score carries the digest in its low 128 bits only.
    @return True if the result matches the score.
    """
    ok: bool = False
    digest: bytes32 = empty(bytes32)
    ok, digest = self._frame_digest(result_key, ciphertext)
    if not ok:
        return False
    if similarity:
        return convert(digest, uint256) & LOW128 == convert(score, uint256) & LOW128
    return digest == score


@external
@pure
def frameDigest(result_key: bytes32, ciphertext: Bytes[MAX_CIPHERTEXT]) -> (bool, bytes32):
    """
    @notice Decrypt a keccak-CTR ciphertext and hash its plaintext frame.
    @param result_key The task's result key.
    @param ciphertext The ciphertext.
    @return Whether the frame is well formed, and keccak256 of the frame (result_digest).
    """
    return self._frame_digest(result_key, ciphertext)


@internal
@pure
def _agree(a: bytes32, b: bytes32, similarity: bool, bits: uint256) -> bool:
    if not similarity:
        return a == b
    return self._popcount((convert(a, uint256) ^ convert(b, uint256)) >> 128) <= bits


@internal
@pure
def _popcount(v: uint256) -> uint256:
    """@dev Set bits of a 128-bit value, in flat gas (SWAR)."""
    x: uint256 = v - ((v >> 1) & SWAR_1)
    x = (x & SWAR_2) + ((x >> 2) & SWAR_2)
    x = (x + (x >> 4)) & SWAR_4
    return (unsafe_mul(x, SWAR_BYTES) >> 120) % 256


@internal
@pure
def _frame_digest(result_key: bytes32, ciphertext: Bytes[MAX_CIPHERTEXT]) -> (bool, bytes32):
    size: uint256 = len(ciphertext)
    if size == 0 or size % 32 != 0:
        return False, empty(bytes32)
    n: uint256 = size // 32
    words: DynArray[uint256, MAX_CIPHER_WORDS] = []
    for i: uint256 in range(MAX_CIPHER_WORDS):
        if i >= n:
            break
        stream: uint256 = convert(keccak256(concat(result_key, convert(i, bytes32))), uint256)
        words.append(convert(extract32(ciphertext, i * 32), uint256) ^ stream)
    length: uint256 = words[0]
    body: uint256 = (n - 1) * 32
    if length > body:
        return False, empty(bytes32)  # longer than the frame
    if length + 32 <= body:
        return False, empty(bytes32)  # the frame has words beyond ceil(length / 32)
    tail: uint256 = length % 32
    if tail != 0 and words[n - 1] & ((1 << (8 * (32 - tail))) - 1) != 0:
        return False, empty(bytes32)  # non-zero padding
    return True, keccak256(slice(abi_encode(words, ensure_tuple=False), 32, size))
