"""Run a task's own code (OpenGPU sources, Golem scripts) under bubblewrap, within limits.

What the payload sees: a read-only system (``/usr`` and the few ``/etc`` files programs
need), the node's Python at ``SANDBOX_PYTHON`` (the venv, read-only, so a source can
import pydantic; gridtask's own package on ``PYTHONPATH``), the caller's ``ro_binds``, a
private ``/work`` and ``/tmp`` and nothing else: not the node's home, keys, config, cursor
or results. No network (an empty network namespace), its own pid namespace, a new session.

Limits, and how each is held and seen:

- wall time: the host kills the pid namespace's init (through a pidfd checked against the
  namespace bwrap reports), and the kernel takes every process of the sandbox along; bwrap
  too (``--die-with-parent`` alone does not hold: dropping privileges clears it) -> ``"time"``
- processes: ``RLIMIT_NPROC`` on the payload. The kernel does not apply it to uid 0, so a
  node running as root starts the payload under a fresh unprivileged uid (bwrap without a
  user namespace, then ``setpriv``); a normal user's sandbox gets its own user namespace,
  where the kernel counts only that sandbox's processes (Linux 5.14 and later). The host
  counts the sandbox's processes and threads (its ``/proc``) and kills it when they reach
  the limit; a payload that exits non-zero saying a fork failed (EAGAIN)      -> ``"processes"``
- memory: ``RLIMIT_AS``; an allocation past it fails, and a payload that exits non-zero
  saying so (``MemoryError``, "Cannot allocate memory", ``bad_alloc``)        -> ``"memory"``
- output: stdout and stderr together; the host stops reading at the cap and kills -> ``"output"``
- disk: ``/work`` and ``/tmp`` are tmpfs mounts capped at ``disk_mib`` each (tmpfs lives in
  the host's memory); a payload that fills one, makes more than ``max_files`` files in one
  (seen as it runs, through its root, and at its end), or whose work dir would not fit -> ``"disk"``

The work dir: ``workdir`` on the host is copied into ``/work`` before the run and, after a
run without a violation, replaced by what ``/work`` holds at the end (through a tar stream
the host unpacks member by member, leaving out absolute paths, ``..``, links out of it and
devices). A violation raises ``SandboxViolation``, a task error whose ``code`` the node
reports on chain; a non-zero exit is not a violation (the caller decides what it means).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import gridtask
from gridtask.bundles import extract_members
from gridtask.exceptions import ValidationError
from gridtask.node.executors.base import ExecutorFailure, InvalidTaskParameters
from gridtask.types import TaskErrorCode

__all__ = [
    "SANDBOX_LIB",
    "SANDBOX_PYTHON",
    "WORK",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "SandboxViolation",
    "run_sandboxed",
    "sandbox_available",
]

MiB = 1 << 20
WORK = "/work"  # the payload's private, writable work dir (and its cwd and HOME)
_VENV = "/opt/gridtask/venv"
SANDBOX_LIB = "/opt/gridtask/lib"  # on PYTHONPATH inside: holds the gridtask package, read-only
_SEED = "/.gridtask/in.tar"  # the host work dir's files, unpacked into /work before the payload runs
_POLL_S = 0.1  # how often the host counts the sandbox's processes
_DISK_FULL_BYTES = 64 * 1024  # a tmpfs with less free than this was filled
_MIN_FILES, _FILES_PER_MIB = 4096, 64  # files /work may hold: 4,096, or 64 per MiB of its disk
_TAR_SLACK = 4 * MiB  # headers of many small files: a copy-out may exceed the disk cap by this
_UIDS = (1 << 20, 1 << 30)  # a root node's payload runs as a fresh uid from this range
_READ = 64 * 1024
_KILL_GRACE_S = 5.0  # how long the host waits for a killed sandbox's pipes to close
_MEMORY_MARKERS = (b"MemoryError", b"Cannot allocate memory", b"bad_alloc", b"out of memory")
# What a failed fork (EAGAIN at RLIMIT_NPROC) makes sh, bash, Python and libc programs say.
_FORK_MARKERS = (b"Cannot fork", b"fork: retry", b"fork: Resource temporarily unavailable",
                 b"[Errno 11] Resource temporarily unavailable", b"can't fork")
_ETC = ("ld.so.cache", "alternatives", "localtime", "nsswitch.conf", "mime.types")

Kind = Literal["time", "memory", "processes", "output", "disk"]
_CODES: dict[str, TaskErrorCode] = {
    "time": TaskErrorCode.SANDBOX_TIME,
    "memory": TaskErrorCode.SANDBOX_MEMORY,
    "processes": TaskErrorCode.SANDBOX_PROCESSES,
    "output": TaskErrorCode.SANDBOX_OUTPUT,
    "disk": TaskErrorCode.SANDBOX_DISK,
}

# Runs inside (bash: redirections to fds above 9), as the payload's uid: take the report pipe
# as fd 3 and close the other fds bwrap passed on, seed /work, run the payload under its
# rlimits (fd 3 closed), then report the free space of /work and /tmp and stream /work back.
_LAUNCHER = r"""
report=$1 closing=$2 nproc=$3 as=$4 seed=$5
shift 5
exec 3>&"$report" || exit 125
for fd in $report $closing; do [ "$fd" = 3 ] || eval "exec $fd>&-"; done
if [ "$seed" = 1 ]; then
  tar -x -f /.gridtask/in.tar -C /work --no-same-owner || exit 125
