"""Issue 8 on chain: the two-phase start, sampling, groups of three, slashing and top-ups,
disputes with the keccak-CTR result cipher, claims of unvalidated scores.

Every group outcome, every new revert reason, and the cipher/digest checked against
gridtask.crypto's own implementation (the Python side) on random results."""

from __future__ import annotations

import boa
import chain_kit as kit
import pytest
from chain_kit import (
    ABORTED,
    AGREED,
    CREATED,
    ERRORED,
    ETHER,
    IDLE,
    INVALIDATED,
    NO_MAJORITY,
    PAUSED,
    QUEUED,
    STARTED,
    SUCCESS,
    TOO_FEW,
    VALIDATED,
    b32,
    same,
)
from eth_abi import encode as abi_encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridtask.crypto import encrypt_result, keccak, result_digest, result_key, task_id_hash
from gridtask.exceptions import CryptoError

MODEL = "echo"
FEE = 10**15
EMBED = 1  # the similarity task type (kit.SIMILARITY_BITS[1] = 20)


def events(net) -> list[str]:
    return [type(e).__name__ for e in net.get_logs()]


def logs_of(net, name):
    return [e for e in net.get_logs() if type(e).__name__ == name]


@pytest.fixture
def make_net(relay):
    """make_net(**overrides) -> a fresh deployment with the issue-8 parameters overridden."""
    return lambda **kw: kit.deploy_fast(relay, **kw)


def nodes_for(net, n, model=MODEL, stake=ETHER):
    out = []
    for i in range(n):
        spec = kit.NodeSpec(kit.funded_address(f"v-node-{i}"), "cpu", 0, [model], stake)
        kit.join(net, spec)
        out.append(spec.addr)
    return out


def submit(net, key, score, result_hash=b"\x7e" * 32):
    node = kit.task_view(net, key)["node"]
    with boa.env.prank(node):
        net.submitScore(key, score, result_hash)
    return node


def score_word(high: int, low: int = 0) -> bytes:
    return ((high << 128) | low).to_bytes(32, "big")


# ---------------------------------------------------------------- the two-phase start


def test_create_selects_nothing_and_start_reads_the_creation_blocks_hash(net, creator, make_node, task):
    n = make_node(models=(MODEL,))
    key = kit.create_task(net, creator, models=(MODEL,), start=False)
    assert events(net) == ["TaskCreated"]
    assert task(key)["state"] == CREATED and task(key)["node"] == kit.ZERO_ADDRESS
    created = boa.env.evm.patch.block_number
    assert net.getTaskInfo(key) == (0, 1, created, False)
    with kit.reverts("tasks: start in a later block than creation"):
        kit.start_task(net, creator, key, (MODEL,))
    kit.mine()
    assert kit.block_hash(created) != kit.EMPTY32  # a real hash, as on a chain
    kit.start_task(net, creator, key, (MODEL,))
    assert task(key)["state"] == STARTED and same(task(key)["node"], n.addr)
    assert net.getTaskInfo(key)[2] == 0  # started: the rand field holds the hash's low 64 bits
    # sampling reads that hash: at 100% every task is sampled, and isSampled says so
    h, nonce = kit.opening(key)
    assert net.isSampled(key, h, nonce) is False  # this deployment samples nothing (rate 0)


def test_start_refusals(net, creator, stranger, make_node, task):
    make_node(models=(MODEL,))
    key = kit.create_task(net, creator, models=(MODEL,), start=False)
    kit.mine()
    with kit.reverts("tasks: requirements differ from creation"):
        kit.start_task(net, creator, key, (MODEL, "other"))
    with kit.reverts("tasks: requirements differ from creation"):
        kit.start_task(net, creator, key, (MODEL,), min_vram=1)
    with kit.reverts("tasks: only the creator may exclude nodes"):
        kit.start_task(net, stranger, key, (MODEL,), exclude=[stranger])
    with kit.reverts("tasks: only the creator may start it this early"):
        kit.start_task(net, stranger, key, (MODEL,))
    kit.mine(32)  # anyone may start a task left waiting
    kit.start_task(net, stranger, key, (MODEL,))
    assert task(key)["state"] == STARTED
    with kit.reverts("tasks: task not waiting to start"):
        kit.start_task(net, creator, key, (MODEL,))
    with kit.reverts("tasks: unknown task"):
        kit.start_task(net, creator, b"\x31" * 32, (MODEL,))


def test_start_window_is_256_blocks_then_cancel(net, creator, task):
    key = kit.create_task(net, creator, models=(MODEL,), fee=FEE, start=False)
    kit.mine(257)
    with kit.reverts("tasks: start window passed; cancel the task"):
        kit.start_task(net, creator, key, (MODEL,))
    with boa.env.prank(creator):
        net.cancelTask(key)
    assert task(key)["state"] == ABORTED and net.balanceOf(creator) == FEE


def test_start_at_the_edge_of_the_window(net, creator, make_node, task):
    make_node(models=(MODEL,))
    key = kit.create_task(net, creator, models=(MODEL,), start=False)
    kit.mine(256)  # blockhash still reaches the creation block
    kit.start_task(net, creator, key, (MODEL,))
    assert task(key)["state"] == STARTED


