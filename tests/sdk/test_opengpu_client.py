"""The OpenGPU client's handles are known by their address (as ogpu users pass them around)."""

from __future__ import annotations

import gridtask.sdk.opengpu as ogpu

ADDRESS = "0x" + "ab" * 20


def test_a_source_is_its_address() -> None:
    source = ogpu.client.Source(ADDRESS)
    same = ogpu.client.Source(ADDRESS.upper().replace("0X", "0x"))
    assert source == same and hash(source) == hash(same) and len({source, same}) == 1
    assert str(source) == source.address and source.address.lower() == ADDRESS
    assert repr(source) == f"Source({source.address!r})"
    assert source != ogpu.client.Source("0x" + "cd" * 20)
    assert source != source.address  # a handle, not a string


def test_a_registry_record_is_read_by_field_name() -> None:
    """The SDK and the node read ``sources(address)`` through one table of struct Source's names."""
    from gridtask.sdk.opengpu.registry import is_registered, source_record

    raw = ("0x" + "00" * 19 + "01", b"\x02" * 32, "n", "d", "", 1, 7, 0, 3600, 0, 1, 99)
    record = source_record(raw)
    assert (record["minPayment"], record["status"], record["maxExpiryDuration"]) == (7, 1, 3600)
    assert is_registered(record) and not is_registered(source_record(("0x" + "00" * 20, *raw[1:])))


def test_chain_config_is_where_ogpu_users_import_it_from() -> None:
    """ogpu's quick starts write ``from ogpu import ChainConfig, ChainId`` as often as
    ``ogpu.client.ChainConfig``: both name the same class here."""
    from gridtask.sdk.opengpu import ChainConfig, ChainId

    assert ChainConfig is ogpu.client.ChainConfig and ChainId is ogpu.client.ChainId
    ChainConfig.set_chain(ChainId.OGPU_TESTNET)
    try:
        assert ogpu.client.ChainConfig.get_chain() is ChainId.OGPU_TESTNET
    finally:
        ChainConfig.set_chain(ChainId.DEVNET)
