# pragma version 0.4.3
# pragma evm-version cancun
"""
@title Selection harness (tests only)
@notice TaskNetwork's node registry and selection module, with just enough around them
        to join nodes, mark some busy, and draw many selections in one call, so that a
        statistical test of the contract's own selection code runs in seconds.
"""

import node_registry
import packing
import selection

initializes: node_registry
initializes: selection[node_registry := node_registry]


@deploy
def __init__(_min_stake: uint256, _stake_cap_multiple: uint256):
    node_registry.__init__(_min_stake, _stake_cap_multiple)


@external
def join(node: address, stake: uint256, gpu: bytes32, vram: uint256, models: DynArray[bytes32, 8]):
    """@dev As TaskNetwork.join records a node (no checks, no queue)."""
    node_registry.nodes[node] = node_registry.Node(stake=stake, gpu=gpu, public_key=empty(bytes32), version=1)
    node_registry.node_models[node] = models
    node_registry.node_info[node] = node_registry.pack(node_registry.IDLE, vram, stake, gpu, models)
    node_registry.activate(node)


@external
def set_status(node: address, status: uint256):
    """@dev Busy (still in its arrays) or idle."""
    info: uint256 = node_registry.node_info[node]
    node_registry.node_info[node] = (info & ~packing.STATE_MASK) | status


@external
def set_stake(node: address, stake: uint256):
    node_registry.set_stake(node, stake)


@external
def quit(node: address):
    node_registry.deactivate(node)
    node_registry.node_info[node] = (node_registry.node_info[node] & ~packing.STATE_MASK) | node_registry.LEAVING


@external
@view
def draw(
    first: uint256,
    count: uint256,
    models: DynArray[bytes32, 4],
    min_vram: uint256,
    gpu: bytes32,
    exclude: DynArray[address, 2],
) -> DynArray[address, 8192]:
    """@dev `count` selections with seeds keccak(first), keccak(first + 1), ... (as
    startTask's seed is a keccak), for a task with these requirements."""
    out: DynArray[address, 8192] = []
    key: bytes32 = selection.key_model(models)
    for i: uint256 in range(8192):
        if i >= count:
            break
        out.append(selection.select(keccak256(abi_encode(first + i)), key, models, min_vram, gpu, exclude))
    return out


@external
@view
def draw_any(
    first: uint256,
    count: uint256,
    models: DynArray[bytes32, 4],
    min_vram: uint256,
    gpu: bytes32,
    exclude: DynArray[address, 2],
) -> DynArray[address, 8192]:
    """@dev As `draw`, for an any-of task (selection.select_any)."""
    out: DynArray[address, 8192] = []
    for i: uint256 in range(8192):
        if i >= count:
            break
        out.append(selection.select_any(keccak256(abi_encode(first + i)), models, min_vram, gpu, exclude))
    return out
