"""A local anvil chain as a child process, for the devnet and the end-to-end tests.

Nothing else in gridtask assumes anvil: this module only starts one. The chain dies with
the process that started it (``gridtask.children``), and in its own session, so that a
Ctrl-C in the terminal reaches only that process, which then stops things in order.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from gridtask.children import command_line, die_with_parent, pids_listening_on
from gridtask.exceptions import ChainError

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 1.0


def find_anvil() -> str:
    """The anvil that ``npm install`` put in node_modules, else one on PATH.

    The platform binary itself, not npm's ``.bin/anvil`` Node.js wrapper: a signal to the
    wrapper (SIGKILL above all) would leave the real anvil running without a parent."""
    modules = ROOT / "node_modules"
    for binary in sorted(modules.glob("@foundry-rs/anvil-*/bin/anvil")):
        if os.access(binary, os.X_OK):
            return str(binary)
    local = modules / ".bin" / "anvil"
    if local.exists():
        return str(local)
    found = shutil.which("anvil")
    if found:
        return found
    raise ChainError("anvil not found: run `npm install` in the repository (it pins @foundry-rs/anvil)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc_answers(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    req = urllib.request.Request(url, body, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=1) as r:
            return "result" in json.load(r)
    except OSError:
        return False


def rpc_call(url: str, method: str, params: list) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, body, {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        out = json.load(r)
    if "error" in out:
        raise ChainError(f"{method}: {out['error']}")
    return out["result"]


class Anvil:
    """``with Anvil() as chain: chain.url`` — a fresh chain that stops with the block."""

    def __init__(self, *, port: int | None = None, block_time: float | None = None,
                 log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.block_time = block_time
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> Anvil:
        holders = pids_listening_on(self.port)
        if holders:
            who = ", ".join(f"pid {pid} ({command_line(pid)[:80] or '?'})" for pid in holders)
            raise ChainError(f"port {self.port} is in use by {who}: stop it or choose another port")
        cmd = [find_anvil(), "--port", str(self.port), "--host", "127.0.0.1", "--silent"]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent(), start_new_session=True)
        deadline = time.monotonic() + 30
        while not rpc_answers(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ChainError(f"anvil did not start on port {self.port}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds (anvil keeps no state to save)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def fund(self, address: str, wei: int) -> None:
        """Give an account ether (anvil's own RPC: devnets and tests only)."""
        rpc_call(self.url, "anvil_setBalance", [address, hex(wei)])

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