def test_excluded_nodes_never_run_the_task_nor_take_it_from_the_queue(net, creator, task):
    a, b, c = nodes_for(net, 3)
    key = kit.create_task(net, creator, models=(MODEL,), exclude=[a, b])
    assert same(task(key)["node"], c)
    queued = kit.create_task(net, creator, models=(MODEL,), exclude=[a, b])  # c is busy
    assert task(queued)["state"] == QUEUED
    with boa.env.prank(a):
        assert net.takeQueuedTask() is False
    with boa.env.prank(c):
        net.reportTaskError(key, 1)  # c is freed and takes the queued task
    assert same(task(queued)["node"], c)


def test_min_fee_per_unit_and_task_type_range(make_net, creator):
    net = make_net(min_fee_per_unit=10**9)
    assert net.min_fee_per_unit() == 10**9
    with kit.reverts("tasks: fee below the minimum for its size"):
        kit.create_task(net, creator, fee=3 * 10**9 - 1, size=3, start=False)
    kit.create_task(net, creator, fee=3 * 10**9, size=3, start=False)
    with kit.reverts("tasks: task type out of range"):
        kit.create_task(net, creator, fee=10**10, task_type=256, start=False)


def test_deploy_parameters_are_readable(make_net):
    net = make_net(validation_rate_bps=1234, validation_window=77, challenge_window=88,
                   unstake_delay=99, slash_bps=4321, min_fee_per_unit=5, similarity_bits=[0, 17, 0, 9])
    assert (net.validation_rate_bps(), net.validation_window(), net.challenge_window(),
            net.unstake_delay(), net.slash_bps(), net.min_fee_per_unit()) == (1234, 77, 88, 99, 4321, 5)
    assert [net.similarity_bits(t) for t in range(5)] == [0, 17, 0, 9, 0]
    assert net.verifier() != kit.ZERO_ADDRESS


@pytest.mark.parametrize("overrides, reason", [
    (dict(validation_rate_bps=10_001), "config: validation rate above 10000 bps"),
    (dict(slash_bps=10_001), "config: slash share above 10000 bps"),
    (dict(challenge_window=100, unstake_delay=99), "config: unstake delay shorter than the challenge window"),
    (dict(validation_window=0), "config: validation window must be positive"),
    (dict(similarity_bits=[0, 129]), "config: similarity bits above 128"),
])
def test_deploy_refusals(relay, overrides, reason):
    with kit.reverts(reason):
        kit.deploy(relay, **overrides)


# ---------------------------------------------------------------- sampling


def test_sampling_follows_the_rule_and_the_rate(make_net, creator):
    """Over 600 tasks at 10%: the sampled share is within 4.5 standard deviations of the rate
    (binomial: 60 expected, sd 7.3), and each decision is keccak(h ‖ rand) % 10000 < rate,
    rand = the low 64 bits of the creation block's hash."""
    net = make_net(validation_rate_bps=1000)
    nodes_for(net, 1)
    sampled = 0
    n = 600
    for _ in range(n):
        key = kit.create_task(net, creator, models=(MODEL,), start=False)
        created = boa.env.evm.patch.block_number
        kit.mine()
        kit.start_task(net, creator, key, (MODEL,))
        h, nonce = kit.opening(key)
        rand = int.from_bytes(kit.block_hash(created), "big") & (2**64 - 1)
        expected = int.from_bytes(keccak(abi_encode(["bytes32", "uint256"], [h, rand])), "big") % 10_000 < 1000
        got = net.isSampled(key, h, nonce)
        assert got == expected
        sampled += got
        with boa.env.prank(kit.task_view(net, key)["node"]):
            net.reportTaskError(key, 1)  # free the node
    assert abs(sampled - 60) <= 4.5 * 7.35, sampled


def test_is_sampled_and_validate_single_refusals(make_net, creator, stranger):
    net = make_net(validation_rate_bps=10_000)  # every task sampled
    nodes_for(net, 1)
    key = kit.create_task(net, creator, models=(MODEL,), start=False)
    h, nonce = kit.opening(key)
    with kit.reverts("tasks: task not started"):
        net.isSampled(key, h, nonce)
    kit.mine()
    kit.start_task(net, creator, key, (MODEL,))
    task_id, _ = kit.OPENINGS[key]
    with kit.reverts("tasks: task ID does not open the commitment"):
        net.isSampled(key, task_id, nonce)  # the task ID itself is not the opening: h is
    with kit.reverts("tasks: task ID does not open the commitment"):
        net.isSampled(key, h, b"\x01" * 32)
    assert net.isSampled(key, h, nonce) is True
    submit(net, key, b"\x01" * 32)
    with boa.env.prank(stranger), kit.reverts("tasks: only the creator may validate"):
        net.validateSingleTask(key, h, nonce)
    with boa.env.prank(creator), kit.reverts("tasks: task ID does not open the commitment"):
        net.validateSingleTask(key, keccak(b"another id"), nonce)
    with boa.env.prank(creator), kit.reverts("tasks: task was sampled: validate it as a group of three"):
        net.validateSingleTask(key, h, nonce)


