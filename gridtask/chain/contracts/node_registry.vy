# pragma version 0.4.3
# pragma evm-version cancun
"""
@title Node registry and stakes
@notice The nodes, their stakes and what they serve: one array of active (idle or busy)
        nodes per model, with 1-based positions, so selection probes it in flat gas; a
        packed word per node (packing.vy) that a probe reads alone; the stake, its
        selection weight, and what a slash that leaves it below the minimum does.
        TaskNetwork initializes this module and keeps the rules that also touch tasks
        (a joining node takes queued work, a freed node takes the next task).
"""

import errors
import packing

# @notice At most this many models per node.
MAX_NODE_MODELS: constant(uint256) = 8

# Node statuses (mirrored by gridtask.types.NodeStatus).
IDLE: constant(uint256) = 1
BUSY: constant(uint256) = 2
PAUSED: constant(uint256) = 3
LEAVING: constant(uint256) = 4
# @notice Basis points (the slash share).
BPS: constant(uint256) = 10000
# @dev The model filter's bits in node_info (64 bits at packing.BLOOM_SHIFT).
BLOOM_MASK: constant(uint256) = 2**64 - 1

# @notice A node stopped taking new tasks (it asked to, it let a deadline pass, or its
#         stake fell below the minimum).
event NodePaused:
    node: indexed(address)

# @notice Part of a node's stake was taken (a wrong score, or a result that does not
#         match its score).
event NodeSlashed:
    node: indexed(address)
    commitment: indexed(bytes32)
    amount: uint256
    reason: String[64]

struct Node:
    stake: uint256
    gpu: bytes32
    public_key: bytes32
    version: uint256


# @notice The least stake a node must put up to join (wei).
min_stake: public(immutable(uint256))
# @notice Selection weight is the stake, capped at this multiple of `min_stake`.
stake_cap_multiple: public(immutable(uint256))

# @notice Registered nodes: stake, GPU, encryption key and version.
nodes: HashMap[address, Node]
# @notice Per node, one word read on hot paths: status | vram << 8 | capped stake << 40
#         | GPU tag << 136 | model filter << 168 | packing.PAUSE_REQUESTED.
node_info: HashMap[address, uint256]
# @notice The models each node serves.
node_models: HashMap[address, DynArray[bytes32, MAX_NODE_MODELS]]
# @notice Active (idle or busy) nodes per model: an array with 1-based positions. Each
#         entry is packing.entry(): the address with what never changes while the node is
#         active (VRAM, GPU tag, model filter), so that a probe refuses most nodes that
#         cannot run a task from this one word, without reading the node's own.
model_nodes: HashMap[bytes32, HashMap[uint256, uint256]]
# @notice How many active nodes serve each model.
model_node_count: public(HashMap[bytes32, uint256])
# @notice Per model, at least the largest weight of any node ever in its array (a
#         high-water mark: it never falls). Selection accepts a probed node with
#         probability weight / this, which is exact whatever the mark, and makes equal
#         stakes accept at once.
model_max_weight: HashMap[bytes32, uint256]
# @notice A node's 1-based position in each of its models' arrays (0: not there).
node_model_pos: HashMap[address, HashMap[bytes32, uint256]]
# @notice When a leaving node's stake is released (`withdraw` pays it from then on).
release_at: public(HashMap[address, uint256])


@deploy
def __init__(_min_stake: uint256, _stake_cap_multiple: uint256):
    """
    @param _min_stake The least stake (wei) a node must put up.
    @param _stake_cap_multiple Stakes above this multiple of the minimum add no weight.
    """
    min_stake = _min_stake
    stake_cap_multiple = _stake_cap_multiple


@internal
@view
def info_of(node: address) -> uint256:
    """@dev The node's packed word; the account must be a node."""
    info: uint256 = self.node_info[node]
    if info == 0:
        errors.fail(113)  # nodes: not a node
    return info


@internal
def activate(node: address):
    """@dev Put the node in the array of every model it serves."""
    info: uint256 = self.node_info[node]
    weight: uint256 = (info >> packing.WEIGHT_SHIFT) & packing.WEIGHT_MASK
    word: uint256 = packing.entry(node, info)
    for m: bytes32 in self.node_models[node]:
        n: uint256 = self.model_node_count[m] + 1
        self.model_nodes[m][n] = word
        self.model_node_count[m] = n
        self.node_model_pos[node][m] = n
        self._raise_max(m, weight)