fi
prlimit --core=0 --nproc="$nproc" --as="$as" -- "$@" 3>&-
rc=$?
{ stat -f -c '%a %S %c %d' /work /tmp; tar -c -f - -C /work . 2>/dev/null; } >&3
exit $rc
"""


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandboxed run may use; the defaults suit a small Python function."""

    wall_s: float = 30.0
    memory_mib: int = 512
    processes: int = 64
    output_bytes: int = 1 << 20
    disk_mib: int = 64

    @property
    def max_files(self) -> int:
        """How many files and directories /work (and /tmp) may hold."""
        return max(_MIN_FILES, self.disk_mib * _FILES_PER_MIB)

    def __post_init__(self) -> None:
        for name in ("wall_s", "memory_mib", "processes", "output_bytes", "disk_mib"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValidationError(f"sandbox limit {name}: must be a positive number (got {value!r})")
        if self.processes < 4:
            raise ValidationError(
                f"sandbox limit processes: at least 4, the sandbox's own included (got {self.processes})"
            )


class SandboxViolation(InvalidTaskParameters):
    """The payload broke one of its limits and was stopped: a task error (``code``), whose
    ``kind`` is ``"time"``, ``"memory"``, ``"processes"``, ``"output"`` or ``"disk"``.

    ``stdout`` and ``stderr`` hold what it printed before it was stopped (at most the cap).
    """

    def __init__(self, kind: Kind, message: str, *, stdout: bytes = b"", stderr: bytes = b"") -> None:
        self.kind = kind
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(message, code=_CODES[kind])


class SandboxUnavailable(ExecutorFailure):
    """bubblewrap is missing or does not work here: the node's fault, not the task's."""


@dataclass
class SandboxResult:
    """A run that stayed within its limits; ``exit_code`` is the payload's (128+N: signal N)."""

    exit_code: int
    stdout: bytes
    stderr: bytes


# ---------------------------------------------------------------------------- availability


@functools.cache
def sandbox_available() -> bool:
    """Whether bubblewrap (and util-linux's prlimit, setpriv for root) is installed and a
    sandbox starts here (a container may forbid the namespaces it needs). Checked once."""
    return _unavailable_reason() is None


@functools.cache
def _unavailable_reason() -> str | None:
    tools = ["bwrap", "bash", "prlimit", "tar", "stat"] + (["setpriv"] if os.geteuid() == 0 else [])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found: install bubblewrap (apt-get install bubblewrap)"
    argv = [*_bwrap_args(SandboxLimits(), uid=_fresh_uid(), binds=()), "-c", "exit 0"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False, pass_fds=())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap did not start: {exc}"
    if done.returncode != 0:
        return f"bubblewrap cannot make a sandbox here: {done.stderr.decode(errors='replace').strip()}"
    return None


# ---------------------------------------------------------------------------- the command


def _fresh_uid() -> int | None:
    """A uid no other process uses, for a root node's payload (``None``: not root)."""
    return secrets.randbelow(_UIDS[1] - _UIDS[0]) + _UIDS[0] if os.geteuid() == 0 else None


def _python_binds() -> list[tuple[str, str]]:
    """The node's Python, read-only: the venv at ``_VENV``, its base install where it is (the
    venv's interpreter links to it), and the gridtask package under ``SANDBOX_LIB``."""
    binds: list[tuple[str, str]] = []
    if not sys.base_prefix.startswith("/usr"):
        binds.append((sys.base_prefix, sys.base_prefix))
    if sys.prefix != sys.base_prefix:
        binds.append((sys.prefix, _VENV))
    binds.append((str(Path(gridtask.__file__).parent), f"{SANDBOX_LIB}/gridtask"))
    return binds


def _sandbox_python() -> str:
    if sys.prefix != sys.base_prefix:
        return f"{_VENV}/bin/python"
    return sys.executable


SANDBOX_PYTHON = _sandbox_python()  # the node's Python, as the payload finds it


def _bwrap_args(limits: SandboxLimits, *, uid: int | None, binds: Sequence[tuple[str, str]],
                seed_fd: int | None = None, info_fd: int | None = None) -> list[str]:
    """bwrap's command line up to ``bash`` (the launcher's ``-c SCRIPT`` and arguments follow)."""
    args = ["bwrap", "--die-with-parent", "--new-session"]
    if uid is None:  # a normal user: its own user namespace, with the kernel counting per namespace
        args += ["--unshare-all"]
    else:  # root: no user namespace (it would map uid 0 only); drop to ``uid`` inside
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                 "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    mounts = [*_python_binds(), *binds]
    # bwrap makes missing parents private (0700); the payload's uid must pass through them.
    parents = {str(parent) for _, dest in mounts for parent in PurePosixPath(dest).parents}
    for parent in sorted(parents - {"/"} | {"/etc", "/.gridtask"}, key=lambda p: (p.count("/"), p)):
        args += ["--perms", "0755", "--dir", parent]
    for name in _ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    disk = str(limits.disk_mib * MiB)
    args += ["--perms", "1777", "--size", disk, "--tmpfs", "/tmp"]
    args += ["--perms", "0777", "--size", disk, "--tmpfs", WORK]
    for src, dest in mounts:
        args += ["--ro-bind", src, dest]
    if seed_fd is not None:
        args += ["--perms", "0444", "--ro-bind-data", str(seed_fd), _SEED]
    args += ["--chdir", WORK, "--hostname", "sandbox"]
    if uid is not None:
        args += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--"]
    return [*args, "bash"]


def _check_binds(ro_binds: Sequence[tuple[Path, str]]) -> list[tuple[str, str]]:
    binds = []
    for src, dest in ro_binds:
        where = PurePosixPath(dest)
        if not where.is_absolute() or ".." in where.parts:
            raise ValueError(f"sandbox bind {dest!r}: the destination must be an absolute path without '..'")
        if where == PurePosixPath("/") or where.is_relative_to(WORK) or where.is_relative_to("/tmp"):
            raise ValueError(f"sandbox bind {dest!r}: may not cover /, {WORK} or /tmp (the payload's own space)")
        if not Path(src).exists():
            raise ValueError(f"sandbox bind {dest!r}: its source {src} does not exist")
        binds.append((str(Path(src).resolve()), str(where)))
    return binds


def _default_env() -> dict[str, str]:
    return {
        "PATH": f"{Path(SANDBOX_PYTHON).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": WORK,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONPATH": SANDBOX_LIB,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "MALLOC_ARENA_MAX": "2",  # glibc's 64 MiB arena per thread would eat RLIMIT_AS fast
    }


# ---------------------------------------------------------------------------- the work dir


def _pack_workdir(workdir: Path, into: IO[bytes], limits: SandboxLimits) -> bool:
    """Tar ``workdir``'s files into ``into``; False when it is empty. Files that would not fit
    the sandbox's disk are the task's fault (its uploads)."""
    entries = sorted(workdir.iterdir())
    if not entries:
        return False
    size = sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file() and not p.is_symlink())
    if size > limits.disk_mib * MiB:
        raise SandboxViolation("disk", f"the work dir holds {size} bytes; the sandbox's disk is {limits.disk_mib} MiB")
    with tarfile.open(fileobj=into, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            tar.add(entry, arcname=entry.name)
    into.flush()
    into.seek(0)
    return True


def _replace_workdir(workdir: Path, tar_bytes: bytes) -> None:
    """``workdir`` becomes what the sandbox's /work held (checked member by member)."""
    for entry in workdir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if not tar_bytes:
        return
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        # A payload's link out of its work dir (or device) is left out, the rest kept.
        extract_members(tar, workdir, refuse=False, max_bytes=2 * len(tar_bytes))


# ---------------------------------------------------------------------------- running


@contextlib.contextmanager
def _pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    try:
        yield read, write
    finally:
        for fd in (read, write):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Run:
    """One sandboxed process: what it printed, and the first limit it broke."""

    def __init__(self, proc: asyncio.subprocess.Process, limits: SandboxLimits) -> None:
        self.proc = proc
        self.limits = limits
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.report = bytearray()
        self.violation: tuple[Kind, str] | None = None
        self.init_pid: int | None = None
        self.init_fd: int | None = None  # a pidfd on the namespace's init: killing it ends them all
        self.stopped = asyncio.Event()

    def violate(self, kind: Kind, message: str) -> None:
        if self.violation is None:
            self.violation = (kind, message)
        self.kill()
        self.stopped.set()

    def kill(self) -> None:
        """Kill the namespace's init (the kernel then kills every process in it) and bwrap.
        Not bwrap alone: its init and the payload lose ``--die-with-parent`` when they drop
        privileges, so they would outlive it."""
        if self.init_fd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.init_fd, signal.SIGKILL)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def close(self) -> None:
        if self.init_fd is not None:
            os.close(self.init_fd)
            self.init_fd = None

    async def read_output(self, stream: asyncio.StreamReader | None, sink: bytearray) -> None:
        if stream is None:
            return
        while chunk := await stream.read(_READ):
            room = self.limits.output_bytes - len(self.stdout) - len(self.stderr)
            sink += chunk[: max(room, 0)]
            if len(chunk) > room:
                self.violate("output", f"printed more than {self.limits.output_bytes} bytes (stdout and stderr)")
                return

    async def read_report(self, fd: int) -> None:
        """The launcher's report on fd 3: free space of /work and /tmp, then /work as a tar."""
        cap = self.limits.disk_mib * MiB + _TAR_SLACK
        reader = asyncio.StreamReader(limit=_READ)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while chunk := await reader.read(_READ):
                self.report += chunk
                if len(self.report) > cap:
                    self.violate("disk", f"left more than {self.limits.disk_mib} MiB of files in {WORK}")
                    return
        finally:
            transport.close()

    async def read_info(self, fd: int) -> None:
        """bwrap's info (the pid of the namespace's init), so the host can count processes."""
        data = await asyncio.to_thread(_read_all, fd)
        try:
            info = json.loads(data)
            pid, namespace = int(info["child-pid"]), int(info["pid-namespace"])
        except (ValueError, KeyError, TypeError):
            return  # bwrap failed to make the sandbox: its stderr says why
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return  # the sandbox already ended
        # The pid is the init's only if it still runs in the sandbox's namespace (not reused).
        try:
            same = os.stat(f"/proc/{pid}/ns/pid").st_ino == namespace
        except OSError:
            same = False
        if not same:
            os.close(pidfd)
            return
        self.init_pid, self.init_fd = pid, pidfd
        if self.violation is not None:
            self.kill()

    async def feed(self, data: bytes | None) -> None:
        stdin = self.proc.stdin
        if stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if data:
                stdin.write(data)
                await stdin.drain()
            stdin.close()

    async def watch(self) -> None:
        """Until it ends, count the sandbox's processes and threads (its own /proc) and look at
        its /work and /tmp (through its root): stop it at once when it breaks a limit."""
        while True:
            await asyncio.sleep(_POLL_S)
            if self.init_pid is None:
                continue
            count = _count_tasks(self.init_pid)
            if count >= self.limits.processes:
                self.violate("processes", f"reached {self.limits.processes} processes and threads")
                return
            for mount in (WORK, "/tmp"):
                try:
                    fs = os.statvfs(f"/proc/{self.init_pid}/root{mount}")
                except OSError:
                    continue
                problem = _disk_problem(self.limits, fs.f_bavail * fs.f_frsize, fs.f_files - fs.f_ffree)
                if problem is not None:
                    self.violate("disk", problem)
                    return


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read(64 * 1024)


