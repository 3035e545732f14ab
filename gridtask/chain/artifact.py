"""The compiled contracts, committed beside their sources so users need no compiler.

``python -m gridtask.chain.artifact`` recompiles ``TaskNetwork.vy`` and ``ScoreVerifier.vy``
(the stateless score and dispute checks TaskNetwork calls; deployed first, its address
passed to TaskNetwork's constructor) with the pinned vyper and writes their ``.json``; a
test fails when they drift apart.
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
#: Every deployable contract, in deployment order (ScoreVerifier's address goes to TaskNetwork;
#: SourceRegistry, OpenGPU-style sources, stands beside it).
CONTRACTS = ("ScoreVerifier", "TaskNetwork", "SourceRegistry")
VYPER_VERSION = "0.4.3"
EVM_VERSION = "cancun"  # pinned in the sources too: runs on chains without the newest forks


def source_digest() -> str:
    """sha256 over every ``.vy`` source, so the artifact names what it was built from."""
    h = hashlib.sha256()
    for path in sorted(CONTRACTS_DIR.glob("*.vy")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def compile_contract(name: str = "TaskNetwork") -> dict[str, Any]:
    """Compile with the vyper command line (a dev dependency only)."""
    out = subprocess.run(
        [sys.executable, "-m", "vyper", "-f", "abi,bytecode", "--evm-version", EVM_VERSION,
         f"{name}.vy"],
        cwd=CONTRACTS_DIR, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()
    return {
        "contractName": name,
        "compiler": f"vyper {VYPER_VERSION}",
        "evmVersion": EVM_VERSION,
        "sourceSha256": source_digest(),
        "abi": json.loads(out[0]),
        "bytecode": out[1],
    }


@cache
def load(name: str = "TaskNetwork") -> dict[str, Any]:
    return json.loads((CONTRACTS_DIR / f"{name}.json").read_text())


def abi(name: str = "TaskNetwork") -> list[dict[str, Any]]:
    return load(name)["abi"]


def bytecode(name: str = "TaskNetwork") -> str:
    return load(name)["bytecode"]


if __name__ == "__main__":
    for contract in CONTRACTS:
        path = CONTRACTS_DIR / f"{contract}.json"
        path.write_text(json.dumps(compile_contract(contract), indent=1) + "\n")
        print(f"wrote {path}")
