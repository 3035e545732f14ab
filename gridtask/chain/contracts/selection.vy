# pragma version 0.4.3
# pragma evm-version cancun
"""
@title Node selection
@notice Which node runs a task: drawn at random, with probability exactly proportional
        to its capped stake among the nodes that can run it, in flat gas. Stateless
        itself: it reads the node registry (TaskNetwork's, or a test harness's).
"""

import node_registry
import packing

uses: node_registry

# @notice At most this many models per task.
MAX_TASK_MODELS: constant(uint256) = 4
# @notice How many nodes a start may exclude (the SDK's two most recent tasks' nodes).
MAX_EXCLUDE: constant(uint256) = 2
# @notice A model served by this many active nodes or fewer is searched exhaustively
#         (selection cannot miss an idle node that fits).
MAX_PROBES: constant(uint256) = 16
# @notice Independent random probes of a longer array before the task is queued.
RANDOM_PROBES: constant(uint256) = 32
# @notice Random probes of a short array before its full pass (SHORT_PROBES + MAX_PROBES
#         <= RANDOM_PROBES: the one loop bounds both).
SHORT_PROBES: constant(uint256) = 3


@internal
@view
def key_model(models: DynArray[bytes32, MAX_TASK_MODELS]) -> bytes32:
    """@dev The task's model served by the fewest nodes: the smallest set that holds
    every node that can run the task."""
    best: bytes32 = models[0]
    fewest: uint256 = node_registry.model_node_count[best]
    for m: bytes32 in models:
        count: uint256 = node_registry.model_node_count[m]
        if count < fewest:
            best = m
            fewest = count
    return best


@internal
@view
def select(
    seed: bytes32,
    key_model: bytes32,
    models: DynArray[bytes32, MAX_TASK_MODELS],
    min_vram: uint256,
    gpu: bytes32,
    exclude: DynArray[address, MAX_EXCLUDE],
) -> address:
    """
    @dev A node that can run the task, drawn with probability exactly proportional to
    its capped stake (its weight) among all that can; empty (the task is queued) when
    none is found. Flat gas. Stage 1: up to `probes` independent, uniform probes of the
    key model's n-entry array; a matching node is accepted with probability weight / the
    array's high-water mark M (>= every weight in it). Each probe picks node j with the
    same probability (1/n)(w_j/M), so whichever probe accepts, P(j) is proportional to
    w_j. probes = RANDOM_PROBES when n > MAX_PROBES (then the task is queued if none
    accepts), else SHORT_PROBES followed, if none accepted, by stage 2: one pass of
    weighted reservoir sampling over all n entries (the k-th match, of weight w,
    replaces the choice with probability w / the weight of the first k matches), which
    picks j with probability proportional to w_j among the nodes that fit and finds one
    whenever one does. A mixture of two draws each proportional to w_j is proportional
    to w_j: exact. Nothing else picks a node (a fallback to a node seen, say the
    heaviest, would favour it). Equal stakes and an idle node accept at the first probe.
    A probe first checks the array's entry (VRAM, GPU tag, folded model filter: one
    storage read) and reads the node's own word only for a node that may fit.
    """
    n: uint256 = node_registry.model_node_count[key_model]
    if n == 0:
        return empty(address)
    chosen: address = empty(address)
    total: uint256 = 0
    mark: uint256 = node_registry.model_max_weight[key_model]
    probes: uint256 = SHORT_PROBES
    if n > MAX_PROBES:
        probes = RANDOM_PROBES
    # what every entry that can run the task has: checked on the entry before node_info
    want: uint256 = min_vram << packing.ENTRY_VRAM_SHIFT
    tag: uint256 = 0
    if gpu != empty(bytes32):
        tag = packing.tag(gpu) << packing.ENTRY_TAG_SHIFT
    bits: uint256 = 0
    for m: bytes32 in models:
        if m != key_model:
            bits |= packing.folded_bit(m)
    bits <<= packing.ENTRY_BLOOM_SHIFT
    for i: uint256 in range(RANDOM_PROBES):
        if i >= probes + n:
            break
        r: uint256 = convert(keccak256(abi_encode(seed, i)), uint256)
        index: uint256 = r % n if i < probes else i - probes
        word: uint256 = node_registry.model_nodes[key_model][index + 1]
        if word & (packing.VRAM_MASK << packing.ENTRY_VRAM_SHIFT) < want:
            continue
        if tag != 0 and word & (packing.TAG_MASK << packing.ENTRY_TAG_SHIFT) != tag:
            continue
        if word & bits != bits:
            continue
        node: address = convert(word & packing.ADDRESS_MASK, address)
        info: uint256 = node_registry.node_info[node]
        if not self.matches(node, info, key_model, models, min_vram, gpu, exclude):
            continue
        weight: uint256 = (info >> packing.WEIGHT_SHIFT) & packing.WEIGHT_MASK
        if i < probes:
            if (r >> 128) % mark < weight:
                return node
            continue
        total += weight
        if (r >> 128) % total < weight:
            chosen = node
    return chosen


