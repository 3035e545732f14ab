"""Shared helpers for the TaskNetwork contract tests (imported by conftest.py and the tests).

Everything here runs against the current `boa.env`, whatever env is active when called.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path

import boa
from boa.contracts.vyper.vyper_contract import VyperContract
from eth_abi import encode as abi_encode
from eth_utils import keccak

from gridtask.chain.reasons import code_of
from gridtask.crypto import task_commitment, task_id_hash, task_key

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "gridtask" / "chain" / "contracts"
CONTRACT = CONTRACTS_DIR / "TaskNetwork.vy"
VERIFIER = CONTRACTS_DIR / "ScoreVerifier.vy"

ETHER = 10**18
MIN_STAKE = ETHER
CAP_MULTIPLE = 10
MIN_TIMEOUT = 5
MAX_TIMEOUT = 3600

# Deploy parameters of issue 8 (the contract tests' defaults: nothing sampled unless a
# test asks, so a test of one rule is not a lottery; windows short enough to pass)
VALIDATION_RATE_BPS = 0
VALIDATION_WINDOW = 600
CHALLENGE_WINDOW = 3600
UNSTAKE_DELAY = 7 * 86400
SLASH_BPS = 5000
MIN_FEE_PER_UNIT = 1  # wei: the old tests' tiny fees stay valid; the minimum has its own test
SIMILARITY_BITS = [0, 20, 0]  # ECHO exact, EMBED within 20 bits, LLM exact


def reverts(reason: str | None = None, **kw):
    """``boa.reverts`` with the readable reason ("tasks: task not started"): the contract
    reverts with its short code ("E217"), gridtask.chain.reasons maps one to the other."""
    return boa.reverts(**kw) if reason is None else boa.reverts(code_of(reason), **kw)

# Task states
CREATED, QUEUED, STARTED, SCORE_READY, VALIDATED, SUCCESS, ABORTED, ERRORED, INVALIDATED = range(1, 10)
LIVE_STATES = (CREATED, QUEUED, STARTED, SCORE_READY, VALIDATED)
FINAL_STATES = (SUCCESS, ABORTED, ERRORED, INVALIDATED)
# Node statuses
IDLE, BUSY, PAUSED, LEAVING = 1, 2, 3, 4
# Group outcomes
AGREED, NO_MAJORITY, TOO_FEW = 1, 2, 3



def contract_constant(name: str) -> int:
    """A `NAME: constant(uint256) = value` of the contract, read from its source, so the
    tests follow the contract's tuning (probes, scan window, list limits)."""
    import re

    for source in sorted(CONTRACTS_DIR.glob("*.vy")):  # the contract or the module defining it
        m = re.search(rf"^{name}: constant\(uint256\) = (\d+)\s*(#.*)?$", source.read_text(), re.M)
        if m:
            return int(m.group(1))
    raise AssertionError(name)


MAX_PROBES = contract_constant("MAX_PROBES")
QUEUE_SCAN = contract_constant("QUEUE_SCAN")
SWEEP_SCAN = contract_constant("SWEEP_SCAN")
MAX_NODE_MODELS = contract_constant("MAX_NODE_MODELS")
MAX_TASK_MODELS = contract_constant("MAX_TASK_MODELS")

MODEL_POOL = ["llama3-8b", "mistral-7b", "qwen2-7b", "phi3-mini", "minilm-l6", "sdxl-turbo"]
# Models that no node of a population serves.
UNSERVED_MODELS = ["gpt-oss-120b", "whisper-xl"]
# (gpu name, vram MiB); "cpu" nodes have no VRAM.
GPU_KINDS = [("cpu", 0), ("rtx3070", 8192), ("rtx4090", 24576), ("a100", 81920), ("h100", 81920)]
STAKES = (1 * ETHER, 10 * ETHER)

EMPTY32 = b"\0" * 32


def b32(name: str | bytes | None) -> bytes:
    """A right-padded ASCII bytes32 (model ID, GPU name); None or "" is the empty word."""
    if not name:
        return EMPTY32
    raw = name if isinstance(name, bytes) else name.encode()
    assert len(raw) <= 32
    return raw.ljust(32, b"\0")


def from_b32(word: bytes) -> str:
    """The name in a right-padded bytes32 (b32's inverse)."""
    return bytes(word).rstrip(b"\0").decode()


def msb(x: int) -> int:
    """The queue's bucket of a fee per unit: floor(log2(x)), 0 for 0 and 1."""
    return max(x.bit_length() - 1, 0)


@functools.lru_cache(maxsize=1)
def deployer():
    """Compiled once per session; deploys into whatever boa.env is active."""
    return boa.load_partial(str(CONTRACT))


