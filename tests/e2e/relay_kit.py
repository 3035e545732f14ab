"""Helpers for the relay's end-to-end tests: the devnet's relay process, replaced at will
by one that reaches the chain through a proxy (``rpcproxy.RpcProxy``), signalled, timed until
it exits, and its CPU time read."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from gridtask.devnet import Devnet

STOP_WITHIN_S = 5.0


def relay_data(net: Devnet) -> Path:
    return net.home / "relay"


def spawn_relay(net: Devnet, rpc_url: str, ws_url: str | None = None) -> subprocess.Popen[bytes]:
    """The devnet's relay (same port, key and data folder) with its chain at ``rpc_url``;
    registered as the devnet's "relay" process, so ``net.stop()`` and ``wait_relay`` see it.
    ``ws_url`` replaces the devnet's WebSocket URL ("": none, every event is polled)."""
    assert net.config is not None
    net.stop_process("relay")
    env = net.env_for(net.relay_identity)
    env["GRIDTASK_RPC_URL"] = rpc_url
    if ws_url is not None:
        env["GRIDTASK_WS_URL"] = ws_url
    port = net.config.relay_url.rsplit(":", 1)[1]
    log = open(net.home / "relay.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridtask", "relay", "--port", port, "--data-dir", str(relay_data(net))],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    net.processes["relay"] = proc
    return proc


def seconds_to_exit(proc: subprocess.Popen[bytes], limit: float = 15.0) -> float:
    """How long ``proc`` takes to exit from now (``limit`` + 1 if it does not, then killed)."""
    began = time.monotonic()
    try:
        proc.wait(limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return limit + 1
    return time.monotonic() - began


def leftovers(net: Devnet) -> list[str]:
    """Temp files of writes cut short, in the relay's data folder (there must be none)."""
    return sorted(p.name for p in relay_data(net).glob(".tmp-*"))


def cpu_seconds(pid: int) -> float:
    """CPU time a process has run so far, all its threads (Linux ``schedstat``, in ns: finer
    than ``/proc/PID/stat``'s 10 ms ticks)."""
    total = 0
    for thread in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int((thread / "schedstat").read_text().split()[0])
    return total / 1e9