@internal
@view
def select_any(
    seed: bytes32,
    models: DynArray[bytes32, MAX_TASK_MODELS],
    min_vram: uint256,
    gpu: bytes32,
    exclude: DynArray[address, MAX_EXCLUDE],
) -> address:
    """
    @dev An any-of task's node: one that serves at least one of `models` (and fits the rest),
    drawn with probability exactly proportional to its weight among every idle node that
    fits, over the union of the models' arrays; empty (queued) when none is found. The rule
    of `select` over the concatenation of the k arrays, N entries in all, where a node that
    serves c of the models stands c times. Stage 1: uniform probes of the N entries; a fitting
    node j is reached with probability c_j/N and accepted with probability
    w_j / (M * c_j), M the largest of the arrays' marks: P(j) = w_j / (N * M) per probe,
    proportional to w_j, with no bias towards nodes that serve several of the models.
    RANDOM_PROBES probes when N > MAX_PROBES (then queued if none accepts; a node serving
    several models needs c_j times more probes to be accepted than in `select`, so the
    chance of queueing is higher there, never the choice), else SHORT_PROBES and then
    stage 2: one weighted-reservoir pass over all N entries that counts a node only in the
    array of the first listed model it serves (each node once): exact, and it finds a node
    whenever one fits. Gas: k reads of counts and marks, and per probe that passes the
    entry's filters up to k reads of node_model_pos.
    """
    counts: uint256[MAX_TASK_MODELS] = empty(uint256[MAX_TASK_MODELS])
    n: uint256 = 0
    mark: uint256 = 0
    for k: uint256 in range(MAX_TASK_MODELS):
        if k >= len(models):
            break
        counts[k] = node_registry.model_node_count[models[k]]
        n += counts[k]
        mark = max(mark, node_registry.model_max_weight[models[k]])
    if n == 0:
        return empty(address)
    chosen: address = empty(address)
    total: uint256 = 0
    probes: uint256 = SHORT_PROBES
    if n > MAX_PROBES:
        probes = RANDOM_PROBES
    want: uint256 = min_vram << packing.ENTRY_VRAM_SHIFT
    tag: uint256 = 0
    if gpu != empty(bytes32):
        tag = packing.tag(gpu) << packing.ENTRY_TAG_SHIFT
    for i: uint256 in range(RANDOM_PROBES):
        if i >= probes + n:
            break
        r: uint256 = convert(keccak256(abi_encode(seed, i)), uint256)
        index: uint256 = r % n if i < probes else i - probes
        which: uint256 = 0
        for k: uint256 in range(MAX_TASK_MODELS):
            if index < counts[k]:
                which = k
                break
            index -= counts[k]
        word: uint256 = node_registry.model_nodes[models[which]][index + 1]
        if word & (packing.VRAM_MASK << packing.ENTRY_VRAM_SHIFT) < want:
            continue
        if tag != 0 and word & (packing.TAG_MASK << packing.ENTRY_TAG_SHIFT) != tag:
            continue
        node: address = convert(word & packing.ADDRESS_MASK, address)
        info: uint256 = node_registry.node_info[node]
        if not self.matches(node, info, empty(bytes32), [], min_vram, gpu, exclude):
            continue
        # c: how many of the models it serves; first: the first of them in the list
        c: uint256 = 0
        first: uint256 = which
        for k: uint256 in range(MAX_TASK_MODELS):
            if k >= len(models):
                break
            if self.serves(node, info, models[k]):
                if c == 0:
                    first = k
                c += 1
        weight: uint256 = (info >> packing.WEIGHT_SHIFT) & packing.WEIGHT_MASK
        if i < probes:
            if (r >> 128) % (mark * c) < weight:
                return node
            continue
        if first != which:
            continue  # counted in an earlier array of the pass
        total += weight
        if (r >> 128) % total < weight:
            chosen = node
    return chosen


@internal
@view
def serves(node: address, info: uint256, model: bytes32) -> bool:
    """@dev The active node serves `model` (the filter in `info` settles most refusals)."""
    if (info >> packing.BLOOM_SHIFT) & packing.bloom_bit(model) == 0:
        return False
    return node_registry.node_model_pos[node][model] != 0


@internal
@view
def matches_any(
    node: address,
    info: uint256,
    models: DynArray[bytes32, MAX_TASK_MODELS],
    min_vram: uint256,
    gpu: bytes32,
    exclude: DynArray[address, MAX_EXCLUDE],
) -> bool:
    """@dev An any-of task's match: idle, not excluded, VRAM, GPU, and one of the models."""
    if not self.matches(node, info, empty(bytes32), [], min_vram, gpu, exclude):
        return False
    for m: bytes32 in models:
        if self.serves(node, info, m):
            return True
    return False


@internal
@view
def matches(
    node: address,
    info: uint256,
    key_model: bytes32,
    models: DynArray[bytes32, MAX_TASK_MODELS],
    min_vram: uint256,
    gpu: bytes32,
    exclude: DynArray[address, MAX_EXCLUDE],
) -> bool:
    """@dev Idle, not excluded, enough VRAM, the right GPU, and every model (`key_model` is
    known to match).
    The GPU tag and the model filter in `info` settle most refusals without another
    storage read; a pass is confirmed against storage, so the answer is exact."""
    if info & packing.STATE_MASK != node_registry.IDLE:
        return False
    for x: address in exclude:
        if x == node:
            return False
    if (info >> packing.VRAM_SHIFT) & packing.VRAM_MASK < min_vram:
        return False
    if gpu != empty(bytes32):
        if (info >> packing.GPU_TAG_SHIFT) & packing.TAG_MASK != packing.tag(gpu):
            return False
        if node_registry.nodes[node].gpu != gpu:
            return False
    for m: bytes32 in models:
        if m != key_model and not self.serves(node, info, m):
            return False
    return True
