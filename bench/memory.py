"""Resident memory of a node process with the embedding model loaded.

A devnet with one node started as the devnet starts it (``python -m gridtask node --model
all-minilm-l6-v2``); the daemon loads every model before it joins, so once it has joined
its VmRSS is the loaded-model footprint. One embedding task then runs through it, and
VmRSS / VmHWM (peak) are read again. Baselines: fresh ``python -c "import torch"`` and
``python -c "import sentence_transformers"`` processes, measured the same way.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.cpu import vm_status
from bench.net import devnet
from bench.report import Section

MINILM = "all-minilm-l6-v2"

_PROBE = (
    "import {mod}\n"
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith(('VmRSS', 'VmHWM')): print(line.strip())\n"
)


def baseline(module: str) -> dict[str, int]:
    """VmRSS / VmHWM (KiB) of a fresh interpreter that imported `module`."""
    out = subprocess.run([sys.executable, "-c", _PROBE.format(mod=module)], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    values = {}
    for line in out.splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return values


def model_files_mib() -> float | None:
    try:
        from gridtask.node.executors.embed import minilm_path

        path = Path(minilm_path())
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    except Exception:
        return None


def mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


async def run_async() -> Section:
    from gridtask.sdk import Client, TaskType

    sec = Section("memory")
    logging.getLogger("gridtask").setLevel(logging.ERROR)
    torch_rss = baseline("torch")
    st_rss = baseline("sentence_transformers")
    data: dict[str, Any] = dict(torch=torch_rss, sentence_transformers=st_rss)
    async with devnet(1, [MINILM], "mem") as net:
        pid = net.processes["node0"].pid
        joined = vm_status(pid)
        async with Client(config=net.config) as client:
            result = await client.run(TaskType.EMBED, MINILM, {"texts": ["how much memory does a node need?"] * 8},
                                      timeout=120)
        assert len(result["embeddings"]) == 8
        after = vm_status(pid)
        data.update(node_joined=joined, node_after_task=after, devnet_ready_s=getattr(net, "bench_ready_s", None))
    sec.info("node RSS, MiniLM loaded, after join", mib(joined["VmRSS"]), joined["VmRSS"] * 1024,
             note=f"pid of `python -m gridtask node --model {MINILM}`")
    sec.info("node RSS after one embedding task (8 texts)", mib(after["VmRSS"]), after["VmRSS"] * 1024,
             note=f"peak (VmHWM) {mib(after['VmHWM'])}")
    sec.info("baseline: python -c 'import torch'", mib(torch_rss["VmRSS"]), torch_rss["VmRSS"] * 1024)
    sec.info("baseline: python -c 'import sentence_transformers'", mib(st_rss["VmRSS"]), st_rss["VmRSS"] * 1024)
    sec.info("node (after task) − torch baseline", mib(after["VmRSS"] - torch_rss["VmRSS"]),
             (after["VmRSS"] - torch_rss["VmRSS"]) * 1024,
             note=f"{after['VmRSS'] / torch_rss['VmRSS']:.2f}× the torch baseline")
    files = model_files_mib()
    if files is not None:
        sec.info("MiniLM model files on disk", f"{files:,.0f} MiB", files * 2**20)
    sec.data = data
    return sec


def run(quick: bool = False) -> Section:
    return asyncio.run(run_async())
