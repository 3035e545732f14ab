"""The private key never shows: not in a repr, a str, a dump of the settings, nor an error
about a bad key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gridtask.config import NetworkConfig, load_config, save_config
from gridtask.exceptions import ConfigError, GridtaskError
from gridtask.keys import Identity
from gridtask.node.settings import NodeSettings
from gridtask.sdk import Client, SyncClient

IDENTITY = Identity.generate()
KEY = IDENTITY.private_key.hex()
BASE = {"rpc_url": "http://127.0.0.1:9", "contract": "0x" + "11" * 20, "relay_url": "http://127.0.0.1:9"}


def shows_no_key(*things: object) -> None:
    for thing in things:
        for text in (repr(thing), str(thing)):
            assert KEY not in text.lower(), text


def test_config_and_everything_holding_it_hide_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = NetworkConfig(**BASE, private_key="0x" + KEY)
    shows_no_key(config, config.private_key, config.model_dump(), config.model_dump_json())
    shows_no_key(NodeSettings(network=config), IDENTITY)
    client = Client(config=config)
    shows_no_key(client, client.config, client.identity)
    with SyncClient(config=config) as sync:
        shows_no_key(sync._client)
    monkeypatch.setenv("GRIDTASK_PRIVATE_KEY", KEY)
    shows_no_key(load_config(tmp_path / "none.json", **BASE))


def test_the_saved_config_keeps_the_key_and_loads_it_back(tmp_path: Path) -> None:
    config = NetworkConfig(**BASE, private_key="0x" + KEY)
    path = save_config(config, tmp_path / "c.json")
    assert json.loads(path.read_text())["private_key"] == "0x" + KEY  # the one place it is written
    loaded = load_config(path)
    assert Identity.from_hex(loaded.private_key).address == IDENTITY.address
    shows_no_key(loaded)


@pytest.mark.parametrize(
    "bad",
    [
        KEY[:-2] + "zz",  # not hex
        KEY[:-2],  # 31 bytes
        "ff" * 32,  # above the curve's order
        "00" * 32,
    ],
    ids=["not-hex", "31-bytes", "above-the-order", "zero"],  # named, not by the random key: xdist's
)  # workers must collect the same test IDs
def test_an_error_about_a_bad_key_does_not_repeat_it(bad: str) -> None:
    with pytest.raises(GridtaskError) as refused:
        Client(config=NetworkConfig(**BASE, private_key="0x" + bad))
    assert isinstance(refused.value, ConfigError)
    assert "private key" in str(refused.value)
    assert bad not in str(refused.value).lower() and bad[:16] not in str(refused.value).lower()
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


def test_a_config_copied_with_a_plain_key_still_makes_a_client() -> None:
    """``model_copy(update=...)`` does not validate, so the key stays a ``str`` (bench does it)."""
    copied = NetworkConfig(**BASE).model_copy(update={"private_key": "0x" + KEY})
    client = Client(config=copied)
    assert client.identity.address == IDENTITY.address
    shows_no_key(client)
