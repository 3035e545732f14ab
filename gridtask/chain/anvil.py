"""A local anvil chain as a child process, for the devnet and the end-to-end tests.

Nothing else in gridtask assumes anvil: this module only starts one.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from gridtask.exceptions import ChainError

ROOT = Path(__file__).resolve().parents[2]


def find_anvil() -> str:
    """The anvil that ``npm install`` put in node_modules, else one on PATH."""
    local = ROOT / "node_modules" / ".bin" / "anvil"
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
        cmd = [find_anvil(), "--port", str(self.port), "--host", "127.0.0.1", "--silent"]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not rpc_answers(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ChainError(f"anvil did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def fund(self, address: str, wei: int) -> None:
        """Give an account ether (anvil's own RPC: devnets and tests only)."""
        rpc_call(self.url, "anvil_setBalance", [address, hex(wei)])

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
