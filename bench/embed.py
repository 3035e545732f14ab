"""1,000 texts embedded through the devnet ÷ the same texts embedded directly.

Through the devnet: 3 nodes serving all-MiniLM-L6-v2 (each loads the model before it
joins), one application submits the texts as tasks of at most ``MAX_TEXTS`` (256) at once
and waits for every result. Directly: a fresh Python process loads the same model files
with sentence-transformers (as the node's executor does, same batch size) and encodes the
same texts in one call. Both sides start with the model loaded and not yet run; the
direct run is made before and after the devnet's and the faster one counts (the least
disturbed by other users of the machine: the ratio is never flattered by a slow direct
run). The application splits the texts into tasks of at most 256, as even as can be and
a multiple of the node count in number (``split``). The vectors must agree (the node rounds to 6
decimals), or the row fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cpu import CpuMeter
from bench.net import app_client, devnet
from bench.report import Section, table

TEXTS = 1000
NODES = 3
# Long enough for a task of 256 texts on a loaded 2-core machine (the devnet's 60 s window
# would give 30 s stages); two stages fit in the validation window, as the SDK requires.
STAGE_TIMEOUT = 300
VALIDATION_WINDOW = 600

_PROSE = ("the network runs tasks on machines nobody has to trust while a relay carries sealed parameters "
          "and results between applications and nodes that stake ether scored outputs are validated by "
          "groups of three sampled at random a node that lies loses its stake embeddings turn sentences "
          "into vectors whose cosine says how close two meanings are")
_WORDS = _PROSE.split(" ")

_DIRECT = """
import json, sys, time
import numpy as np
from sentence_transformers import SentenceTransformer
from gridtask.node.executors.embed import DEFAULT_BATCH_SIZE, minilm_path
texts = json.load(open(sys.argv[1]))
model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
t, c = time.perf_counter(), time.process_time()
vectors = model.encode(texts, batch_size=DEFAULT_BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False)
seconds, cpu = time.perf_counter() - t, time.process_time() - c
np.save(sys.argv[2], vectors)
print(json.dumps({"seconds": seconds, "cpu": cpu}))
"""


def texts(n: int = TEXTS, seed: int = 7) -> list[str]:
    """n different sentences of 4 to 30 words (the same every run)."""
    rng = random.Random(seed)
    return [f"{i}: " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 30))) for i in range(n)]


def split(batch: list[str], most: int, nodes: int) -> list[list[str]]:
    """Tasks of at most `most` texts, as even as can be, their number a multiple of `nodes`
    (an application that wants its texts back soonest gives every node the same work:
    1,000 texts on 3 nodes are 6 tasks of 166–167, not 256 + 256 + 256 + 232)."""
    n = -(-len(batch) // most)
    n = -(-n // nodes) * nodes
    size, extra = divmod(len(batch), n)
    out, i = [], 0
    for k in range(n):
        j = i + size + (k < extra)
        out.append(batch[i:j])
        i = j
    return out


def direct(batch: list[str], work: Path) -> tuple[dict[str, float], Any]:
    """Seconds and CPU seconds of one ``encode`` call in a fresh process, and its vectors."""
    import numpy as np

    src, out = work / "texts.json", work / "direct.npy"
    src.write_text(json.dumps(batch))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _DIRECT, str(src), str(out)], capture_output=True, text=True,
                          env=env, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"direct embedding failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(out)


async def through_devnet(batch: list[str]) -> dict[str, Any]:
    from gridtask.devnet import DEVNET_PARAMS
    from gridtask.limits import EMBED_MODEL, MAX_TEXTS
    from gridtask.sdk import TaskType

    chunks = split(batch, MAX_TEXTS, NODES)
    params = dataclasses.replace(DEVNET_PARAMS, validation_window=VALIDATION_WINDOW)
    async with devnet(NODES, [EMBED_MODEL], "embed", params=params) as net:
        client = await app_client(net)
        cpu = CpuMeter(net)
        try:
            a = cpu.snapshot()
            t = time.perf_counter()

            async def one(chunk: list[str]) -> tuple[Any, Any]:
                handle = await client.submit(TaskType.EMBED, EMBED_MODEL, {"texts": chunk},
                                             stage_timeout=STAGE_TIMEOUT)
                return handle, await client.result(handle, timeout=900)

            done = await asyncio.gather(*(one(c) for c in chunks))
            seconds = time.perf_counter() - t
            used = CpuMeter.between(a, cpu.snapshot())
        finally:
            await client.aclose()
    vectors = [v for _, result in done for v in result["embeddings"]]
    groups = sum(len(getattr(h, "members", [])) > 1 for h, _ in done)
    return dict(seconds=seconds, tasks=len(chunks), groups=groups, vectors=vectors, cpu=dict(used),
                ready_s=getattr(net, "bench_ready_s", None))


def run(quick: bool = False) -> Section:
    import numpy as np

    sec = Section("embed")
    logging.getLogger("gridtask").setLevel(logging.ERROR)
    batch = texts(300 if quick else TEXTS)
    with tempfile.TemporaryDirectory(prefix="gridtask-bench-embed-") as tmp:
        before, reference = direct(batch, Path(tmp))
        net = asyncio.run(through_devnet(batch))
        after, _ = direct(batch, Path(tmp))
    base = min(before["seconds"], after["seconds"])  # the least disturbed: never flatters the devnet
    diff = float(np.max(np.abs(np.asarray(net.pop("vectors")) - reference)))
    same = diff < 1e-4
    sec.check(f"{len(batch):,} texts embedded through the devnet ({NODES} nodes, {net['tasks']} tasks) ÷ directly",
              net["seconds"] / base if same else float("nan"), "<=", 1.5, fmt="{:.2f}×",
              note=f"devnet {net['seconds']:.1f} s (submit of every task → last result; {net['groups']} of "
                   f"{net['tasks']} tasks sampled into a group of 3) vs one sentence-transformers encode call, "
                   f"the faster of {before['seconds']:.1f} s before and {after['seconds']:.1f} s after"
                   + ("" if same else f"; VECTORS DIFFER (max |Δ| {diff:.2g}): no ratio"))
    used = net["cpu"]
    direct_cpu = min(before["cpu"], after["cpu"])
    sec.tables.append(table(
        f"embedding {len(batch):,} texts: CPU seconds by party", ["run", "nodes", "app", "relay", "anvil", "all"],
        [[f"devnet, {NODES} nodes", *(f"{used.get(p, 0):.1f}" for p in ("nodes", "app", "relay", "anvil")),
          f"{sum(used.get(p, 0) for p in ('nodes', 'app', 'relay', 'anvil')):.1f}"],
         ["direct (one process)", f"{direct_cpu:.1f}", "", "", "", f"{direct_cpu:.1f}"]]))
    devnet_cpu = sum(used.get(p, 0) for p in ("nodes", "app", "relay", "anvil"))
    sec.info("CPU seconds: devnet (all parties) ÷ direct", f"{devnet_cpu / direct_cpu:.2f}×", devnet_cpu / direct_cpu,
             note=f"{devnet_cpu:.1f} s vs {direct_cpu:.1f} s; independent of other users of the machine "
                  f"({used.get('busy', float('nan')):.0%} busy during the devnet's run), unlike the wall-time ratio, "
                  "where several node processes can win a larger share of a busy machine than one process")
    sec.info("largest difference between the devnet's vectors and the direct ones", f"{diff:.1g}", diff,
             note="the node rounds each component to 6 decimals")
    sec.data = dict(direct=[before, after], devnet=net, max_abs_diff=diff)
    return sec
