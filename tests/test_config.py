"""Settings come from the config file, then GRIDTASK_* variables, then arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridtask.config import NetworkConfig, load_config, save_config
from gridtask.exceptions import ConfigError

BASE = NetworkConfig(rpc_url="http://chain:8545", contract="0x" + "11" * 20, relay_url="http://relay")


def test_file_then_environment_then_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_config(BASE, tmp_path / "c.json")
    assert load_config(path).rpc_url == "http://chain:8545"
    monkeypatch.setenv("GRIDTASK_RPC_URL", "http://other:1")
    assert load_config(path).rpc_url == "http://other:1"
    assert load_config(path, rpc_url="http://arg:2").rpc_url == "http://arg:2"
    assert load_config(path).relay_url == "http://relay"


def test_missing_network_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["RPC_URL", "CONTRACT", "RELAY_URL"]:
        monkeypatch.delenv(f"GRIDTASK_{name}", raising=False)
    with pytest.raises(ConfigError, match="gridtask devnet"):
        load_config(tmp_path / "none.json")


def test_malformed_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)


def test_saved_config_is_private(tmp_path: Path) -> None:
    path = save_config(BASE, tmp_path / "c.json")
    assert path.stat().st_mode & 0o077 == 0
