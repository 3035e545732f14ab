"""Every contract must deploy on a real chain: EIP-170 caps runtime code at 24,576 bytes.

titanoboa lifts that cap by default, so nothing else in tests/chain would notice a contract
that anvil (and every public chain) refuses with "CreateContractSizeLimit". This checks the
source as it is now, so it fails the moment a change makes the contract undeployable.
"""

from __future__ import annotations

import vyper
from vyper.compiler.settings import OptimizationLevel, Settings

from gridtask.chain import artifact

EIP170_LIMIT = 24_576


def test_every_contract_fits_eip170() -> None:
    for source in sorted(artifact.CONTRACTS_DIR.glob("*.vy")):
        text = source.read_text()
        if "@external" not in text:
            continue  # a module that is only ever initialized by another contract
        out = vyper.compile_code(
            text,
            contract_path=str(source),
            input_bundle=None,
            output_formats=["bytecode_runtime"],
            settings=Settings(evm_version=artifact.EVM_VERSION, optimize=OptimizationLevel.GAS),
        )
        size = (len(out["bytecode_runtime"]) - 2) // 2
        assert size <= EIP170_LIMIT, (
            f"{source.name}: {size:,} bytes of runtime code, over EIP-170's {EIP170_LIMIT:,}; "
            "anvil and every public chain refuse to deploy it (see /work/notes/SPEC8.md CHANGE 2)"
        )
