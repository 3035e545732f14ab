"""Where the relay keeps the blobs it is given: task parameters and task results.

The relay only needs three operations, so storage is a small ``BlobStore`` protocol.
``FileStore`` keeps blobs on local disk (the default); an S3-compatible store
implements the same protocol later, and the app does not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["BlobStore", "FileStore", "validate_key"]

_KEY_RE = re.compile(r"[0-9A-Za-z_.-]{1,200}")
_TEMP_PREFIX = ".tmp-"


def validate_key(key: str) -> str:
    """Refuse keys that could leave the store's folder or collide with its temp files."""
    if not _KEY_RE.fullmatch(key) or key.startswith("."):
        raise ValueError(f"invalid blob key {key!r}: use [0-9A-Za-z_.-], not starting with '.'")
    return key


@runtime_checkable
class BlobStore(Protocol):
    """Bytes by key. A ``put`` is all-or-nothing: a reader never sees half a blob."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; no error if it is absent."""
        ...

    async def keys(self, suffix: str = "") -> list[str]:
        """Every stored key ending in ``suffix``."""
        ...


class FileStore:
    """Blobs as files in one folder, written atomically and durably.

    A blob is written to a temp file in the same folder, fsynced, then renamed over its
    name (``os.replace`` is atomic on POSIX and Windows), and the folder is fsynced so the
    rename itself survives a crash. A relay that restarts finds every acknowledged
    upload whole, and never a half-written one.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Temp files of writes cut short by a crash or a forced exit: never a blob, drop them.
        for stale in self.root.glob(_TEMP_PREFIX + "*"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        await asyncio.to_thread(self._write_atomic, path, bytes(data))

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        return await asyncio.to_thread(self._read, path)

    async def exists(self, key: str) -> bool:
        path = self._path(key)
        return await asyncio.to_thread(path.is_file)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(self._delete, path)

    async def keys(self, suffix: str = "") -> list[str]:
        names = await asyncio.to_thread(os.listdir, self.root)
        return sorted(n for n in names if n.endswith(suffix) and not n.startswith("."))

    def _delete(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            self._fsync_dir()

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _write_atomic(self, path: Path, data: bytes) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        # Directories cannot be opened for fsync on Windows; the rename is still atomic there.
        if os.name != "posix":
            return
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"
