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
