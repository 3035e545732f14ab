"""The chain-following settings: deployment block and confirmations, from the config file or
GRIDTASK_* variables; a bad value is a ConfigError that names the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridtask.config import load_config
from gridtask.exceptions import ConfigError

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