GRINDER = """
# pragma version 0.4.3
interface TaskNetwork:
    def createTask(task_type: uint256, commitment: bytes32, nonce: bytes32,
                   model_ids: DynArray[bytes32, 16], min_vram: uint256, required_gpu: bytes32,
                   params_hash: bytes32, task_size: uint256, timeout: uint256, any_model: bool): payable
    def getTask(key: bytes32) -> (address, address, uint256, uint256, uint256, uint256, bytes32, bytes32): view

net: TaskNetwork
seen: public(DynArray[address, 32])
starts_refused: public(uint256)

@deploy
@payable
def __init__(net: address):
    self.net = TaskNetwork(net)

@external
def grind(model: bytes32, tries: uint256):
    # the audit's attack: create, look which node was chosen, keep the nonce that hits
    for i: uint256 in range(32):
        if i >= tries:
            break
        nonce: bytes32 = keccak256(convert(i, bytes32))
        commitment: bytes32 = keccak256(concat(keccak256(b"id"), nonce))
        extcall self.net.createTask(
            0, commitment, nonce, [model], 0, empty(bytes32), empty(bytes32), 1, 60, False, value=10**15
        )
        key: bytes32 = keccak256(concat(convert(self, bytes20), commitment))
        node: address = (staticcall self.net.getTask(key))[1]
        self.seen.append(node)
        # and try to start it in the same transaction, to see the selection
        models: DynArray[bytes32, 4] = [model]
        nobody: DynArray[address, 2] = []
        vram: uint256 = 0
        call: Bytes[512] = abi_encode(
            key, models, vram, empty(bytes32), nobody, False,
            method_id=method_id("startTask(bytes32,bytes32[],uint256,bytes32,address[],bool)"),
        )
        ok: bool = raw_call(self.net.address, call, revert_on_failure=False)
        if not ok:
            self.starts_refused += 1
"""


def test_a_creator_contract_cannot_see_the_selection_in_the_creation_transaction(net, creator):
    """The audit's attack (try nonces in sub-calls, read which node is chosen, keep the one
    that hits): nothing is selected at creation, and starting needs a later block."""
    nodes_for(net, 5)
    with boa.env.prank(creator):
        grinder = boa.loads(GRINDER, net.address, value=ETHER)
    grinder.grind(b32(MODEL), 20)
    assert [str(grinder.seen(i)) for i in range(20)] == [kit.ZERO_ADDRESS] * 20
    assert grinder.starts_refused() == 20


# ---------------------------------------------------------------- groups of three


class Group:
    """Three tasks with one task ID, each started with the other members' nodes excluded."""

    def __init__(self, net, creator, task_type=0, fee=FEE, fees=None, timeout=60):
        self.net, self.creator = net, creator
        self.task_id = keccak(b"group" + kit.fresh_nonce())
        self.h = task_id_hash(self.task_id)
        self.keys, self.nonces = [], []
        fees = fees or [fee] * 3
        for i in range(3):
            exclude = [n for n in (kit.task_view(net, k)["node"] for k in self.keys) if n != kit.ZERO_ADDRESS]
            key = kit.create_task(net, creator, models=(MODEL,), fee=fees[i], task_id=self.task_id,
                                  task_type=task_type, timeout=timeout, exclude=exclude[-2:])
            self.keys.append(key)
            self.nonces.append(kit.OPENINGS[key][1])
        self.nodes = [kit.task_view(net, k)["node"] for k in self.keys]

    def validate(self):
        """validateTaskGroup by the creator; the TaskGroupValidated event (all of the
        transaction's events are kept in `self.logs`)."""
        with boa.env.prank(self.creator):
            self.net.validateTaskGroup(self.h, self.nonces)
        self.logs = list(self.net.get_logs())
        (outcome,) = self.named("TaskGroupValidated")
        return outcome

    def named(self, name):
        return [e for e in self.logs if type(e).__name__ == name]

    def state(self, i):
        return kit.task_view(self.net, self.keys[i])["state"]


@pytest.fixture
def sampled_net(make_net):
    net = make_net(validation_rate_bps=10_000)
    nodes_for(net, 4)
    return net


@pytest.fixture
def always_net(make_net):
    net = make_net(validation_rate_bps=0)
    nodes_for(net, 4)
    return net


def stakes(net, addrs):
    return [kit.node_view(net, a)["stake"] for a in addrs]


def test_group_all_three_agree_sampled(sampled_net, creator, relay):
    net = sampled_net
    g = Group(net, creator, fees=[9 * 10**14 + 2, 5 * 10**14, 7 * 10**14])
    assert len({str(n) for n in g.nodes}) == 3
    for k in g.keys:
        submit(net, k, b"\x42" * 32)
    held = boa.env.get_balance(net.address)
    ev = g.validate()
    assert (ev.outcome, ev.agreeing, ev.sampled, list(ev.keys)) == (AGREED, 0b111, True, g.keys)
    assert ev.task_id == g.h and same(ev.creator, creator)
    assert [g.state(i) for i in range(3)] == [VALIDATED] * 3
    # the original's fee is shared (remainder to the first), the two extra fees come back
    shares = [kit.task_view(net, k)["fee"] for k in g.keys]
    assert shares == [3 * 10**14 + 2, 3 * 10**14, 3 * 10**14]
    assert net.balanceOf(creator) == 5 * 10**14 + 7 * 10**14
    assert boa.env.get_balance(net.address) == held
    for k in g.keys:
        with boa.env.prank(relay):
            net.reportResultUploaded(k)
    assert [net.balanceOf(n) for n in g.nodes] == shares
    assert net.getTaskInfo(g.keys[0])[3] is True  # grouped
    with boa.env.prank(creator), kit.reverts("group: a member was already validated in a group"):
        net.validateTaskGroup(g.h, g.nonces)


