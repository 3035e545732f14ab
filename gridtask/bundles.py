"""Content-addressed bundles: a directory as one deterministic tar.gz, named by its SHA-256.

A Golem payload's image (``vm.repo(image_hash=...)``) and an OpenGPU source's code travel
as bundles: packed once (``gridtask bundle pack DIR``), stored on the relay under their
hash (``PUT /v1/bundles/{sha256}``), fetched by nodes, checked against the hash and
unpacked read-only into a cache (``BundleCache``). The same tree always packs to the same
bytes (sorted entries, no times, owners or umask in them), so its hash names its content.

Unpacking trusts nothing in the archive: absolute paths, ``..``, links that leave the
destination, devices and FIFOs are refused (``BundleError`` naming the member), and so are
archives over ``MAX_BUNDLE_BYTES`` packed or ``MAX_UNPACKED_BYTES`` unpacked.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Protocol

from gridtask.exceptions import BundleError, BundleMismatch

__all__ = [
    "MAX_BUNDLE_BYTES",
    "MAX_UNPACKED_BYTES",
    "BundleCache",
    "BundleSource",
    "bundle_hash",
    "check_hash",
    "check_size",
    "make_writable",
    "verify",
    "extract_members",
    "member_problem",
    "pack_dir",
    "unpack",
]

MiB = 1 << 20
MAX_BUNDLE_BYTES = 16 * MiB  # packed: what the relay stores and a node downloads
MAX_UNPACKED_BYTES = 256 * MiB  # unpacked: what a node writes to its disk for one bundle
_HASH_RE = re.compile(r"[0-9a-f]{64}")


def check_hash(text: object) -> str:
    """``text`` as a bundle hash (64 lower-case hex digits), or ``BundleError``: the one rule
    for a bundle's name (relay routes, script images, source bundles)."""
    if not isinstance(text, str) or not _HASH_RE.fullmatch(text):
        raise BundleError(f"bundle hash {str(text)[:80]!r}: expected 64 lower-case hex digits (a SHA-256)")
    return text


def check_size(data: bytes, what: str) -> bytes:
    """``data`` if it is at most ``MAX_BUNDLE_BYTES`` (what the relay stores), else ``BundleError``."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{what}: {len(data)} bytes, over the {MAX_BUNDLE_BYTES}-byte limit of a bundle")
    return data


def bundle_hash(data: bytes) -> str:
    """A bundle's name: the SHA-256 of its packed bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


def verify(data: bytes, bundle: str) -> bytes:
    """``data`` if it hashes to ``bundle``; ``BundleMismatch`` (the deliverer's fault) if not."""
    actual = bundle_hash(data)
    if actual != bundle:
        raise BundleMismatch(f"bundle {bundle}: the bytes received hash to {actual}; refused")
    return data


# ---------------------------------------------------------------------------- packing


def pack_dir(path: Path | str) -> bytes:
    """``path``'s tree as a deterministic tar.gz: entries sorted, times zero, owners root,
    modes 0755 (directories, executables) or 0644. Links must stay inside the tree; devices,
    FIFOs and sockets are refused."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"cannot pack {root}: not a directory")
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for entry in _walk(root):
            info, content = _tar_entry(root, entry)
            try:
                tar.addfile(info, content)
            finally:
                if content is not None:
                    content.close()
    return check_size(buffer.getvalue(), f"{root} packed")


def _walk(root: Path) -> Iterable[Path]:
    """Every path under ``root``, sorted by its parts (stable across file systems)."""
    found: list[Path] = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.append(Path(directory) / name)
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _tar_entry(root: Path, path: Path) -> tuple[tarfile.TarInfo, io.BufferedReader | None]:
    name = path.relative_to(root).as_posix()
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        target = os.readlink(path)
        if _escapes(PurePosixPath(name).parent, target):
            raise BundleError(f"cannot pack {path}: the link points outside the bundle ({target})")
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        return info, None
    if stat.S_ISDIR(mode):
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        return info, None
    if not stat.S_ISREG(mode):
        raise BundleError(f"cannot pack {path}: only files, directories and links go in a bundle")
    info.mode = 0o755 if mode & 0o111 else 0o644
    info.size = path.stat().st_size
    return info, path.open("rb")


def _escapes(parent: PurePosixPath, target: str) -> bool:
    """Whether a link at ``parent/x`` pointing to ``target`` leaves the tree's root."""
    if target.startswith("/"):
        return True
    depth = len(parent.parts)
    for part in PurePosixPath(target).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return True
    return False


# ---------------------------------------------------------------------------- unpacking


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be unpacked (None: it may)."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        return "an absolute path or '..'"
    if member.issym():
        return "a link that leaves the bundle" if _escapes(name.parent, member.linkname) else None
    if member.islnk():
        return "a hard link" if PurePosixPath(member.linkname).is_absolute() or ".." in PurePosixPath(
            member.linkname).parts else None
    if not (member.isfile() or member.isdir()):
        return "a device, FIFO or other special file"
    return None