def _count_tasks(init_pid: int) -> int:
    """Processes and threads in the pid namespace whose init is ``init_pid`` (0 once gone)."""
    proc = f"/proc/{init_pid}/root/proc"
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return 0
    count = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            count += len(os.listdir(f"{proc}/{pid}/task"))
    return count


async def run_sandboxed(
    argv: list[str],
    *,
    workdir: Path,
    limits: SandboxLimits,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    ro_binds: Sequence[tuple[Path, str]] = (),
) -> SandboxResult:
    """Run ``argv`` in a sandbox over ``workdir`` (at ``/work``; see the module doc).

    ``env`` adds to (and overrides) the sandbox's own: PATH with the node's Python first,
    HOME=/work, PYTHONPATH with gridtask. ``ro_binds`` are ``(host path, sandbox path)``
    pairs mounted read-only (a bundle, say); none may cover /, /work or /tmp.
    Raises ``SandboxViolation`` when a limit was broken (the task's fault, reported on
    chain), ``SandboxUnavailable`` when bubblewrap cannot run here (the node's).
    """
    if not argv:
        raise ValueError("run_sandboxed: argv is empty")
    reason = _unavailable_reason()
    if reason is not None:
        raise SandboxUnavailable(f"cannot run task code in a sandbox: {reason}")
    binds = _check_binds(ro_binds)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as seed, _pipe() as (report_r, report_w), _pipe() as (info_r, info_w):
        seeded = await asyncio.to_thread(_pack_workdir, workdir, seed, limits)
        seed_fd = seed.fileno() if seeded else None
        passed = [fd for fd in (seed_fd, info_w) if fd is not None]
        command = [
            *_bwrap_args(limits, uid=_fresh_uid(), binds=binds, seed_fd=seed_fd, info_fd=info_w),
            "-c", _LAUNCHER, "gridtask-sandbox", str(report_w), " ".join(str(fd) for fd in passed),
            str(limits.processes), str(limits.memory_mib * MiB), "1" if seeded else "0", *argv,
        ]
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**_default_env(), **(env or {})},
            pass_fds=(report_w, *passed),
            start_new_session=True,
        )
        os.close(report_w)
        os.close(info_w)
        run = _Run(proc, limits)
        try:
            await _supervise(run, stdin, info_fd=os.dup(info_r), report_fd=os.dup(report_r))
        finally:
            run.close()
    return await asyncio.to_thread(_conclude, run, workdir)  # many files to write back: off the loop


