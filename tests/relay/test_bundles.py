"""Content-addressed bundles: deterministic packing, checked unpacking, the relay's routes
(through the real RelayClient and raw calls on the real app) and the node's cache."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from gridtask.bundles import (
    MAX_BUNDLE_BYTES,
    BundleCache,
    bundle_hash,
    pack_dir,
    unpack,
)
from gridtask.exceptions import BundleError, BundleMismatch, RelayError, ValidationError
from gridtask.keys import Identity
from gridtask.relay.app import create_app
from gridtask.relay.auth import sign_request
from gridtask.relay.bundles import bundle_key
from gridtask.relay.client import RelayClient
from gridtask.relay.storage import FileStore

from .chains import FakeChain

BASE_URL = "http://relay"


def _tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "bin" / "run.sh").chmod(0o755)
    (root / "data.txt").write_text("words\n")
    (root / "link").symlink_to("data.txt")
    return root


def _targz(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


# ---------------------------------------------------------------------------- packing


def test_same_tree_packs_to_the_same_hash(tmp_path: Path) -> None:
    first, second = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    os.utime(second / "data.txt", (1, 1))  # times, umask and owners are not part of it
    (second / "data.txt").chmod(0o600)
    assert pack_dir(first) == pack_dir(second)
    (second / "data.txt").write_text("other words\n")
    assert bundle_hash(pack_dir(first)) != bundle_hash(pack_dir(second))


def test_unpack_gives_back_the_tree(tmp_path: Path) -> None:
    data = pack_dir(_tree(tmp_path / "src"))
    out = unpack(data, tmp_path / "out", bundle_hash(data))
    assert (out / "data.txt").read_text() == "words\n"
    assert os.access(out / "bin" / "run.sh", os.X_OK)
    assert os.readlink(out / "link") == "data.txt"


def test_pack_refuses_a_link_out_of_the_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    (root / "escape").symlink_to("../../etc/passwd")
    with pytest.raises(BundleError, match="points outside the bundle"):
        pack_dir(root)


def test_unpack_refuses_wrong_hash(tmp_path: Path) -> None:
    """Bytes that are not the bundle named: the deliverer's fault (a RelayError), not a BundleError."""
    data = pack_dir(_tree(tmp_path / "src"))
    with pytest.raises(BundleMismatch, match="hash to"):
        unpack(data, tmp_path / "out", "0" * 64)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("member, why", [
    (_member("/etc/cron.d/evil"), "absolute path"),
    (_member("../outside"), "absolute path or '..'"),
    (_member("dir/../../outside"), "'..'"),
    (_member("up", tarfile.SYMTYPE, "../../etc/passwd"), "link that leaves"),
    (_member("abs", tarfile.SYMTYPE, "/etc/passwd"), "link that leaves"),
    (_member("dev", tarfile.CHRTYPE), "device"),
    (_member("fifo", tarfile.FIFOTYPE), "device, FIFO"),
], ids=["absolute", "dotdot", "nested-dotdot", "symlink-up", "symlink-absolute", "device", "fifo"])
def test_unpack_refuses_what_could_escape(tmp_path: Path, member: tarfile.TarInfo, why: str) -> None:
    data = _targz((_member("ok.txt"), b"fine"), (member, b"x"))
    with pytest.raises(BundleError, match=why):
        unpack(data, tmp_path / "out", bundle_hash(data))
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "outside").exists()


def test_unpack_refuses_garbage_and_bad_names(tmp_path: Path) -> None:
    junk = b"not a tarball"
    with pytest.raises(BundleError, match="not a readable tar.gz"):
        unpack(junk, tmp_path / "out", bundle_hash(junk))
    with pytest.raises(BundleError, match="64 lower-case hex"):
        unpack(junk, tmp_path / "out", "ABC")
    assert issubclass(BundleError, ValidationError)


# ---------------------------------------------------------------------------- the relay


@pytest.fixture
def app(tmp_path: Path) -> Starlette:
    return create_app(chain=FakeChain(), store=FileStore(tmp_path / "relay"))