def test_group_validate_always_each_keeps_its_own_fee(always_net, creator):
    net = always_net
    g = Group(net, creator, fees=[10**15, 2 * 10**15, 3 * 10**15])
    for k in g.keys:
        submit(net, k, b"\x42" * 32)
    ev = g.validate()
    assert (ev.outcome, ev.sampled) == (AGREED, False)
    assert [kit.task_view(net, k)["fee"] for k in g.keys] == [10**15, 2 * 10**15, 3 * 10**15]
    assert net.balanceOf(creator) == 0


def test_group_two_agree_the_third_is_slashed_and_refunded(sampled_net, creator):
    net = sampled_net
    g = Group(net, creator, fees=[10**15, 10**15, 10**15])
    before = stakes(net, g.nodes)
    submit(net, g.keys[0], b"\x42" * 32)
    submit(net, g.keys[1], b"\x66" * 32)  # the liar
    submit(net, g.keys[2], b"\x42" * 32)
    ev = g.validate()
    assert (ev.outcome, ev.agreeing) == (AGREED, 0b101)
    assert [g.state(i) for i in range(3)] == [VALIDATED, INVALIDATED, VALIDATED]
    slashed = before[1] * kit.SLASH_BPS // 10_000
    assert [e.reason for e in g.named("NodeSlashed")] == ["group: score disagrees with the majority"]
    assert stakes(net, g.nodes) == [before[0], before[1] - slashed, before[2]]
    # the slashed stake goes to the agreeing nodes (remainder to the first)
    assert net.balanceOf(g.nodes[0]) == slashed - slashed // 2 and net.balanceOf(g.nodes[2]) == slashed // 2
    # sampled: the original's fee is shared by the two; both extra fees come back
    assert [kit.task_view(net, k)["fee"] for k in (g.keys[0], g.keys[2])] == [5 * 10**14, 5 * 10**14]
    assert net.balanceOf(creator) == 2 * 10**15
    # below the minimum stake: the slashed node pauses (its task ended) and cannot resume
    assert kit.node_view(net, g.nodes[1])["status"] == PAUSED
    with boa.env.prank(g.nodes[1]), kit.reverts("nodes: stake below minimum: top up first"):
        net.resume()
    with boa.env.prank(g.nodes[1]), kit.reverts("nodes: zero top-up"):
        net.topUp()
    with boa.env.prank(g.nodes[1]):
        net.topUp(value=slashed)
    assert logs_of(net, "NodeToppedUp")[0].stake == before[1]
    with boa.env.prank(g.nodes[1]):
        net.resume()
    assert kit.node_view(net, g.nodes[1])["status"] == IDLE


def test_group_slash_event_names_the_task_and_the_reason(sampled_net, creator):
    net = sampled_net
    g = Group(net, creator)
    for k, s in zip(g.keys, [b"\x42" * 32, b"\x42" * 32, b"\x66" * 32], strict=True):
        submit(net, k, s)
    g.validate()
    (slash,) = g.named("NodeSlashed")
    assert same(slash.node, g.nodes[2]) and slash.commitment == g.keys[2]
    assert slash.reason == "group: score disagrees with the majority" and slash.amount == ETHER // 2
    (inv,) = g.named("TaskInvalidated")
    assert inv.commitment == g.keys[2] and inv.reason == "group: score disagrees with the majority"


def test_group_errored_member_is_slashed_when_two_agree(always_net, creator):
    net = always_net
    g = Group(net, creator)
    submit(net, g.keys[0], b"\x42" * 32)
    submit(net, g.keys[1], b"\x42" * 32)
    with boa.env.prank(g.nodes[2]):
        net.reportTaskError(g.keys[2], 3)  # fee refunded at once
    assert net.balanceOf(creator) == FEE
    ev = g.validate()
    assert (ev.outcome, ev.agreeing) == (AGREED, 0b011)
    (slash,) = g.named("NodeSlashed")
    assert g.state(2) == ERRORED and net.getTaskInfo(g.keys[2])[3] is True
    assert same(slash.node, g.nodes[2]) and slash.reason == "group: reported an error while two agreed"
    assert kit.node_view(net, g.nodes[2])["stake"] == ETHER // 2
    assert kit.node_view(net, g.nodes[2])["status"] == PAUSED  # it was idle: paused at once


def test_group_aborted_member_has_no_vote_and_no_slash(always_net, creator):
    net = always_net
    g = Group(net, creator, timeout=10)
    submit(net, g.keys[0], b"\x42" * 32)
    submit(net, g.keys[2], b"\x42" * 32)
    with boa.env.prank(creator), kit.reverts("group: a member is still running; abort it after its deadline"):
        net.validateTaskGroup(g.h, g.nonces)
    boa.env.time_travel(seconds=11)
    with boa.env.prank(creator):
        net.abortTask(g.keys[1], "silent")
    assert kit.node_view(net, g.nodes[1])["status"] == PAUSED  # it let its deadline pass
    ev = g.validate()
    assert (ev.outcome, ev.agreeing) == (AGREED, 0b101)
    assert g.named("NodeSlashed") == []
    assert kit.node_view(net, g.nodes[1])["stake"] == ETHER


