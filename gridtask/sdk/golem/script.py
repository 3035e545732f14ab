"""A script: commands a worker builds, yields, and reads the results of (yapapi's ``Script``).

Each method adds a command and returns an awaitable of its ``CommandExecuted``; nothing runs
until the worker yields the script, which sends it as one fragment (one gridtask task). Once
the fragment's result is in, every command's awaitable is done, downloads have been handed to
their ``on_download`` callbacks (or written to ``dst_path``), and the worker resumes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gridtask.exceptions import GridtaskError, ValidationError
from gridtask.scripts import DEFAULT_DOWNLOAD_LIMIT, MAX_DOWNLOAD_BYTES, CommandResult, Download, Run, Upload, vm_path
from gridtask.scripts import Command as WireCommand
from gridtask.sdk.golem.events import CommandExecuted

if TYPE_CHECKING:
    from gridtask.sdk.golem.ctx import WorkContext

_script_ids = itertools.count(1)


class CommandExecutionError(GridtaskError):
    """A command of a yielded script failed (a non-zero exit, a download that was not there):
    raised in the worker at its ``yield``, as yapapi does. ``command`` is the command's text."""

    def __init__(self, command: str, message: str, stderr: str | None = None) -> None:
        self.command, self.message, self.stderr = command, message, stderr
        super().__init__(f"command {command!r} failed: {message}" + (f"; stderr: {stderr.strip()[-500:]}"
                                                                      if stderr and stderr.strip() else ""))


class Command:
    """One command of a script, with the future its ``CommandExecuted`` lands in."""

    def __init__(self, wire: WireCommand) -> None:
        self.wire = wire
        self._result: asyncio.Future[CommandExecuted] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        w = self.wire
        if isinstance(w, Run):
            return " ".join([w.cmd, *w.args])
        return f"{w.op} {w.path}"

    async def after(self, result: CommandResult) -> None:
        """What the requestor does with a command's result once it is in (downloads)."""


class _Receive(Command):
    def __init__(self, wire: Download, on_data: Callable[[bytes], Awaitable[Any]]) -> None:
        super().__init__(wire)
        self._on_data = on_data

    async def after(self, result: CommandResult) -> None:
        await self._on_data(result.data or b"")


class Script:
    """Commands for one fragment, run in order on one node (yapapi's ``Script``).

    ``timeout``: how long the fragment may take on its node before it is abandoned there (the
    task aborted, its fee refunded) and sent to another; the job's default when not given."""

    def __init__(self, context: WorkContext, timeout: timedelta | None = None, wait_for_results: bool = True) -> None:
        if not wait_for_results:
            raise ValidationError("new_script: wait_for_results=False is not supported: a fragment's results "
                                  "come back when its task ends")
        self.timeout = timeout
        self.wait_for_results = wait_for_results
        self._ctx = context
        self._commands: list[Command] = []
        self.id = next(_script_ids)

    def __repr__(self) -> str:
        return f"Script(id={self.id}, commands={self._commands})"

    @property
    def commands(self) -> list[Command]:
        return list(self._commands)

    @property
    def results(self) -> list[CommandExecuted]:
        """Every command's result, once the script ran (``AttributeError`` before)."""
        if not all(c._result.done() for c in self._commands):
            raise AttributeError("script results are available only after all commands finished")
        return [c._result.result() for c in self._commands]

    def add(self, command: Command) -> Awaitable[CommandExecuted]:
        self._commands.append(command)
        return command._result

    def run(self, cmd: str, *args: str, env: dict[str, str] | None = None) -> Awaitable[CommandExecuted]:
        """Run ``cmd`` with ``args`` in the VM (working directory ``/work``)."""
        return self.add(Command(Run(cmd, tuple(args), dict(env or {}))))

    def upload_bytes(self, data: bytes, dst_path: str) -> Awaitable[CommandExecuted]:
        if not isinstance(data, bytes | bytearray):
            raise ValidationError(f"upload_bytes: data must be bytes (got {type(data).__name__})")
        return self.add(Command(Upload(vm_path(dst_path), bytes(data))))

    def upload_json(self, data: Any, dst_path: str) -> Awaitable[CommandExecuted]:
        try:
            raw = json.dumps(data).encode()
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"upload_json: not JSON ({exc})") from None
        return self.upload_bytes(raw, dst_path)

    def upload_file(self, src_path: str | Path, dst_path: str) -> Awaitable[CommandExecuted]:
        return self.upload_bytes(Path(src_path).read_bytes(), dst_path)

    def download_bytes(self, src_path: str, on_download: Callable[[bytes], Awaitable[Any]],
                       limit: int = DEFAULT_DOWNLOAD_LIMIT) -> Awaitable[CommandExecuted]:
        """Bring back a file of the VM as bytes, given to ``on_download`` (at most ``limit`` bytes)."""
        return self.add(_Receive(_download(src_path, limit), on_download))

    def download_json(self, src_path: str, on_download: Callable[[Any], Awaitable[Any]],
                      limit: int = DEFAULT_DOWNLOAD_LIMIT) -> Awaitable[CommandExecuted]:
        async def parsed(data: bytes) -> None:
            await on_download(json.loads(data))

        return self.add(_Receive(_download(src_path, limit), parsed))

    def download_file(self, src_path: str, dst_path: str | Path,
                      limit: int = MAX_DOWNLOAD_BYTES) -> Awaitable[CommandExecuted]:
        async def write(data: bytes) -> None:
            Path(dst_path).write_bytes(data)

        return self.add(_Receive(_download(src_path, limit), write))

    def deploy(self, **kwargs: Any) -> Awaitable[CommandExecuted]:
        """yapapi's explicit start-up: here every fragment starts from a fresh copy of the bundle."""
        return self._done_now()

    def start(self, *args: str) -> Awaitable[CommandExecuted]:
        return self._done_now()

    def _done_now(self) -> Awaitable[CommandExecuted]:
        future: asyncio.Future[CommandExecuted] = asyncio.get_running_loop().create_future()
        nothing = Command(Run("true"))  # not added: every fragment starts from a fresh copy of the bundle
        future.set_result(CommandExecuted("", script=self, command=nothing, success=True, message="nothing to do"))
        return future


def _download(src_path: str, limit: int) -> Download:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_DOWNLOAD_BYTES:
        raise ValidationError(f"limit: an integer from 1 to {MAX_DOWNLOAD_BYTES} bytes (got {limit!r})")
    return Download(vm_path(src_path), limit)