async def _supervise(run: _Run, stdin: bytes | None, *, info_fd: int, report_fd: int) -> None:
    """Read the run's output and report until it ends, or until it breaks a limit (then kill it)."""
    info = asyncio.create_task(run.read_info(info_fd))
    helpers = [asyncio.create_task(run.feed(stdin)), asyncio.create_task(run.watch())]
    readers = asyncio.ensure_future(asyncio.gather(
        run.read_output(run.proc.stdout, run.stdout),
        run.read_output(run.proc.stderr, run.stderr),
        run.read_report(report_fd),
        run.proc.wait(),
    ))
    stopped = asyncio.create_task(run.stopped.wait())
    try:
        waiting: set[asyncio.Future[Any]] = {readers, stopped}
        done, _ = await asyncio.wait(waiting, timeout=run.limits.wall_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if not done:
            run.violate("time", f"ran past its {run.limits.wall_s:g} s")
        if readers.done():
            readers.result()
    finally:
        if not readers.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(info), _KILL_GRACE_S)  # the init's pid, to kill it
            run.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(readers, _KILL_GRACE_S)  # the pipes close as the namespace goes
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(info), _KILL_GRACE_S)  # bwrap has exited: at EOF now
        for task in (info, stopped, *helpers):
            task.cancel()
        await asyncio.gather(info, stopped, *helpers, return_exceptions=True)
        run.kill()
        await run.proc.wait()
        await _drain(run.proc)


