# pragma version 0.4.3
# pragma evm-version cancun
"""
@title Bit packing
@notice The layouts of TaskNetwork's packed words, and nothing else: a stateless module
        (no storage; TaskNetwork imports it, nothing to initialize). Hot paths read one
        storage word for what they need:
        - Task.cf: creator | fee << 160 (who pays and how much, in one slot);
        - Task.meta: state | deadline << 8 | timeout << 72 | rand << 136 | task type << 200
          | STARTED_FLAG | SCORED_FLAG | GROUPED_FLAG | task size << 211 (until the task
          starts the rand field holds its creation block number);
        - node_info: status | vram << 8 | capped stake << 40 | GPU tag << 136
          | model filter << 168 | PAUSE_REQUESTED;
        - a model array's entry: address | vram << 160 | GPU tag << 192 | folded model
          filter << 224 (what a selection probe checks before it reads node_info).
"""

# Task.meta: state | deadline << 8 | timeout << 72 | rand << 136 | task type << 200
#            | STARTED_FLAG | SCORED_FLAG | GROUPED_FLAG | task size << 211. Until the task starts the rand
#            field holds the creation block number.
STATE_MASK: constant(uint256) = 2**8 - 1
TIME_MASK: constant(uint256) = 2**64 - 1
DEADLINE_SHIFT: constant(uint256) = 8
STAGE_MASK: constant(uint256) = 2**72 - 1  # state and deadline
TIMEOUT_SHIFT: constant(uint256) = 72
RAND_MASK: constant(uint256) = 2**64 - 1
RAND_SHIFT: constant(uint256) = 136
TYPE_MASK: constant(uint256) = 2**8 - 1
TYPE_SHIFT: constant(uint256) = 200
STARTED_FLAG: constant(uint256) = 2**208  # rand was drawn
SCORED_FLAG: constant(uint256) = 2**209  # the score slot holds the score, not the requirements
GROUPED_FLAG: constant(uint256) = 2**210  # was a member of a validated group
SIZE_SHIFT: constant(uint256) = 211
SIZE_MASK: constant(uint256) = 2**45 - 1
# Task.cf: creator | fee << 160.
ADDRESS_MASK: constant(uint256) = 2**160 - 1
FEE_SHIFT: constant(uint256) = 160
FEE_MASK: constant(uint256) = 2**96 - 1
# node_info: status | vram << 8 | capped stake << 40 | GPU tag << 136 | model filter << 168.
VRAM_MASK: constant(uint256) = 2**32 - 1
VRAM_SHIFT: constant(uint256) = 8
WEIGHT_MASK: constant(uint256) = 2**96 - 1
WEIGHT_SHIFT: constant(uint256) = 40
# A 32-bit tag of the GPU's name and a 64-bit filter of the models served ride along in
# node_info, so that a selection probe usually rejects a node from that one word.
TAG_MASK: constant(uint256) = 2**32 - 1
GPU_TAG_SHIFT: constant(uint256) = 136
BLOOM_SHIFT: constant(uint256) = 168
# A model array's entry: address | vram << 160 | GPU tag << 192 | model filter folded to 32
# bits << 224 (bit b % 32 of the 64-bit filter).
ENTRY_VRAM_SHIFT: constant(uint256) = 160
ENTRY_TAG_SHIFT: constant(uint256) = 192
ENTRY_BLOOM_SHIFT: constant(uint256) = 224
FOLD_MASK: constant(uint256) = 2**32 - 1
# Set while a busy node has asked to pause after its task (above the other fields).
PAUSE_REQUESTED: constant(uint256) = 2**255

# @notice Task types whose scores are similarity hashes (bit t set: type t): EMBED (1).
#         Mirrored by gridtask.scoring.SIMILARITY_TASK_TYPES.
SIMILARITY_TYPES: constant(uint256) = 1 << 1


@internal
@pure
def stage(meta: uint256, state: uint256, deadline: uint256) -> uint256:
    """@dev The task's meta with a new state and deadline, every other field kept."""
    return (meta & ~STAGE_MASK) | state | (deadline << DEADLINE_SHIFT)


@internal
@pure
def deadline(meta: uint256) -> uint256:
    """@dev The deadline of the task's current stage (unix seconds; 0 once it ended)."""
    return (meta >> DEADLINE_SHIFT) & TIME_MASK


@internal
@pure
def timeout(meta: uint256) -> uint256:
    """@dev Seconds allowed for each of the task's stages."""
    return (meta >> TIMEOUT_SHIFT) & TIME_MASK


@internal
@pure
def task_type(meta: uint256) -> uint256:
    """@dev The task type (gridtask.types.TaskType)."""
    return (meta >> TYPE_SHIFT) & TYPE_MASK


@internal
@pure
def similar(task_type: uint256) -> bool:
    """@dev The task type's scores are similarity hashes (compared by Hamming distance)."""
    return (SIMILARITY_TYPES >> task_type) & 1 != 0


@internal
@pure
def creator(cf: uint256) -> address:
    """@dev Who created (and pays for) the task."""
    return convert(cf & ADDRESS_MASK, address)


@internal
@pure
def fee(cf: uint256) -> uint256:
    """@dev The fee held for the task (wei)."""
    return cf >> FEE_SHIFT


@internal
@pure
def tag(name: bytes32) -> uint256:
    """@dev A 32-bit tag of a GPU name: unequal tags prove unequal names."""
    return convert(keccak256(name), uint256) & TAG_MASK


@internal
@pure
def bloom_bit(model: bytes32) -> uint256:
    """@dev One of 64 bits per model: a clear bit proves the node does not serve it."""
    return 1 << (convert(keccak256(model), uint256) % 64)


@internal
@pure
def entry(node: address, info: uint256) -> uint256:
    """@dev A node's entry in its models' arrays, from its node_info."""
    bloom: uint256 = (info >> BLOOM_SHIFT) & (2**64 - 1)
    return (
        convert(node, uint256) | (((info >> VRAM_SHIFT) & VRAM_MASK) << ENTRY_VRAM_SHIFT)
        | (((info >> GPU_TAG_SHIFT) & TAG_MASK) << ENTRY_TAG_SHIFT)
        | (((bloom | (bloom >> 32)) & FOLD_MASK) << ENTRY_BLOOM_SHIFT)
    )


@internal
@pure
def folded_bit(model: bytes32) -> uint256:
    """@dev The model's bit in an entry's folded filter: clear proves the node lacks it."""
    return 1 << (convert(keccak256(model), uint256) % 64 % 32)
