"""A script task's format (``TaskType.SCRIPT``, model ``vm``), written once: the Golem SDK
builds it and checks it before paying, the node's script executor checks it again and runs it.

Why one module: the SDK (``gridtask.sdk.golem``) and the node (``node/executors/script.py``)
must agree on every field and limit; a rule written twice drifts, and then a fragment the SDK
let through is refused by a node after its fee was escrowed.

A script's inputs::

    {"image": "<sha256 of the bundle, 64 hex>",
     "commands": [{"op": "run", "cmd": "/bin/sh", "args": ["-c", "echo hi"], "env": {"K": "V"}},
                  {"op": "upload", "path": "in/words.json", "data": "<base64>"},
                  {"op": "download", "path": "out/result.json", "limit": 65536}],
     "timeout": 20, "memory_mib": 512, "disk_mib": 64, "cpu_threads": 1}

The VM's file system is one private, writable work directory, ``/work`` inside the sandbox
(the commands' working directory): the bundle's files are laid out there first, then every
upload lands there, and downloads read from there. A path is relative to ``/work`` or an
absolute path inside it. Commands run in order; the first ``run`` that exits non-zero ends
the script (Golem's rule: a failed command fails its batch) and the result says which.

A script's result (JSON, deterministic for the same script: no timestamps, no host names)::

    {"results": [{"op": "run", "exit_code": 0, "stdout": "...", "stderr": ""},
                 {"op": "upload"}, {"op": "download", "data": "<base64>"}],
     "failed": null | {"index": 2, "message": "exit code 1"}}
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from gridtask.bundles import check_hash
from gridtask.exceptions import BundleError, ValidationError

VM_WORKDIR = "/work"
"""Where the script's files are inside the sandbox, and the commands' working directory."""
MAX_COMMANDS = 64
MAX_ARGS = 256
MAX_DOWNLOAD_BYTES = 4 << 20
"""The most bytes one download may bring back (a download's own ``limit`` may be lower)."""
DEFAULT_DOWNLOAD_LIMIT = 1 << 20
MAX_DOWNLOADS_BYTES = 8 << 20
"""The most bytes all of a script's downloads may bring back together (the relay stores up to 16 MiB)."""
MAX_SCRIPT_TIMEOUT_S = 3600
MAX_MEMORY_MIB = 4096
"""The most memory a node's sandbox gives one script (``vm.repo(min_mem_gib=...)`` up to 4 GiB)."""
MAX_DISK_MIB = 4096
"""The most disk a node's sandbox gives one script's work directory (``min_storage_gib`` up to 4 GiB)."""
MAX_CPU_THREADS = 16
"""The most CPU threads a script may ask for (``min_cpu_threads``); a node with fewer refuses it."""
DEFAULT_MEMORY_MIB = 512
DEFAULT_DISK_MIB = 256
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Run:
    cmd: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    op: Literal["run"] = "run"


@dataclass(frozen=True)
class Upload:
    path: str  # relative to the work directory, normalized
    data: bytes
    op: Literal["upload"] = "upload"


@dataclass(frozen=True)
class Download:
    path: str  # relative to the work directory, normalized
    limit: int = DEFAULT_DOWNLOAD_LIMIT
    op: Literal["download"] = "download"


Command = Run | Upload | Download


@dataclass(frozen=True)
class ScriptSpec:
    """A script once checked: what the node runs."""

    image: str
    commands: tuple[Command, ...]
    timeout: int
    memory_mib: int = DEFAULT_MEMORY_MIB
    disk_mib: int = DEFAULT_DISK_MIB
    cpu_threads: int = 1

    def to_inputs(self) -> dict[str, Any]:
        """The task's inputs (what ``check_script`` reads back)."""
        commands: list[dict[str, Any]] = []
        for c in self.commands:
            if isinstance(c, Run):
                commands.append({"op": "run", "cmd": c.cmd, "args": list(c.args), "env": dict(c.env)})
            elif isinstance(c, Upload):
                commands.append({"op": "upload", "path": c.path, "data": base64.b64encode(c.data).decode()})
            else:
                commands.append({"op": "download", "path": c.path, "limit": c.limit})
        return {"image": self.image, "commands": commands, "timeout": self.timeout,
                "memory_mib": self.memory_mib, "disk_mib": self.disk_mib, "cpu_threads": self.cpu_threads}


def check_image(image: object) -> str:
    """A bundle's hash: 64 lowercase hex digits (``gridtask bundle pack DIR`` prints it)."""
    try:
        return check_hash(image)
    except BundleError as exc:
        raise ValidationError(f"image: {exc}, as `gridtask bundle pack DIR` prints") from None


def vm_path(path: object) -> str:
    """A path in the VM as the work directory's relative path: relative to ``/work``, or
    absolute inside it; never outside it (``..``), never the directory itself."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise ValidationError(f"path: must be a non-empty string (got {path!r})")
    full = posixpath.normpath(posixpath.join(VM_WORKDIR, path))
    if not full.startswith(VM_WORKDIR + "/"):
        raise ValidationError(f"path: {path!r} is outside the VM's work directory {VM_WORKDIR} (the only place "
                              "a script reads and writes; use a relative path or one under /work)")
    return full[len(VM_WORKDIR) + 1:]


def _int(inputs: dict[str, Any], name: str, least: int, most: int, default: int | None = None) -> int:
    value = inputs.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise ValidationError(f"{name}: must be an integer from {least} to {most} (got {value!r})")
    return value


def _strings(value: object, what: str, most: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and "\x00" not in v for v in value):
        raise ValidationError(f"{what}: must be a list of strings (got {value!r:.80})")
    if len(value) > most:
        raise ValidationError(f"{what}: at most {most} (got {len(value)})")
    return tuple(value)


def _env(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValidationError(f"env: must be an object of strings (got {type(value).__name__})")
    for k, v in value.items():
        if not isinstance(k, str) or not _ENV_NAME.match(k) or not isinstance(v, str) or "\x00" in v:
            raise ValidationError(f"env: {k!r} must be a variable name with a string value")
    return dict(value)


def _command(index: int, raw: object) -> Command:
    if not isinstance(raw, dict):
        raise ValidationError(f"commands[{index}]: must be an object (got {type(raw).__name__})")
    op = raw.get("op")
    try:
        if op == "run":
            cmd = raw.get("cmd")
            if not isinstance(cmd, str) or not cmd or "\x00" in cmd:
                raise ValidationError(f"cmd: must be a program to run (got {cmd!r})")
            return Run(cmd, _strings(raw.get("args", []), "args", MAX_ARGS), _env(raw.get("env", {})))
        if op == "upload":
            data = raw.get("data")
            if not isinstance(data, str):
                raise ValidationError("data: must be base64 text")
            try:
                decoded = base64.b64decode(data, validate=True)
            except binascii.Error:
                raise ValidationError("data: not base64") from None
            return Upload(vm_path(raw.get("path")), decoded)
        if op == "download":
            return Download(vm_path(raw.get("path")), _int(raw, "limit", 1, MAX_DOWNLOAD_BYTES, DEFAULT_DOWNLOAD_LIMIT))
    except ValidationError as exc:
        raise ValidationError(f"commands[{index}]: {exc}") from None
    raise ValidationError(f"commands[{index}]: op must be one of 'run', 'upload', 'download' (got {op!r})")


def check_script(inputs: object) -> ScriptSpec:
    """A script's inputs, checked (``ValidationError`` naming the field and the limit)."""
    if not isinstance(inputs, dict):
        raise ValidationError(f"inputs: must be an object (got {type(inputs).__name__})")
    unknown = set(inputs) - {"image", "commands", "timeout", "memory_mib", "disk_mib", "cpu_threads"}
    if unknown:
        raise ValidationError(f"inputs: unknown fields {sorted(unknown)}")
    image = check_image(inputs.get("image"))
    raw = inputs.get("commands")
    if not isinstance(raw, list) or not raw:
        raise ValidationError("commands: a script needs at least one command")
    if len(raw) > MAX_COMMANDS:
        raise ValidationError(f"commands: at most {MAX_COMMANDS} per script (got {len(raw)})")
    commands = tuple(_command(i, c) for i, c in enumerate(raw))
    downloads = sum(c.limit for c in commands if isinstance(c, Download))
    if downloads > MAX_DOWNLOADS_BYTES:
        raise ValidationError(f"commands: downloads may bring back at most {MAX_DOWNLOADS_BYTES} bytes in all "
                              f"(their limits add up to {downloads})")
    return ScriptSpec(
        image=image, commands=commands, timeout=_int(inputs, "timeout", 1, MAX_SCRIPT_TIMEOUT_S),
        memory_mib=_int(inputs, "memory_mib", 16, MAX_MEMORY_MIB, DEFAULT_MEMORY_MIB),
        disk_mib=_int(inputs, "disk_mib", 1, MAX_DISK_MIB, DEFAULT_DISK_MIB),
        cpu_threads=_int(inputs, "cpu_threads", 1, MAX_CPU_THREADS, 1),
    )


@dataclass(frozen=True)
class CommandResult:
    """What one command of a script gave back."""

    op: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    data: bytes | None = None


@dataclass(frozen=True)
class ScriptResult:
    """A script's result as the node returned it: one entry per command that ran, and where
    it stopped (``failed``: the index and why) if a command failed."""

    results: tuple[CommandResult, ...]
    failed_index: int | None = None
    failed_message: str = ""

    def to_json(self) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for r in self.results:
            entry: dict[str, Any] = {"op": r.op}
            if r.op == "run":
                entry.update(exit_code=r.exit_code, stdout=r.stdout, stderr=r.stderr)
            elif r.op == "download" and r.data is not None:
                entry["data"] = base64.b64encode(r.data).decode()
            out.append(entry)
        failed = None if self.failed_index is None else {"index": self.failed_index, "message": self.failed_message}
        return {"results": out, "failed": failed}

    @classmethod
    def from_json(cls, raw: object) -> ScriptResult:
        """Read a node's result back; ``ValidationError`` when it is not one."""
        if not isinstance(raw, dict) or not isinstance(raw.get("results"), list):
            raise ValidationError("script result: not an object with 'results'")
        results = []
        for entry in raw["results"]:
            if not isinstance(entry, dict) or entry.get("op") not in ("run", "upload", "download"):
                raise ValidationError(f"script result: malformed entry {entry!r:.80}")
            data = entry.get("data")
            results.append(CommandResult(
                op=entry["op"], exit_code=entry.get("exit_code"), stdout=str(entry.get("stdout", "")),
                stderr=str(entry.get("stderr", "")), data=base64.b64decode(data) if isinstance(data, str) else None))
        failed = raw.get("failed")
        if failed is None:
            return cls(tuple(results))
        if not isinstance(failed, dict) or not isinstance(failed.get("index"), int):
            raise ValidationError("script result: malformed 'failed'")
        return cls(tuple(results), failed["index"], str(failed.get("message", "")))
