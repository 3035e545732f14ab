"""FileStore: atomic, durable blobs under validated keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridtask.relay.storage import BlobStore, FileStore


async def test_put_then_get_returns_the_bytes(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.put("a.params", b"\x00\x01data")
    assert await store.get("a.params") == b"\x00\x01data"
    assert await store.exists("a.params")


async def test_missing_key_is_none_and_does_not_exist(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    assert await store.get("nothing") is None
    assert not await store.exists("nothing")


async def test_blob_survives_a_new_store_on_the_same_folder(tmp_path: Path) -> None:
    await FileStore(tmp_path).put("kept", b"bytes")
    assert await FileStore(tmp_path).get("kept") == b"bytes"


async def test_put_leaves_no_temp_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.put("k", b"1")
    await store.put("k", b"2")
    assert [p.name for p in tmp_path.iterdir()] == ["k"]
    assert await store.get("k") == b"2"


async def test_failed_write_keeps_the_old_blob_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path)
    await store.put("k", b"old")

    def crash(*args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr("gridtask.relay.storage.os.replace", crash)
    with pytest.raises(OSError):
        await store.put("k", b"new")
    assert await store.get("k") == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


@pytest.mark.parametrize(
    "key", ["../escape", "a/b", "/etc/passwd", "..", ".hidden", "", "a\x00b", "ü", "a b"]
)
async def test_unsafe_key_is_refused(tmp_path: Path, key: str) -> None:
    store = FileStore(tmp_path / "store")
    with pytest.raises(ValueError, match="invalid blob key"):
        await store.put(key, b"x")
    with pytest.raises(ValueError):
        await store.get(key)
    assert not (tmp_path / "escape").exists()


def test_file_store_is_a_blob_store(tmp_path: Path) -> None:
    assert isinstance(FileStore(tmp_path), BlobStore)