def test_group_no_two_agree_is_aborted_and_refunded(always_net, creator):
    net = always_net
    g = Group(net, creator)
    for i, k in enumerate(g.keys):
        submit(net, k, bytes([i + 1]) * 32)
    ev = g.validate()
    assert (ev.outcome, ev.agreeing) == (NO_MAJORITY, 0)
    assert g.named("NodeSlashed") == []
    assert [e.reason for e in g.named("TaskAborted")] == ["group: no two results agree"] * 3
    assert [g.state(i) for i in range(3)] == [ABORTED] * 3
    assert net.balanceOf(creator) == 3 * FEE
    assert all(kit.node_view(net, n)["status"] == IDLE for n in g.nodes)


def test_group_fewer_than_two_results_is_aborted_and_refunded(always_net, creator):
    net = always_net
    g = Group(net, creator)
    submit(net, g.keys[0], b"\x42" * 32)
    for k, n in zip(g.keys[1:], g.nodes[1:], strict=True):
        with boa.env.prank(n):
            net.reportTaskError(k, 1)
    ev = g.validate()
    assert (ev.outcome, ev.agreeing) == (TOO_FEW, 0)
    assert g.named("NodeSlashed") == []
    assert [e.reason for e in g.named("TaskAborted")] == ["group: fewer than two results"]
    assert g.state(0) == ABORTED
    assert net.balanceOf(creator) == 3 * FEE


def test_group_refusals(always_net, creator):
    net = always_net
    g = Group(net, creator)
    for k in g.keys:
        submit(net, k, b"\x42" * 32)
    with boa.env.prank(creator), kit.reverts("group: nonces must differ"):
        net.validateTaskGroup(g.h, [g.nonces[0], g.nonces[0], g.nonces[2]])
    with boa.env.prank(creator), kit.reverts("tasks: unknown task"):
        net.validateTaskGroup(keccak(b"wrong"), g.nonces)
    other = kit.funded_address("other")
    with boa.env.prank(other), kit.reverts("tasks: unknown task"):  # keys derive from the caller
        net.validateTaskGroup(g.h, g.nonces)


def test_group_refuses_two_members_on_one_node(make_net, creator):
    """Members started without their exclude lists (by someone else, say) can land on one
    node: such a group cannot be validated (the creator replaces a member)."""
    net = make_net()
    nodes_for(net, 1)
    task_id = keccak(b"same-node")
    keys = [kit.create_task(net, creator, models=(MODEL,), task_id=task_id)]
    with boa.env.prank(kit.task_view(net, keys[0])["node"]):
        net.reportTaskError(keys[0], 1)  # the node is free again
    keys.append(kit.create_task(net, creator, models=(MODEL,), task_id=task_id))
    submit(net, keys[1], b"\x42" * 32)
    keys.append(kit.create_task(net, creator, models=(MODEL,), task_id=task_id))
    with boa.env.prank(creator), kit.reverts("group: two tasks ran on the same node"):
        net.validateTaskGroup(task_id_hash(task_id), [kit.OPENINGS[k][1] for k in keys])


def test_group_members_share_a_task_type(make_net, creator):
    net = make_net()
    nodes_for(net, 3)
    task_id = keccak(b"types")
    keys = [kit.create_task(net, creator, models=(MODEL,), task_id=task_id, task_type=t) for t in (0, 0, 2)]
    for k in keys:
        submit(net, k, b"\x42" * 32)
    with boa.env.prank(creator), kit.reverts("group: members differ in task type"):
        net.validateTaskGroup(task_id_hash(task_id), [kit.OPENINGS[k][1] for k in keys])


@pytest.mark.parametrize("distance, agree", [(0, True), (20, True), (21, False), (128, False)])
def test_similarity_scores_agree_within_the_hamming_threshold(always_net, creator, distance, agree):
    """EMBED (type 1, threshold 20 here): the high 128 bits compared by Hamming distance, the
    low 128 bits (the digest) ignored."""
    net = always_net
    g = Group(net, creator, task_type=EMBED)
    base = 0x0123456789ABCDEF0123456789ABCDEF
    flipped = base ^ ((1 << distance) - 1)
    submit(net, g.keys[0], score_word(base, 1))
    submit(net, g.keys[1], score_word(flipped, 2))
    submit(net, g.keys[2], score_word(base ^ (((1 << 64) - 1) << 40), 3))  # 64+ bits from both
    ev = g.validate()
    assert ev.outcome == (AGREED if agree else NO_MAJORITY)
    assert ev.agreeing == (0b011 if agree else 0)


def test_exact_scores_must_be_equal_in_all_32_bytes(always_net, creator):
    net = always_net
    g = Group(net, creator, task_type=0)
    submit(net, g.keys[0], score_word(5, 1))
    submit(net, g.keys[1], score_word(5, 2))  # same high half, other digest
    submit(net, g.keys[2], score_word(6, 1))
    assert g.validate().outcome == NO_MAJORITY


def test_the_verifier_majority_rule(always_net):
    verifier = kit.verifier_deployer().at(always_net.verifier())
    a, b, c = b"\x01" * 32, b"\x02" * 32, b"\x01" * 32
    assert verifier.majority([a, b, c], 0b111, False, 0) == 0b101
    assert verifier.majority([a, b, c], 0b011, False, 0) == 0  # c does not vote
    assert verifier.majority([a, a, a], 0b111, False, 0) == 0b111


# ---------------------------------------------------------------- claims and deadlines


