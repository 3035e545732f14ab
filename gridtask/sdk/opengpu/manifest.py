"""A source's bundle and manifest: packing a source directory, reading its manifest back, and
the one check of a call against it (the SDK's, before any payment).

The manifest (``service.MANIFEST``) is written into the bundle by ``pack_source``: each
``@expose`` function's input and output JSON schema and timeout, read by importing the source
in a child process on the publisher's machine.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import jsonschema

from gridtask.exceptions import ValidationError
from gridtask.sdk.opengpu import service
from gridtask.sdk.opengpu.errors import InvalidTaskDataError, UnknownFunctionError

__all__ = ["check_call", "pack_source", "read_manifest"]


def pack_source(path: str | Path) -> tuple[bytes, dict[str, Any]]:
    """A source directory (or ``.py`` file) as a bundle with its manifest, and the manifest.

    The manifest is read by importing the source in a child process (``service.py manifest``):
    the developer's own code on the developer's machine, its decorators collected there."""
    from gridtask.bundles import pack_dir

    path = Path(path)
    if not path.exists():
        raise ValidationError(f"imageEnvs: no source code at {path} (a directory with main.py, or a .py file)")
    with tempfile.TemporaryDirectory(prefix="gridtask-source-") as tmp:
        root = Path(tmp) / "source"
        if path.is_dir():
            shutil.copytree(path, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
        else:
            root.mkdir()
            shutil.copy2(path, root / path.name)
        try:
            entry = service.source_entry(root)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        out = subprocess.run([sys.executable, service.__file__, "manifest", str(root), entry],
                             capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise ValidationError(f"the source at {path} did not load: {out.stderr.strip()[-800:]}")
        manifest = json.loads(out.stdout.strip().splitlines()[-1])
        if not manifest["functions"]:
            raise ValidationError(f"the source at {path} exposes no function: mark one with @expose()")
        (root / service.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        return pack_dir(root), manifest


def read_manifest(bundle: bytes) -> dict[str, Any]:
    """The manifest inside a bundle (without unpacking anything else)."""
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:*") as tar:
        for member in tar.getmembers():
            if member.isfile() and Path(member.name).name == service.MANIFEST and Path(member.name).parent.name in (
                    "", ".", "source"):
                handle = tar.extractfile(member)
                if handle is not None:
                    return dict(json.loads(handle.read()))
    raise ValidationError(f"the bundle has no {service.MANIFEST}: publish the source with publish_source")


def check_call(manifest: dict[str, Any], function: str, data: Any, source: str = "") -> None:
    """The one check of a call against a source's manifest: an exposed function, data that fits
    its input schema (``UnknownFunctionError`` / ``InvalidTaskDataError``, before paying)."""
    functions = manifest.get("functions", {})
    if function not in functions:
        raise UnknownFunctionError(f"source {source} exposes no function {function!r} (it has "
                                   f"{sorted(functions) or 'none'}): check TaskInput.function_name; nothing was sent")
    schema = functions[function]["input_schema"]
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        what = "; ".join(f"{'.'.join(map(str, e.path)) or 'data'}: {e.message}" for e in errors[:5])
        raise InvalidTaskDataError(f"data does not fit {function}'s input model: {what}; nothing was sent")
