"""The chain-following settings: deployment block and confirmations, from the config file or
GRIDTASK_* variables; a bad value is a ConfigError that names the variable. And the contract's
deploy settings (NetworkParams): their defaults, and the devnet's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gridtask.chain.models import NetworkParams
from gridtask.config import load_config
from gridtask.devnet import DEVNET_PARAMS
from gridtask.exceptions import ConfigError
from gridtask.scoring import SIMILARITY_BITS
from gridtask.types import TaskType

NETWORK = {"rpc_url": "http://chain:8545", "contract": "0x" + "11" * 20, "relay_url": "http://relay"}


def test_defaults_search_from_a_found_deploy_block_and_trust_the_head(tmp_path: Path) -> None:
    config = load_config(tmp_path / "none.json", **NETWORK)
    assert config.deploy_block is None and config.confirmations == 0


def test_both_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDTASK_DEPLOY_BLOCK", "1000001")
    monkeypatch.setenv("GRIDTASK_CONFIRMATIONS", "12")
    config = load_config(tmp_path / "none.json", **NETWORK)
    assert (config.deploy_block, config.confirmations) == (1_000_001, 12)


@pytest.mark.parametrize(("name", "value"), [("CONFIRMATIONS", "-98765"), ("DEPLOY_BLOCK", "soonish")])
def test_a_bad_value_names_its_variable_and_is_not_called_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"GRIDTASK_{name}", value)
    with pytest.raises(ConfigError, match=f"GRIDTASK_{name}") as err:
        load_config(tmp_path / "none.json", **NETWORK)
    assert "missing" not in str(err.value) and value not in str(err.value)


def test_deploy_settings_default_to_the_spec_and_the_devnet_only_shortens_windows() -> None:
    """SPEC8 §7: 10% sampled, 10 min to validate, 1 h to dispute, 7 days to unstake, half the stake
    slashed, 1 gwei per unit of work, the scoring module's measured similarity thresholds."""
    params = NetworkParams()
    assert (params.validation_rate_bps, params.validation_window, params.challenge_window, params.unstake_delay,
            params.slash_bps, params.min_fee_per_unit) == (1000, 600, 3600, 7 * 24 * 3600, 5000, 10**9)
    assert params.similarity_bits == tuple(SIMILARITY_BITS[t] for t in TaskType)
    assert params.similarity_bits_for(TaskType.EMBED) == SIMILARITY_BITS[TaskType.EMBED] > 0
    assert params.similarity_bits_for(15) == 0  # a type beyond the table compares exactly, as on chain
    assert dataclasses.replace(params, validation_window=60, challenge_window=300, unstake_delay=300) == DEVNET_PARAMS


def test_a_similarity_table_longer_than_the_contracts_is_refused_before_deploying() -> None:
    with pytest.raises(ConfigError, match=r"similarity_bits: at most 16 task types \(got 17\)"):
        NetworkParams(similarity_bits=(0,) * 17)