def test_claim_unvalidated_pays_the_node_after_the_window(net, creator, stranger, make_node, task):
    n = make_node(models=(MODEL,))
    key = kit.create_task(net, creator, models=(MODEL,), fee=FEE)
    submit(net, key, b"\x42" * 32)
    with boa.env.prank(stranger), kit.reverts("tasks: only the task's node may do this"):
        net.claimUnvalidated(key)
    boa.env.time_travel(seconds=kit.VALIDATION_WINDOW)
    with boa.env.prank(n.addr), kit.reverts("tasks: validation window not passed"):
        net.claimUnvalidated(key)
    boa.env.time_travel(seconds=1)
    with boa.env.prank(n.addr):
        net.claimUnvalidated(key)
    (aborted,) = logs_of(net, "TaskAborted")
    assert aborted.reason == "creator did not validate in time: node paid" and same(aborted.by, n.addr)
    assert task(key)["state"] == ABORTED and net.balanceOf(n.addr) == FEE and net.balanceOf(creator) == 0
    assert kit.node_view(net, n.addr)["status"] == IDLE


def test_the_creator_may_validate_late_until_the_node_claims(net, creator, make_node, task):
    make_node(models=(MODEL,))
    key = kit.create_task(net, creator, models=(MODEL,))
    submit(net, key, b"\x42" * 32)
    boa.env.time_travel(seconds=kit.VALIDATION_WINDOW + 100)
    kit.validate(net, key)
    assert task(key)["state"] == VALIDATED


# ---------------------------------------------------------------- disputes


def deliver(net, relay, creator, plain: bytes, score: bytes, task_type=0, lie: bytes | None = None):
    """A task whose node commits `score` and delivers the encryption of `lie` (or `plain`);
    returns (key, task_id, nonce, ciphertext)."""
    key = kit.create_task(net, creator, models=(MODEL,), fee=FEE, task_type=task_type)
    task_id, nonce = kit.OPENINGS[key]
    cipher = encrypt_result(result_key(task_id, nonce), plain if lie is None else lie)
    submit(net, key, score, keccak(cipher))
    kit.validate(net, key)
    with boa.env.prank(relay):
        net.reportResultUploaded(key)
    return key, task_id, nonce, cipher


def test_dispute_against_an_honest_node_fails_every_way(net, creator, relay, make_node, task):
    n = make_node(models=(MODEL,))
    plain = b'{"echo":"hello"}'
    key, task_id, nonce, cipher = deliver(net, relay, creator, plain, result_digest(plain))
    with boa.env.prank(creator), kit.reverts("dispute: the result matches the score"):
        net.disputeResult(key, task_id, nonce, cipher)
    with boa.env.prank(creator), kit.reverts("tasks: task ID does not open the commitment"):
        net.disputeResult(key, keccak(b"a wrong task ID"), nonce, cipher)
    with boa.env.prank(creator), kit.reverts("tasks: task ID does not open the commitment"):
        net.disputeResult(key, task_id_hash(task_id), nonce, cipher)  # h is not the task ID
    forged = encrypt_result(result_key(task_id, nonce), b"something else")
    with boa.env.prank(creator), kit.reverts("dispute: not the delivered ciphertext"):
        net.disputeResult(key, task_id, nonce, forged)
    with boa.env.prank(n.addr), kit.reverts("tasks: only the creator may dispute"):
        net.disputeResult(key, task_id, nonce, cipher)
    assert task(key)["state"] == SUCCESS and net.balanceOf(n.addr) == FEE


def test_a_node_that_delivered_another_result_loses_the_dispute(net, creator, relay, make_node, task):
    n = make_node(models=(MODEL,))
    plain = b'{"echo":"the real answer"}'
    key, task_id, nonce, cipher = deliver(net, relay, creator, plain, result_digest(plain), lie=b"garbage")
    assert net.balanceOf(n.addr) == FEE  # paid at delivery
    held = boa.env.get_balance(net.address)
    with boa.env.prank(creator):
        net.disputeResult(key, task_id, nonce, cipher)
    # its stake fell below the minimum while idle: it pauses
    assert events(net) == ["NodePaused", "NodeSlashed", "TaskInvalidated"]
    (slash,) = [e for e in net.get_logs() if type(e).__name__ == "NodeSlashed"]
    assert task(key)["state"] == INVALIDATED
    # the fee comes back from the node's balance, and the slashed half of its stake with it
    assert net.balanceOf(n.addr) == 0
    assert kit.node_view(net, n.addr)["stake"] == ETHER // 2
    assert net.balanceOf(creator) == FEE + ETHER // 2
    assert boa.env.get_balance(net.address) == held
    assert kit.node_view(net, n.addr)["status"] == PAUSED  # below the minimum stake
    with boa.env.prank(creator), kit.reverts("dispute: task not delivered"):
        net.disputeResult(key, task_id, nonce, cipher)


def test_the_fee_comes_from_the_stake_when_the_node_withdrew_it(net, creator, relay, make_node):
    n = make_node(models=(MODEL,), stake=2 * ETHER)
    plain = b"x" * 40
    key, task_id, nonce, cipher = deliver(net, relay, creator, plain, result_digest(plain), lie=b"y" * 40)
    with boa.env.prank(n.addr):
        net.withdraw()
    with boa.env.prank(creator):
        net.disputeResult(key, task_id, nonce, cipher)
    left = 2 * ETHER - FEE
    assert kit.node_view(net, n.addr)["stake"] == left - left // 2
    assert net.balanceOf(creator) == FEE + left // 2


