"""The compiled contract, committed beside its source so users need no compiler.

``python -m gridtask.chain.artifact`` recompiles ``TaskNetwork.vy`` with the pinned
vyper and writes ``TaskNetwork.json``; a test fails when the two drift apart.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).parent / "contracts"
SOURCE = CONTRACTS_DIR / "TaskNetwork.vy"
ARTIFACT = CONTRACTS_DIR / "TaskNetwork.json"
VYPER_VERSION = "0.4.3"
EVM_VERSION = "cancun"  # pinned in the sources too: runs on chains without the newest forks


def source_digest() -> str:
    """sha256 over every ``.vy`` source, so the artifact names what it was built from."""
    h = hashlib.sha256()
    for path in sorted(CONTRACTS_DIR.glob("*.vy")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def compile_contract() -> dict[str, Any]:
    """Compile with the vyper command line (a dev dependency only)."""
    out = subprocess.run(
        [sys.executable, "-m", "vyper", "-f", "abi,bytecode", "--evm-version", EVM_VERSION,
         SOURCE.name],
        cwd=CONTRACTS_DIR, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()
    return {
        "contractName": "TaskNetwork",
        "compiler": f"vyper {VYPER_VERSION}",
        "evmVersion": EVM_VERSION,
        "sourceSha256": source_digest(),
        "abi": json.loads(out[0]),
        "bytecode": out[1],
    }


@cache
def load() -> dict[str, Any]:
    return json.loads(ARTIFACT.read_text())


def abi() -> list[dict[str, Any]]:
    return load()["abi"]


def bytecode() -> str:
    return load()["bytecode"]


if __name__ == "__main__":
    ARTIFACT.write_text(json.dumps(compile_contract(), indent=1) + "\n")
    print(f"wrote {ARTIFACT}")