def extract_members(tar: tarfile.TarFile, dest: Path, *, refuse: bool, max_bytes: int) -> None:
    """Write ``tar``'s members under ``dest`` (created), checked one by one: with ``refuse``
    a bad member raises ``BundleError``, without it the member is left out. Files get their
    owner's bits only from the archive (no setuid, no group or other write)."""
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    for member in tar:
        problem = member_problem(member)
        if problem is not None:
            if refuse:
                raise BundleError(f"bundle member {member.name!r} is {problem}: refused")
            continue
        target = dest / member.name
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if member.issym():
            target.unlink(missing_ok=True)
            os.symlink(member.linkname, target)
            continue
        if member.islnk():
            source = dest / member.linkname
            if not source.is_file():
                if refuse:
                    raise BundleError(f"bundle member {member.name!r} links to a missing file")
                continue
            target.unlink(missing_ok=True)
            shutil.copyfile(source, target)
            continue
        total += member.size
        if total > max_bytes:
            raise BundleError(f"bundle unpacks to more than {max_bytes} bytes")
        extracted = tar.extractfile(member)
        if extracted is None:
            continue
        if target.is_symlink():
            target.unlink()
        with extracted, target.open("wb") as out:
            shutil.copyfileobj(extracted, out)
        target.chmod(0o755 if member.mode & 0o111 else 0o644)


def unpack(data: bytes, dest: Path | str, expected_hash: str) -> Path:
    """Check ``data`` against ``expected_hash`` and unpack it into ``dest`` (which must not
    exist yet, so nothing of an older tree is mixed in); returns ``dest``."""
    check_size(data, f"bundle {check_hash(expected_hash)}")
    verify(data, expected_hash)
    target = Path(dest)
    if target.exists():
        raise BundleError(f"cannot unpack into {target}: it already exists")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            extract_members(tar, target, refuse=True, max_bytes=MAX_UNPACKED_BYTES)
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise BundleError(f"bundle {expected_hash} is not a readable tar.gz: {exc}") from None
    except BundleError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


# ---------------------------------------------------------------------------- the node's cache


class BundleSource(Protocol):
    """Where a cache gets bundles from: ``RelayClient`` (checks the hash itself too)."""

    async def get_bundle(self, bundle: str) -> bytes:
        ...


class BundleCache:
    """Bundles a node has fetched, unpacked read-only under ``root/<hash>``.

    ``await cache.path(hash)`` downloads a bundle once (concurrent callers share the
    download), checks it, unpacks it beside its final place and renames it there, so a
    half-written tree is never seen; later calls return the same directory at once.
    Several caches (a node's executors, or processes) may share ``root``: when two install
    one bundle at once, the second rename finds the first's tree, which it keeps (a tree
    named by its verified hash holds the same bytes).
    """

    def __init__(self, root: Path | str, source: BundleSource) -> None:
        self.root = Path(root)
        self.source = source
        self._locks: dict[str, asyncio.Lock] = {}

    async def path(self, bundle: str) -> Path:
        check_hash(bundle)
        final = self.root / bundle
        if final.is_dir():
            return final
        lock = self._locks.setdefault(bundle, asyncio.Lock())
        async with lock:
            if final.is_dir():
                return final
            data = await self.source.get_bundle(bundle)
            await asyncio.to_thread(self._install, data, bundle, final)
        return final

    def _install(self, data: bytes, bundle: str, final: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{bundle[:12]}-", dir=self.root))
        try:
            unpack(data, staging / "tree", bundle)
            _read_only(staging / "tree")
            try:
                os.rename(staging / "tree", final)
            except OSError:
                if not final.is_dir():
                    raise
                # Another cache on this directory installed it first: the same verified bytes.
        finally:
            _discard(staging)


def _discard(root: Path) -> None:
    """Remove a staging tree, read-only parts too (as a non-root user, rmtree cannot empty a 0555 folder)."""
    if root.is_dir():
        make_writable(root)
    shutil.rmtree(root, ignore_errors=True)


def make_writable(root: Path) -> None:
    """Owner-writable (and searchable) throughout: what ``_read_only`` (or a payload) made
    read-only, for a copy to be worked in or a tree to be removed."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(mode | stat.S_IWUSR | stat.S_IRUSR | (stat.S_IXUSR if stat.S_ISDIR(mode) else 0))
    root.chmod(root.stat().st_mode | stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)


def _read_only(root: Path) -> None:
    """Files 0444/0555 and directories 0555: a payload bound to it cannot change it, nor can
    a slip of the node's own code."""
    for directory, dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                path.chmod(0o555 if path.stat().st_mode & 0o111 else 0o444)
        for name in dirs:
            path = Path(directory) / name
            if not path.is_symlink():
                path.chmod(0o555)
    root.chmod(0o555)