def test_a_leaving_node_is_still_slashable_until_its_stake_is_released(net, creator, relay, make_node):
    n = make_node(models=(MODEL,))
    plain = b"answer"
    key, task_id, nonce, cipher = deliver(net, relay, creator, plain, result_digest(plain), lie=b"lie")
    with boa.env.prank(n.addr):
        net.quit()
    boa.env.time_travel(seconds=kit.CHALLENGE_WINDOW)  # the last second of the window
    with boa.env.prank(creator):
        net.disputeResult(key, task_id, nonce, cipher)
    assert kit.node_view(net, n.addr)["stake"] == ETHER // 2
    assert kit.node_view(net, n.addr)["status"] == kit.LEAVING


def test_a_dispute_after_the_challenge_window_is_refused(net, creator, relay, make_node):
    make_node(models=(MODEL,))
    key, task_id, nonce, cipher = deliver(net, relay, creator, b"a", result_digest(b"a"), lie=b"b")
    boa.env.time_travel(seconds=kit.CHALLENGE_WINDOW + 1)
    with boa.env.prank(creator), kit.reverts("dispute: challenge window passed"):
        net.disputeResult(key, task_id, nonce, cipher)


def test_a_similarity_score_binds_the_result_by_its_low_half(net, creator, relay, make_node, task):
    """EMBED: the high half is the SimHash (not checkable from the bytes alone), the low half
    the digest: an honest delivery cannot be disputed, another result can."""
    make_node(models=(MODEL,))
    plain = b"[0.1, 0.2]"
    honest = score_word(0xABCDEF, int.from_bytes(result_digest(plain), "big") & (2**128 - 1))
    key, task_id, nonce, cipher = deliver(net, relay, creator, plain, honest, task_type=EMBED)
    with boa.env.prank(creator), kit.reverts("dispute: the result matches the score"):
        net.disputeResult(key, task_id, nonce, cipher)
    key, task_id, nonce, cipher = deliver(net, relay, creator, plain, honest, task_type=EMBED, lie=b"[9]")
    with boa.env.prank(creator):
        net.disputeResult(key, task_id, nonce, cipher)
    assert task(key)["state"] == INVALIDATED


def test_a_malformed_frame_matches_no_score(net, creator, relay, make_node, task):
    """A node that commits keccak of a frame that does not decode (its length word lies)
    cannot hide behind that frame's hash as a score."""
    make_node(models=(MODEL,))
    key = kit.create_task(net, creator, models=(MODEL,))
    task_id, nonce = kit.OPENINGS[key]
    k = result_key(task_id, nonce)
    frame = (100).to_bytes(32, "big") + b"z" * 32  # says 100 bytes, holds 32
    stream = b"".join(keccak(k + i.to_bytes(32, "big")) for i in range(2))
    cipher = bytes(a ^ b for a, b in zip(frame, stream, strict=True))
    submit(net, key, keccak(frame), keccak(cipher))
    kit.validate(net, key)
    with boa.env.prank(relay):
        net.reportResultUploaded(key)
    with boa.env.prank(creator):
        net.disputeResult(key, task_id, nonce, cipher)
    assert task(key)["state"] == INVALIDATED


# ---------------------------------------------------------------- the cipher, against gridtask.crypto


