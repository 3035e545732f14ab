"""Fixtures for the TaskNetwork contract tests (titanoboa, in-process EVM).

Helpers live in chain_kit.py beside this file; the fixtures below hand them out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import boa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chain_kit as kit  # noqa: E402


@pytest.fixture(scope="session")
def deployer():
    """The compiled contract (compiled once per session)."""
    return kit.deployer()


@pytest.fixture
def relay():
    return kit.funded_address("relay")


@pytest.fixture
def net(deployer, relay):
    """The contract: min stake 1 ether, cap multiple 10, timeouts 5..3600 s. (Deployed without
    boa's deployment source map, and with a repr that does not dump storage: both cost time.)"""
    return kit.deploy_fast(relay)


@pytest.fixture
def creator():
    return kit.funded_address("creator")


@pytest.fixture
def other_creator():
    return kit.funded_address("other-creator")


@pytest.fixture
def stranger():
    return kit.funded_address("stranger")


@pytest.fixture
def b32():
    """bytes32 name helper: b32("a100") -> b"a100" + 28 zero bytes."""
    return kit.b32


@pytest.fixture
def make_node(net):
    """make_node(gpu="rtx4090", vram=24576, models=("llama3-8b",), stake=1 ether) -> NodeSpec, joined."""

    def _make(gpu="rtx4090", vram=24576, models=("llama3-8b",), stake=kit.ETHER, join=True):
        spec = kit.NodeSpec(kit.funded_address(f"node-{gpu}"), gpu, vram, list(models), stake)
        if join:
            kit.join(net, spec)
        return spec

    return _make


@pytest.fixture
def make_task(net, creator):
    """make_task(models=..., fee=..., min_vram=0, gpu=None, size=1, timeout=60, creator=...) -> commitment.
    A fresh nonce and commitment every call."""

    def _make(creator=creator, **kw):
        return kit.create_task(net, creator, **kw)

    return _make


@pytest.fixture
def population(net):
    """population(n, seed=0) -> [NodeSpec]: a mixed, seeded population joined to `net`."""

    def _build(n, seed=0, **kw):
        return kit.build_population(net, n, seed, **kw)

    return _build


@pytest.fixture
def task(net):
    """task(commitment) -> dict view of getTask."""
    return lambda c: kit.task_view(net, c)


@pytest.fixture
def node(net):
    """node(addr) -> dict view of getNode."""
    return lambda a: kit.node_view(net, a)


def run_to_success(net, relay, commitment):
    """Drive a STARTED task to SUCCESS with the right parties; returns its node."""
    t = kit.task_view(net, commitment)
    with boa.env.prank(t["node"]):
        net.submitScore(commitment, b"\x01" * 32, b"\x02" * 32)
    kit.validate(net, commitment)
    with boa.env.prank(relay):
        net.reportResultUploaded(commitment)
    return t["node"]


@pytest.fixture
def complete(net, relay):
    """complete(commitment): submit score, validate, report delivery; returns the node."""
    return lambda c: run_to_success(net, relay, c)