async def _drain(proc: asyncio.subprocess.Process) -> None:
    """Read what is left in the pipes of an ended run (a reader that stopped at a limit left
    some), so asyncio closes them now rather than when the process object is collected."""
    if proc.stdin is not None:
        proc.stdin.close()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(stream.read(), _KILL_GRACE_S)


def _conclude(run: _Run, workdir: Path) -> SandboxResult:
    """The result, or the limit the run broke (the first seen while it ran, else disk, else memory)."""
    limits = run.limits
    stdout, stderr = bytes(run.stdout), bytes(run.stderr)
    exit_code = run.proc.returncode if run.proc.returncode is not None else -1
    head, _, tar_bytes = bytes(run.report).partition(b"\n")
    second, _, tar_bytes = tar_bytes.partition(b"\n")
    violation = run.violation
    if violation is None and not head:
        # The launcher reports after every payload; no report and no limit broken: the sandbox
        # never got as far as the payload (bwrap refused, /work could not be seeded).
        raise SandboxUnavailable(f"bubblewrap did not make the sandbox: {stderr.decode(errors='replace')[-500:]}")
    if violation is None:
        problem = _reported_disk_problem(limits, head) or _reported_disk_problem(limits, second)
        violation = ("disk", problem) if problem is not None else None
    if violation is None and exit_code != 0 and any(marker in stderr for marker in _MEMORY_MARKERS):
        violation = ("memory", f"ran out of its {limits.memory_mib} MiB of memory")
    if violation is None and exit_code != 0 and any(marker in stderr for marker in _FORK_MARKERS):
        violation = ("processes", f"reached {limits.processes} processes and threads")
    if violation is not None:
        kind, what = violation
        raise SandboxViolation(kind, f"the task's code {what} and was stopped", stdout=stdout, stderr=stderr)
    _replace_workdir(workdir, tar_bytes)
    return SandboxResult(exit_code=exit_code if exit_code >= 0 else 128 - exit_code, stdout=stdout, stderr=stderr)


def _disk_problem(limits: SandboxLimits, free_bytes: int, files: int) -> str | None:
    """How a /work or /tmp with ``free_bytes`` left and ``files`` in it breaks the disk limit:
    filled (the tmpfs cap) or too many files (tmpfs counts no bytes for empty files, but each
    costs the host's kernel memory)."""
    if free_bytes < _DISK_FULL_BYTES:
        return f"filled its {limits.disk_mib} MiB of disk ({WORK} or /tmp)"
    if files > limits.max_files:
        return f"made more than {limits.max_files} files ({WORK} or /tmp)"
    return None


def _reported_disk_problem(limits: SandboxLimits, line: bytes) -> str | None:
    """The same, from the launcher's ``stat -f -c '%a %S %c %d'`` line."""
    try:
        free_blocks, block_size, inodes, free_inodes = (int(part) for part in line.split())
    except ValueError:
        return None
    return _disk_problem(limits, free_blocks * block_size, inodes - free_inodes)