def reference_frame_digest(key: bytes, cipher: bytes) -> tuple[bool, bytes]:
    """SPEC8 §4 written out once more, independently of gridtask.crypto: keystream word i =
    keccak(key ‖ uint256 i); frame = length word ‖ result ‖ zero padding."""
    if not cipher or len(cipher) % 32:
        return False, kit.EMPTY32
    words = [bytes(a ^ b for a, b in zip(cipher[i:i + 32], keccak(key + (i // 32).to_bytes(32, "big")), strict=True))
             for i in range(0, len(cipher), 32)]
    length = int.from_bytes(words[0], "big")
    if -(-length // 32) != len(words) - 1:
        return False, kit.EMPTY32
    frame = b"".join(words)
    if any(frame[32 + length:]):
        return False, kit.EMPTY32
    return True, keccak(frame)


@pytest.fixture(scope="module")
def verifier():
    with boa.swap_env(boa.Env()):
        yield kit.deploy_verifier()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plain=st.binary(max_size=700), key=st.binary(min_size=32, max_size=32))
def test_the_contract_decrypts_what_gridtask_crypto_encrypts(verifier, plain, key):
    cipher = encrypt_result(key, plain)
    with boa.swap_env(verifier.env):
        assert verifier.frameDigest(key, cipher) == (True, result_digest(plain))
        assert reference_frame_digest(key, cipher) == (True, result_digest(plain))
        assert verifier.resultMatches(key, cipher, result_digest(plain), False) is True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cipher=st.binary(max_size=300), key=st.binary(min_size=32, max_size=32),
       tamper=st.integers(0, 2**16))
def test_the_contract_and_gridtask_crypto_agree_on_any_ciphertext(verifier, cipher, key, tamper):
    """Random and tampered ciphertexts: well formed for the contract exactly when
    gridtask.crypto decrypts them, and then with the digest of what it decrypts to."""
    from gridtask.crypto import decrypt_result

    if len(cipher) >= 32 and tamper % 3 == 0:  # sometimes a length word that fits
        plain_len = tamper % (len(cipher) - len(cipher) % 32)
        cipher = encrypt_result(key, b"\x00" * plain_len)[:len(cipher)]
    with boa.swap_env(verifier.env):
        ok, digest = verifier.frameDigest(key, cipher)
    assert (ok, digest) == reference_frame_digest(key, cipher)
    try:
        plain = decrypt_result(key, cipher)
    except CryptoError:
        assert not ok
    else:
        assert ok and digest == result_digest(plain)


@pytest.mark.parametrize("frame, why", [
    ((3).to_bytes(32, "big") + b"abc" + b"\x00" * 28 + b"\x01", "a non-zero padding byte"),
    ((3).to_bytes(32, "big") + b"abc" + b"\x00" * 29 + b"\x00" * 32, "a word beyond the length"),
    ((40).to_bytes(32, "big") + b"abc" + b"\x00" * 29, "a length beyond the frame"),
    ((0).to_bytes(32, "big") + b"\x00" * 32, "an empty result with a body"),
], ids=["padding", "extra-word", "short", "empty-with-body"])
def test_a_malformed_frame_is_refused_by_both_sides(verifier, frame, why):
    """The frame rules one by one: the contract and gridtask.crypto refuse the same frames."""
    from gridtask.crypto import decrypt_result

    key = b"\x09" * 32
    stream = b"".join(keccak(key + i.to_bytes(32, "big")) for i in range(len(frame) // 32))
    cipher = bytes(x ^ y for x, y in zip(frame, stream, strict=True))
    with boa.swap_env(verifier.env):
        assert verifier.frameDigest(key, cipher) == (False, kit.EMPTY32), why
    with pytest.raises(CryptoError):
        decrypt_result(key, cipher)


def test_the_largest_disputable_result_fits_and_one_byte_more_does_not(verifier):
    key = b"\x07" * 32
    plain = b"\xab" * 16_384
    cipher = encrypt_result(key, plain)
    assert len(cipher) == 16_416
    with boa.swap_env(verifier.env):
        assert verifier.frameDigest(key, cipher) == (True, result_digest(plain))
        with pytest.raises(Exception):  # noqa: B017, PT011 - over Bytes[16416]: the ABI refuses it
            verifier.frameDigest(key, encrypt_result(key, plain + b"\x00"))


# ---------------------------------------------------------------- a node is busy only while it computes


def test_a_scored_node_takes_the_next_task_and_the_first_ones_end_leaves_it_be(net, creator, relay, task):
    (only,) = nodes_for(net, 1)
    first = kit.create_task(net, creator, models=(MODEL,))
    waiting = kit.create_task(net, creator, models=(MODEL,))
    assert task(waiting)["state"] == QUEUED
    submit(net, first, b"\x42" * 32)  # scored: free, and it takes the waiting task at once
    assert task(waiting)["state"] == STARTED and same(task(waiting)["node"], only)
    kit.validate(net, first)
    with boa.env.prank(relay):
        net.reportResultUploaded(first)
    assert task(first)["state"] == SUCCESS and net.balanceOf(only) == task(first)["fee"]
    assert kit.node_view(net, only)["status"] == kit.BUSY  # still on the second task


def test_group_extras_run_while_every_node_holds_an_original_waiting_for_its_vote(make_net, creator):
    """Three nodes, three sampled originals at once: once scored, the nodes run the extras
    (a node held busy until the vote would leave every extra queued: no group could form)."""
    net = make_net(validation_rate_bps=10_000)
    nodes = nodes_for(net, 3)
    ids = [keccak(b"liveness" + bytes([i])) for i in range(3)]
    originals = [kit.create_task(net, creator, models=(MODEL,), task_id=i) for i in ids]
    for k in originals:
        submit(net, k, b"\x42" * 32)
    assert all(kit.node_view(net, n)["status"] == IDLE for n in nodes)
    first = kit.task_view(net, originals[0])["node"]
    extras = []
    for _ in range(2):
        exclude = [first] + [kit.task_view(net, e)["node"] for e in extras]
        extras.append(kit.create_task(net, creator, models=(MODEL,), task_id=ids[0], exclude=exclude))
        submit(net, extras[-1], b"\x42" * 32)
    with boa.env.prank(creator):
        net.validateTaskGroup(task_id_hash(ids[0]), [kit.OPENINGS[k][1] for k in [originals[0], *extras]])
    assert [kit.task_view(net, k)["state"] for k in [originals[0], *extras]] == [kit.VALIDATED] * 3


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_a_late_delivery_pauses_the_node_now_or_after_its_current_task(net, creator, task, busy):
    (only,) = nodes_for(net, 1)
    late = kit.create_task(net, creator, models=(MODEL,), timeout=20)
    submit(net, late, b"\x42" * 32)
    kit.validate(net, late)
    other = kit.create_task(net, creator, models=(MODEL,), timeout=3600) if busy else None
    boa.env.time_travel(seconds=21)
    with boa.env.prank(creator):
        net.abortTask(late, "never delivered")
    if busy:
        assert kit.node_view(net, only)["status"] == kit.BUSY and net.pauseRequested(only)
        with boa.env.prank(only):
            net.reportTaskError(other, 1)
    assert kit.node_view(net, only)["status"] == PAUSED and task(late)["state"] == ABORTED