@dataclass
class Params:
    """Every constructor parameter, in the constructor's order."""

    min_stake: int = MIN_STAKE
    cap: int = CAP_MULTIPLE
    tmin: int = MIN_TIMEOUT
    tmax: int = MAX_TIMEOUT
    validation_rate_bps: int = VALIDATION_RATE_BPS
    validation_window: int = VALIDATION_WINDOW
    challenge_window: int = CHALLENGE_WINDOW
    unstake_delay: int = UNSTAKE_DELAY
    slash_bps: int = SLASH_BPS
    min_fee_per_unit: int = MIN_FEE_PER_UNIT
    similarity_bits: list = field(default_factory=lambda: list(SIMILARITY_BITS))

    def args(self, relay, verifier) -> list:
        return [self.min_stake, self.cap, self.tmin, self.tmax, str(relay), self.validation_rate_bps,
                self.validation_window, self.challenge_window, self.unstake_delay, self.slash_bps,
                self.min_fee_per_unit, list(self.similarity_bits), str(verifier)]


CONSTRUCTOR_TYPES = ["uint256", "uint256", "uint256", "uint256", "address", "uint256", "uint256",
                     "uint256", "uint256", "uint256", "uint256", "uint256[]", "address"]


@functools.lru_cache(maxsize=1)
def verifier_deployer():
    return boa.load_partial(str(VERIFIER))


def deploy_verifier():
    """The stateless ScoreVerifier, deployed first (raw init code: no source map, fast)."""
    address, _ = boa.env.deploy_code(bytecode=verifier_deployer().compiler_data.bytecode)
    return verifier_deployer().at(address)


def _params(min_stake, cap, tmin, tmax, overrides) -> Params:
    return Params(min_stake=min_stake, cap=cap, tmin=tmin, tmax=tmax, **overrides)


def deploy(relay: str, min_stake=MIN_STAKE, cap=CAP_MULTIPLE, tmin=MIN_TIMEOUT, tmax=MAX_TIMEOUT,
           **overrides):
    return deployer().deploy(*_params(min_stake, cap, tmin, tmax, overrides).args(relay, deploy_verifier().address))


class _QuietContract(VyperContract):
    """A contract whose repr does not dump its storage: boa puts repr(contract) into every
    revert's stack trace, which costs ~35 ms a revert on a contract with a lot of storage."""

    def __repr__(self):
        return f"<TaskNetwork at {self.address}>"


def deploy_fast(relay: str, min_stake=MIN_STAKE, cap=CAP_MULTIPLE, tmin=MIN_TIMEOUT,
                tmax=MAX_TIMEOUT, quiet=True, **overrides):
    """The same deployment as `deploy`, without boa's per-deployment source map (~0.3 s):
    the init code is run raw and the contract attached with `at`. Keyword overrides set
    the issue-8 parameters (`validation_rate_bps=10000`, ...; see `Params`)."""
    d = deployer()
    args = abi_encode(CONSTRUCTOR_TYPES,
                      _params(min_stake, cap, tmin, tmax, overrides).args(relay, deploy_verifier().address))
    address, _ = boa.env.deploy_code(bytecode=d.compiler_data.bytecode + args)
    net = d.at(address)
    if quiet:
        net.__class__ = _QuietContract
    return net


def funded_address(tag: str | None = None, balance: int = 10_000 * ETHER) -> str:
    addr = boa.env.generate_address(tag)
    boa.env.set_balance(addr, balance)
    return addr


def seeded_address(seed, i: int) -> str:
    return "0x" + hashlib.sha256(f"gridtask-node:{seed}:{i}".encode()).digest()[:20].hex()


@dataclass
class NodeSpec:
    addr: str
    gpu: str
    vram: int
    models: list[str]
    stake: int
    public_key: bytes = field(default=b"\x11" * 32)
    version: int = 1

    def serves(self, models) -> bool:
        return all(m in self.models for m in models)

    def matches(self, models, min_vram: int, gpu: str | None) -> bool:
        """Can run a task with these requirements (status not considered)."""
        return self.serves(models) and self.vram >= min_vram and (not gpu or gpu == self.gpu)


def make_population(n: int, seed=0, stakes=STAKES, pool=MODEL_POOL, gpus=GPU_KINDS) -> list[NodeSpec]:
    """N node specs, reproducible from the seed: 1..4 models of the pool, mixed GPUs/VRAM,
    stakes ten times apart. The first k specs of seed s are the same for every n >= k."""
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        gpu, vram = rng.choice(gpus)
        models = rng.sample(pool, rng.randint(1, 4))
        stake = rng.choice(stakes)
        specs.append(NodeSpec(seeded_address(seed, i), gpu, vram, models, stake,
                              public_key=hashlib.sha256(f"pk{seed}:{i}".encode()).digest()))
    return specs


