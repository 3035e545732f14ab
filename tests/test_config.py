"""Settings come from the config file, then GRIDTASK_* variables, then arguments."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("written", [
    # the first version (no deployment block, no confirmations)
    {"rpc_url": "http://chain:8545", "contract": "0x" + "11" * 20, "relay_url": "http://relay",
     "private_key": "0x" + "ab" * 32, "ws_url": "ws://chain:8545", "chain_id": 31337},
    # the version before issue 8, exactly as its save_config wrote a devnet's file
    {"rpc_url": "http://chain:8545", "contract": "0x" + "11" * 20, "relay_url": "http://relay",
     "private_key": "0x" + "ab" * 32, "ws_url": "ws://chain:8545", "chain_id": 0, "deploy_block": 3,
     "confirmations": 0},
], ids=["first", "before-issue-8"])
def test_a_config_file_written_by_an_earlier_version_still_loads(tmp_path: Path, written: dict[str, object]) -> None:
    """Issue 8 changed the contract, not the file: an old file loads as it was (a client then
    finds out from the contract whether it is a current one: ChainClient.network_params)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(written, indent=2) + "\n")
    config = load_config(path)
    loaded = config.model_dump() | {"private_key": config.private_key.get_secret_value()}
    assert loaded == {"deploy_block": None, "confirmations": 0, "source_registry": ""} | written
