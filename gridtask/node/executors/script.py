"""The script task (``TaskType.SCRIPT``, model ``vm``): a Golem-style script of commands run
in the node's sandbox over a content-addressed bundle (``gridtask.sdk.golem``).

Why this shape: an application's code is untrusted, so every command runs under bubblewrap
(``gridtask.node.sandbox``: no network, a private work directory, read-only system, limits on
time, memory, processes, output and disk); a payload that breaks a limit is the task's fault
(``SandboxViolation``, a task error the node reports on chain) and the node goes on serving.
The bundle is fetched once from the relay, checked against its hash and kept
(``gridtask.bundles.BundleCache``); each script gets a fresh copy of it as its work directory,
so no script sees another's files.

The result is what gridtask compares between nodes (a sampled task runs on three): exit codes,
output and downloaded files, nothing that depends on the machine or the moment.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gridtask.bundles import BundleCache, make_writable
from gridtask.exceptions import RelayError, ValidationError
from gridtask.limits import VM_MODEL
from gridtask.node.executors.base import ExecutorFailure, InvalidTaskParameters, check_model, task_fault
from gridtask.scripts import (
    VM_WORKDIR,
    CommandResult,
    Download,
    Run,
    ScriptResult,
    ScriptSpec,
    Upload,
    check_script,
)
from gridtask.types import TaskErrorCode, TaskType

if TYPE_CHECKING:
    from gridtask.relay.client import RelayClient

BASE_ENV = {"PATH": "/opt/gridtask/venv/bin:/usr/local/bin:/usr/bin:/bin", "HOME": VM_WORKDIR, "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0"}
"""What every command's environment starts from (the script's ``env`` is laid over it): the
same on every node, so that a result does not depend on the node's own environment. The
sandbox shows the node's Python under /opt/gridtask/venv, so ``python3`` finds it first."""


class ScriptExecutor:
    """Runs a script's commands in order in the sandbox; returns ``ScriptResult.to_json()``."""

    task_type = TaskType.SCRIPT

    def __init__(self) -> None:
        self.models = [VM_MODEL]
        self._cache: Any = None
        self._scratch: Path | None = None

    def bind(self, relay: RelayClient, state_dir: Path) -> None:
        """The node's relay (bundles come from there) and its state directory (they are kept in
        its ``bundles`` folder, which the source executor's cache shares: ``BundleCache``)."""
        self._cache = BundleCache(state_dir / "bundles", relay)
        self._scratch = state_dir / "scripts"

    async def run(self, model: str, inputs: dict) -> dict:
        check_model(self, model)
        with task_fault():
            spec = check_script(inputs)
        threads = cpu_threads()
        if spec.cpu_threads > threads:  # the payload's min_cpu_threads: the creator asked too much of this node
            raise InvalidTaskParameters(f"cpu_threads: the script needs {spec.cpu_threads} CPU threads; "
                                        f"this node has {threads}")
        if self._cache is None or self._scratch is None:
            raise ExecutorFailure("the script executor has no bundle cache (the node did not bind it)")
        image = await self._image(spec.image)
        self._scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self._scratch, prefix="script-") as tmp:
            work = Path(tmp) / "work"
            shutil.copytree(image, work, symlinks=True)
            make_writable(work)
            try:
                return (await _run_script(spec, work)).to_json()
            finally:
                make_writable(work)  # whatever the payload left read-only, so the clean-up can remove it

    async def _image(self, image: str) -> Path:
        """The unpacked bundle. The creator's fault (a task error): an image nobody published
        (404), or one that unpacks to something refused (a link out, a device: the creator
        published it). Not the creator's fault (the node aborts, the fee goes back): a relay
        that is away or errs, or that sends bytes that do not match the hash
        (``BundleMismatch``, a ``RelayError``)."""
        try:
            return Path(await self._cache.path(image))
        except RelayError as exc:
            if exc.status == 404:
                raise InvalidTaskParameters(
                    f"image {image}: no such bundle on the relay (publish it: `gridtask bundle publish DIR`)",
                    code=TaskErrorCode.PAYLOAD_FAILED) from None
            raise ExecutorFailure(f"image {image}: the relay did not give the bundle ({exc})") from exc
        except ValidationError as exc:  # a bundle that unpacks to something refused (links out, devices)
            raise InvalidTaskParameters(f"image {image}: {exc}", code=TaskErrorCode.PAYLOAD_FAILED) from None


async def _run_script(spec: ScriptSpec, work: Path) -> ScriptResult:
    """Each command in order in ``work``; the first failure ends the script (recorded, not raised:
    a command that exits non-zero is the script's own answer). A sandbox limit broken raises."""
    from gridtask.node.sandbox import SandboxLimits, run_sandboxed

    results: list[CommandResult] = []
    deadline = time.monotonic() + spec.timeout
    for index, command in enumerate(spec.commands):
        if isinstance(command, Upload):
            target = _inside(work, command.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(command.data)
            results.append(CommandResult("upload"))
        elif isinstance(command, Run):
            left = deadline - time.monotonic()
            if left <= 0:
                raise InvalidTaskParameters(f"the script ran past its {spec.timeout} s before command {index}",
                                            code=TaskErrorCode.SANDBOX_TIME)
            limits = SandboxLimits(wall_s=left, memory_mib=spec.memory_mib, disk_mib=spec.disk_mib)
            done = await run_sandboxed([command.cmd, *command.args], workdir=work, limits=limits,
                                       env={**BASE_ENV, **command.env})
            results.append(CommandResult("run", done.exit_code, _text(done.stdout), _text(done.stderr)))
            if done.exit_code != 0:
                return ScriptResult(tuple(results), index, f"{command.cmd} exited with code {done.exit_code}")
        else:
            assert isinstance(command, Download)
            data, why = _read_download(work, command)
            if data is None:
                results.append(CommandResult("download"))
                return ScriptResult(tuple(results), index, why)
            results.append(CommandResult("download", data=data))
    return ScriptResult(tuple(results))


def cpu_threads() -> int:
    """The CPU threads this node's process may run on (its affinity, which a container or
    ``taskset`` may narrow below the machine's count)."""
    return len(os.sched_getaffinity(0))


def _inside(work: Path, relative: str) -> Path:
    """``relative`` under ``work``, refusing a path the payload made escape it (a link out)."""
    target = work / relative
    resolved = target.resolve()
    if resolved != work.resolve() and work.resolve() not in resolved.parents:
        with task_fault():
            raise ValidationError(f"path: {relative!r} leads outside the work directory")
    return target


def _read_download(work: Path, command: Download) -> tuple[bytes | None, str]:
    """A download's bytes, or None and why (no such file, a directory, over its limit)."""
    target = _inside(work, command.path)
    try:
        info = target.stat()
    except FileNotFoundError:
        return None, f"download {command.path}: no such file"
    if not stat.S_ISREG(info.st_mode):
        return None, f"download {command.path}: not a regular file"
    if info.st_size > command.limit:
        return None, f"download {command.path}: {info.st_size} bytes, over its limit of {command.limit}"
    return target.read_bytes(), ""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")
