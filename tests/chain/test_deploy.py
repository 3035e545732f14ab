"""The constructor's bounds (titanoboa), and `gridtask.chain.deploy` reporting a refused
setting with the contract's own reason (a real anvil)."""

from __future__ import annotations

import asyncio

import boa
import chain_kit as kit
import pytest
from chain_kit import ETHER, QUEUED

from gridtask.chain.anvil import Anvil
from gridtask.chain.deploy import NetworkParams, deploy
from gridtask.exceptions import ConfigError
from gridtask.keys import Identity

MAX_TIMEOUT_LIMIT = kit.contract_constant("MAX_TIMEOUT_LIMIT")
TIME_FIELD = 2**64  # the task's deadline is a 64-bit field of its packed word


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        (dict(min_stake=0), "config: minimum stake must be positive"),
        (dict(cap=0), "config: stake cap multiple must be positive"),
        (dict(tmin=0), "config: bad timeout bounds"),
        (dict(tmin=61, tmax=60), "config: bad timeout bounds"),
        (dict(tmax=MAX_TIMEOUT_LIMIT + 1), "config: max timeout too large"),
        (dict(tmax=TIME_FIELD), "config: max timeout too large"),
        (dict(min_stake=2**96, cap=1), "config: stake cap too large"),
    ],
    ids=["stake-zero", "cap-zero", "tmin-zero", "tmin-above-tmax", "tmax-over-limit",
         "tmax-wraps-deadline", "cap-too-large"],
)
def test_constructor_refuses_bad_settings(relay, kwargs, reason):
    with kit.reverts(reason):
        kit.deploy(relay, **kwargs)


def test_constructor_refuses_an_empty_relay():
    with kit.reverts("config: relay account required"):
        kit.deploy(kit.ZERO_ADDRESS)


def test_longest_timeout_allowed_cannot_wrap_the_deadline(relay, creator):
    """At the limit a task's deadline is now + timeout exactly: no wrap into the past, where
    anyone could abort it at once. The limit leaves the 64-bit field room for ~5e11 years."""
    net = kit.deploy_fast(relay, tmax=MAX_TIMEOUT_LIMIT)
    assert net.max_timeout() == MAX_TIMEOUT_LIMIT
    c = kit.create_task(net, creator, timeout=MAX_TIMEOUT_LIMIT)
    v = kit.task_view(net, c)
    assert v["state"] == QUEUED and v["deadline"] == boa.env.timestamp + MAX_TIMEOUT_LIMIT
    assert v["deadline"] + MAX_TIMEOUT_LIMIT < TIME_FIELD
    with boa.env.prank(creator), kit.reverts("tasks: deadline not passed"):
        net.abortTask(c, "wrapped?")


def test_deploy_reports_a_refused_setting_and_deploys_good_ones(tmp_path):
    async def scenario() -> None:
        with Anvil(log_path=tmp_path / "anvil.log") as chain:
            deployer, relay = Identity.generate(), Identity.generate()
            chain.fund(deployer.address, 100 * ETHER)
            bad = NetworkParams(max_timeout=MAX_TIMEOUT_LIMIT + 1)
            with pytest.raises(ConfigError, match="config: max timeout too large"):
                await deploy(chain.url, deployer, relay.address, bad)
            address = await deploy(chain.url, deployer, relay.address, NetworkParams())
            assert address.startswith("0x") and len(address) == 42

    asyncio.run(scenario())