@internal
def _raise_max(model: bytes32, weight: uint256):
    """@dev Keep the model's high-water mark at or above every weight in its array."""
    if weight > self.model_max_weight[model]:
        self.model_max_weight[model] = weight


@internal
def deactivate(node: address):
    """@dev Take the node out of its models' arrays (swap with the last, then pop)."""
    for m: bytes32 in self.node_models[node]:
        pos: uint256 = self.node_model_pos[node][m]
        n: uint256 = self.model_node_count[m]
        last: uint256 = self.model_nodes[m][n]
        self.model_nodes[m][pos] = last
        self.node_model_pos[convert(last & packing.ADDRESS_MASK, address)][m] = pos
        self.model_nodes[m][n] = 0
        self.model_node_count[m] = n - 1
        self.node_model_pos[node][m] = 0


@internal
def pause(node: address, info: uint256):
    """@dev Out of its models' arrays: selection and the queue no longer see it."""
    self.deactivate(node)
    self.node_info[node] = (info & ~packing.STATE_MASK) | PAUSED
    log NodePaused(node=node)


@internal
def slash(node: address, key: bytes32, reason: String[64], bps: uint256) -> uint256:
    """@dev Take `bps` of the node's stake; returns how much (to be credited)."""
    stake: uint256 = self.nodes[node].stake
    amount: uint256 = stake * bps // BPS
    self.set_stake(node, stake - amount)
    log NodeSlashed(node=node, commitment=key, amount=amount, reason=reason)
    return amount


@internal
def set_stake(node: address, stake: uint256):
    """@dev A node's stake changed: its selection weight follows, and a node left below
    the minimum pauses (now if idle, when its task ends if busy) until it tops up."""
    info: uint256 = self.node_info[node]
    if info == 0:
        return  # gone: nothing left to take
    self.nodes[node].stake = stake
    weight: uint256 = min(stake, min_stake * stake_cap_multiple)
    status: uint256 = info & packing.STATE_MASK
    if weight > (info >> packing.WEIGHT_SHIFT) & packing.WEIGHT_MASK and (status == IDLE or status == BUSY):
        for m: bytes32 in self.node_models[node]:
            self._raise_max(m, weight)  # in its models' arrays: their marks follow
    info = (info & ~(packing.WEIGHT_MASK << packing.WEIGHT_SHIFT)) | (weight << packing.WEIGHT_SHIFT)
    if stake < min_stake:
        if status == IDLE:
            self.pause(node, info)
            return
        if status == BUSY:
            info |= packing.PAUSE_REQUESTED
    self.node_info[node] = info


@internal
@view
def pack(
    status: uint256, vram: uint256, stake: uint256, gpu: bytes32,
    models: DynArray[bytes32, MAX_NODE_MODELS],
) -> uint256:
    weight: uint256 = min(stake, min_stake * stake_cap_multiple)
    return (
        status | (vram << packing.VRAM_SHIFT) | (weight << packing.WEIGHT_SHIFT)
        | (packing.tag(gpu) << packing.GPU_TAG_SHIFT) | (self._bloom(models) << packing.BLOOM_SHIFT)
    )


@internal
@pure
def _bloom(models: DynArray[bytes32, MAX_NODE_MODELS]) -> uint256:
    """@dev The 64-bit model filter of node_info: a clear bit proves a model is not served."""
    bloom: uint256 = 0
    for m: bytes32 in models:
        bloom |= packing.bloom_bit(m)
    return bloom


@internal
def set_models(node: address, info: uint256, models: DynArray[bytes32, MAX_NODE_MODELS]):
    """@dev The node now serves `models` (a joined node added or dropped some). Its filter
    follows, and an active node leaves every old model's array and enters every new one
    (its entries carry the folded filter, so all of them are rewritten): each model's array
    keeps holding exactly the active nodes that serve it, and selection stays exact."""
    status: uint256 = info & packing.STATE_MASK
    active: bool = status == IDLE or status == BUSY
    if active:
        self.deactivate(node)
    self.node_models[node] = models
    self.node_info[node] = (info & ~(BLOOM_MASK << packing.BLOOM_SHIFT)) | (self._bloom(models) << packing.BLOOM_SHIFT)
    if active:
        self.activate(node)