def join(net, spec: NodeSpec, fund: bool = True):
    if fund and boa.env.get_balance(spec.addr) < spec.stake:
        boa.env.set_balance(spec.addr, spec.stake + 100 * ETHER)
    with boa.env.prank(spec.addr):
        net.join(b32(spec.gpu), spec.vram, [b32(m) for m in spec.models], spec.public_key,
                 spec.version, value=spec.stake)


def build_population(net, n: int, seed=0, **kw) -> list[NodeSpec]:
    specs = make_population(n, seed, **kw)
    for s in specs:
        join(net, s)
    return specs


_nonces = itertools.count(1)

# The (task ID, nonce) that open each task key created through `create_task`, so that
# validation helpers can reveal them.
OPENINGS: dict[bytes, tuple[bytes, bytes]] = {}


def fresh_nonce() -> bytes:
    return keccak(b"nonce" + next(_nonces).to_bytes(32, "big"))


def commitment_of(task_id: bytes, nonce: bytes) -> bytes:
    return task_commitment(task_id, nonce)


def key_of(creator, commitment: bytes) -> bytes:
    """The task's key on chain: keccak(creator ‖ commitment)."""
    return task_key(str(creator), commitment)


def block_hash(number: int) -> bytes:
    """The hash the tests give block `number` (boa keeps none of its own: all zero)."""
    return keccak(b"gridtask-test-block:" + number.to_bytes(32, "big"))


def mine(blocks: int = 1, seconds: int = 0) -> None:
    """Seal `blocks` blocks: block.number moves on (and the clock, by `seconds` in all), and
    the last 256 blocks get real, distinct, non-zero hashes, as on a chain, so blockhash()
    in the contract sees a value nobody chose."""
    patch = boa.env.evm.patch
    patch.block_number += blocks
    patch.timestamp += seconds
    n = patch.block_number
    patch.prev_hashes = [block_hash(n - 1 - d) if n - 1 - d >= 0 else EMPTY32 for d in range(256)]


def requirements(models=("llama3-8b",), min_vram=0, gpu=None) -> tuple[list[bytes], int, bytes]:
    return [b32(m) for m in models], min_vram, b32(gpu)


def start_task(net, who, key, models=("llama3-8b",), min_vram=0, gpu=None, exclude=(), any_model=False):
    """startTask with the requirements given at creation."""
    with boa.env.prank(who):
        net.startTask(key, *requirements(models, min_vram, gpu), [str(x) for x in exclude], any_model)


def create_task(net, creator, models=("llama3-8b",), fee=ETHER // 100, min_vram=0, gpu=None,
                size=1, timeout=60, task_type=0, nonce=None, commitment=None,
                params_hash=b"\x22" * 32, task_id=None, start=True, exclude=(), any_model=False) -> bytes:
    """createTask with a fresh nonce and task ID (unless given), then, unless start=False,
    one block later, startTask by the creator; returns the task's key."""
    nonce = nonce if nonce is not None else fresh_nonce()
    if task_id is None:
        task_id = keccak(b"task" + nonce)
    if commitment is None:
        commitment = commitment_of(task_id, nonce)
    with boa.env.prank(creator):
        net.createTask(task_type, commitment, nonce, [b32(m) for m in models], min_vram, b32(gpu),
                       params_hash, size, timeout, any_model, value=fee)
    key = key_of(creator, commitment)
    OPENINGS[key] = (task_id, nonce)
    if start:
        mine()
        start_task(net, creator, key, models, min_vram, gpu, exclude, any_model)
    return key


def opening(key) -> tuple[bytes, bytes]:
    """(h, nonce) that open a task created through `create_task`: h = keccak(task ID)."""
    task_id, nonce = OPENINGS[key]
    return task_id_hash(task_id), nonce


def validate(net, key, who=None):
    """validateSingleTask by the creator (or `who`), opening the commitment with
    h = keccak(task ID) and the nonce."""
    with boa.env.prank(who or kit_creator(net, key)):
        net.validateSingleTask(key, *opening(key))


def kit_creator(net, key) -> str:
    return str(net.getTask(key)[0])


def task_view(net, commitment) -> dict:
    creator, node, fee, state, deadline, timeout, score, result_hash = net.getTask(commitment)
    return dict(creator=str(creator), node=str(node), fee=fee, state=state, deadline=deadline,
                timeout=timeout, score=score, result_hash=result_hash)


def node_view(net, addr) -> dict:
    status, stake, gpu, vram, public_key, version = net.getNode(addr)
    return dict(status=status, stake=stake, gpu=gpu, vram=vram, public_key=public_key,
                version=version)


def same(a, b) -> bool:
    return str(a).lower() == str(b).lower()


ZERO_ADDRESS = "0x" + "00" * 20


# ------------------------------------------------------------- transaction gas