def client_for(app: Starlette, identity: Identity | None = None) -> RelayClient:
    return RelayClient(BASE_URL, identity or Identity.generate(), transport=httpx.ASGITransport(app=app))


def raw(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


async def test_put_then_get_round_trip(app: Starlette, tmp_path: Path) -> None:
    data = pack_dir(_tree(tmp_path / "src"))
    async with client_for(app) as uploader, client_for(app) as reader:
        name = await uploader.put_bundle(data)
        assert name == bundle_hash(data)
        assert await reader.get_bundle(name) == data
        assert await uploader.put_bundle(data) == name  # again: fine, not stored twice
    async with raw(app) as http:  # public: no signature needed to read
        response = await http.get(f"/v1/bundles/{name}")
    assert response.status_code == 200 and response.content == data


async def test_put_that_does_not_match_its_name_is_refused(app: Starlette, tmp_path: Path) -> None:
    identity = Identity.generate()
    url = f"/v1/bundles/{'1' * 64}"
    async with raw(app) as http:
        response = await http.put(url, content=b"payload", headers=sign_request(identity, "PUT", url, b"payload"))
    assert response.status_code == 400
    assert response.json()["error"] == "bundle does not match its name: the body's SHA-256 differs"
    assert not (tmp_path / "relay" / bundle_key("1" * 64)).exists()


async def test_unsigned_put_is_refused(app: Starlette) -> None:
    data = b"bundle bytes"
    async with raw(app) as http:
        response = await http.put(f"/v1/bundles/{bundle_hash(data)}", content=data)
    assert response.status_code == 401
    assert "missing signature headers" in response.json()["error"]


async def test_bundle_over_the_cap_is_refused_unread(app: Starlette) -> None:
    data = b"\0" * (MAX_BUNDLE_BYTES + 1)
    identity = Identity.generate()
    url = f"/v1/bundles/{bundle_hash(data)}"
    async with raw(app) as http:
        response = await http.put(url, content=data, headers=sign_request(identity, "PUT", url, data))
    assert response.status_code == 413
    assert response.json()["error"] == f"bundle too large: at most {MAX_BUNDLE_BYTES} bytes"
    async with client_for(app) as client:
        with pytest.raises(BundleError, match="over the 16777216-byte limit"):
            await client.put_bundle(data)


async def test_unknown_bundle_is_404_and_malformed_name_400(app: Starlette) -> None:
    async with client_for(app) as client:
        with pytest.raises(RelayError) as caught:
            await client.get_bundle("2" * 64)
        assert (caught.value.status, caught.value.detail) == (404, "unknown bundle")
        with pytest.raises(BundleError, match="64 lower-case hex"):
            await client.get_bundle("../etc")
    async with raw(app) as http:
        response = await http.get("/v1/bundles/XYZ")
    assert response.status_code == 400


async def test_client_refuses_bytes_that_are_not_the_bundle(app: Starlette, tmp_path: Path) -> None:
    """A relay (or disk) that hands back other bytes is caught by the reader."""
    data = pack_dir(_tree(tmp_path / "src"))
    async with client_for(app) as client:
        name = await client.put_bundle(data)
        (tmp_path / "relay" / bundle_key(name)).write_bytes(b"tampered")
        with pytest.raises(BundleMismatch, match="hash to"):
            await client.get_bundle(name)


# ---------------------------------------------------------------------------- the node's cache


class _Counting:
    """The real client, counting downloads."""

    def __init__(self, client: RelayClient) -> None:
        self.client = client
        self.downloads = 0

    async def get_bundle(self, bundle: str) -> bytes:
        self.downloads += 1
        await asyncio.sleep(0.05)  # let concurrent callers pile up
        return await self.client.get_bundle(bundle)


async def test_cache_downloads_once_and_unpacks_read_only(app: Starlette, tmp_path: Path) -> None:
    data = pack_dir(_tree(tmp_path / "src"))
    async with client_for(app) as client:
        name = await client.put_bundle(data)
        source = _Counting(client)
        cache = BundleCache(tmp_path / "cache", source)
        paths = await asyncio.gather(*(cache.path(name) for _ in range(5)))
        again = await cache.path(name)
    assert source.downloads == 1
    assert set(paths) == {again} == {tmp_path / "cache" / name}
    assert (again / "data.txt").read_text() == "words\n"
    assert not stat.S_IMODE((again / "data.txt").stat().st_mode) & 0o222
    assert not stat.S_IMODE(again.stat().st_mode) & 0o222
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [name]  # no staging left


async def test_cache_refuses_a_bad_name_and_leaves_nothing(app: Starlette, tmp_path: Path) -> None:
    async with client_for(app) as client:
        cache = BundleCache(tmp_path / "cache", client)
        with pytest.raises(BundleError):
            await cache.path("nope")
        with pytest.raises(RelayError):
            await cache.path("3" * 64)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# ---------------------------------------------------------------------------- the command line


def test_cli_pack_prints_the_hash(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gridtask.cli import app as cli

    tree = _tree(tmp_path / "src")
    result = CliRunner().invoke(cli, ["bundle", "pack", str(tree), "--json", "-o", str(tmp_path / "b.tar.gz")])
    assert result.exit_code == 0, result.output
    data = pack_dir(tree)
    assert f'"hash": "{bundle_hash(data)}"' in result.stdout
    assert (tmp_path / "b.tar.gz").read_bytes() == data
    (tree / "escape").symlink_to("/etc/passwd")
    refused = CliRunner().invoke(cli, ["bundle", "pack", str(tree)])
    assert refused.exit_code == 2 and "points outside the bundle" in refused.output


async def test_cli_publish_uploads_to_the_relay(app: Starlette, tmp_path: Path) -> None:
    """The real command, in its own process, against the relay over HTTP."""
    import socket
    import sys

    from gridtask.relay.server import RelayServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = RelayServer(app, port=port, log_level="warning")
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    tree = _tree(tmp_path / "src")
    env = {**os.environ, "GRIDTASK_CONFIG": str(tmp_path / "none.json"), "GRIDTASK_RPC_URL": "http://127.0.0.1:1",
           "GRIDTASK_CONTRACT": "0x" + "00" * 20, "GRIDTASK_RELAY_URL": f"http://127.0.0.1:{port}",
           "GRIDTASK_PRIVATE_KEY": "0x" + Identity.generate().private_key.hex()}
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gridtask", "bundle", "publish", str(tree), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
        async with client_for(app) as client:
            stored = await client.get_bundle(stdout.decode().strip())
    finally:
        server.shutdown()
        await asyncio.wait_for(serving, 10)
    assert proc.returncode == 0, stderr
    assert stored == pack_dir(tree)
    assert f'vm.repo(image_hash="{bundle_hash(stored)}")' in stderr.decode()


class _Gate:
    """The real client, holding every download until ``callers`` of them are in flight: two
    caches that both found the bundle missing install it at the same moment."""

    def __init__(self, client: RelayClient, callers: int) -> None:
        self.client = client
        self.callers = callers
        self.waiting = 0
        self.all_in = asyncio.Event()

    async def get_bundle(self, bundle: str) -> bytes:
        self.waiting += 1
        if self.waiting == self.callers:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), 30)
        return await self.client.get_bundle(bundle)


async def test_two_caches_on_one_directory_install_the_same_bundle_at_once(app: Starlette, tmp_path: Path) -> None:
    """A node's script and source executors (or two processes) on one cache directory: the one
    that renames second finds the tree in place (same hash, same bytes) and uses it."""
    data = pack_dir(_tree(tmp_path / "src"))
    async with client_for(app) as client:
        name = await client.put_bundle(data)
        gate = _Gate(client, callers=2)
        first, second = BundleCache(tmp_path / "cache", gate), BundleCache(tmp_path / "cache", gate)
        paths = await asyncio.gather(first.path(name), second.path(name))
    assert paths == [tmp_path / "cache" / name] * 2
    assert (paths[0] / "data.txt").read_text() == "words\n"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [name]  # the loser's staging is gone