def tx_gas(contract) -> int:
    """Gas of the last call to `contract` as a real transaction would be charged: intrinsic
    (21000 + calldata) + execution, less the refund (capped at a fifth, EIP-3529).
    Only exact when the EVM's access counters and storage originals were reset before the call
    (see `GasMeter.lock`)."""
    comp = contract._computation
    data = bytes(comp.msg.data)
    intrinsic = 21000 + sum(4 if byte == 0 else 16 for byte in data)
    used = intrinsic + comp.get_gas_used()
    refund = min(comp.get_gas_refund(), used // 5)
    return used - refund


def start_transaction():
    """What the chain does between transactions: storage originals are locked (EIP-2200) and
    warm/cold access sets cleared (EIP-2929). boa does not do this between its calls.
    This breaks boa's anchors (snapshots), so only call it in an env with no anchor open."""
    boa.env.evm.vm.state.lock_changes()


# ------------------------------------------------------------- fast state reads


class StorageReader:
    """Reads the contract's storage directly (no EVM call): used by the stateful test's
    invariants, which look at every task, node and balance after every step. The slots come
    from the compiler's storage layout; test_invariants.py checks it against the public views."""

    def __init__(self, net):
        layout = net.compiler_data.storage_layout
        layout = layout.get("storage_layout", layout)
        self.slots = {n: layout[n]["slot"] for n in ("tasks", "balanceOf")}
        self.slots |= {n: layout["node_registry"][n]["slot"]
                       for n in ("nodes", "node_info", "model_node_count", "release_at")}
        self.queued_count_slot = layout["task_queue"]["queued_count"]["slot"]
        self.array_slots = {n: layout["node_registry"][n]["slot"] for n in ("model_nodes", "node_model_pos")}
        self.address = bytes.fromhex(str(net.address)[2:])

    def _get(self, slot: int) -> int:
        return boa.env.evm.vm.state.get_storage(self.address, slot)

    def _entry(self, name: str, key: bytes | str) -> int:
        if isinstance(key, str):  # an address
            key = bytes.fromhex(key[2:]).rjust(32, b"\0")
        return int.from_bytes(keccak(self.slots[name].to_bytes(32, "big") + key), "big")

    @staticmethod
    def _address(word: int) -> str:
        return "0x" + word.to_bytes(32, "big")[12:].hex()

    def task(self, commitment: bytes) -> dict:
        base = self._entry("tasks", commitment)
        cf = self._get(base)
        meta = self._get(base + 2)
        return dict(creator=self._address(cf & (2**160 - 1)), node=self._address(self._get(base + 1)),
                    fee=cf >> 160, state=meta & 0xFF, deadline=(meta >> 8) & (2**64 - 1),
                    timeout=(meta >> 72) & (2**64 - 1))

    def node(self, addr: str) -> tuple[int, int]:
        """(status, stake)"""
        return self._get(self._entry("node_info", addr)) & 0xFF, self._get(self._entry("nodes", addr))

    def pause_requested(self, addr: str) -> bool:
        return bool(self._get(self._entry("node_info", addr)) >> 255)

    def balance_of(self, addr: str) -> int:
        return self._get(self._entry("balanceOf", addr))

    def model_node_count(self, model: str) -> int:
        return self._get(self._entry("model_node_count", b32(model)))

    def queued_count(self) -> int:
        return self._get(self.queued_count_slot) & (2**128 - 1)  # (+ 2**128 per any-of task)

    def model_entries(self, model: str) -> list[tuple[str, int, int]]:
        """The model's array of active nodes as stored: (address, its 1-based position as
        node_model_pos records it, the entry's folded model filter), in array order."""
        base = int.from_bytes(keccak(self.array_slots["model_nodes"].to_bytes(32, "big") + b32(model)), "big")
        out = []
        for i in range(1, self.model_node_count(model) + 1):
            word = self._get(int.from_bytes(keccak(base.to_bytes(32, "big") + i.to_bytes(32, "big")), "big"))
            addr = self._address(word & (2**160 - 1))
            pos_base = keccak(self.array_slots["node_model_pos"].to_bytes(32, "big")
                              + bytes.fromhex(addr[2:]).rjust(32, b"\0"))
            pos = self._get(int.from_bytes(keccak(pos_base + b32(model)), "big"))
            out.append((addr, pos, word >> 224))
        return out

    def model_filter(self, addr: str) -> int:
        """The 64-bit model filter in the node's packed word."""
        return (self._get(self._entry("node_info", addr)) >> 168) & (2**64 - 1)


def model_filter(models) -> int:
    """What the contract's filter of a node serving `models` is (packing.bloom_bit)."""
    bloom = 0
    for m in models:
        bloom |= 1 << (int.from_bytes(keccak(b32(m)), "big") % 64)
    return bloom


def folded_filter(models) -> int:
    """The filter as a model array's entry carries it (packing.entry: folded to 32 bits)."""
    bloom = model_filter(models)
    return (bloom | (bloom >> 32)) & (2**32 - 1)
