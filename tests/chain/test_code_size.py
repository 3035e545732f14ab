"""Every contract must deploy on a real chain: EIP-170 caps runtime code at 24,576 bytes.

The deployed code is the compiled runtime plus the immutables, which Vyper appends to it
at deployment (32 bytes each: TaskNetwork has twelve, 384 bytes that `bytecode_runtime`
does not show). Anvil and every public chain refuse a contract over the cap with
"CreateContractSizeLimit". This checks the sources as they are now (with their own
`# pragma optimize`), so it fails the moment a change makes a contract undeployable.
"""

from __future__ import annotations

import vyper
from vyper.compiler.settings import Settings

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
            output_formats=["bytecode_runtime", "layout"],
            settings=Settings(evm_version=artifact.EVM_VERSION),
        )
        immutables = sum(_lengths(out["layout"].get("code_layout", {})))
        size = (len(out["bytecode_runtime"]) - 2) // 2 + immutables
        print(f"\n{source.name}: {size:,} bytes deployed ({immutables} of immutables), "
              f"{EIP170_LIMIT - size:,} to spare")
        assert size <= EIP170_LIMIT, (
            f"{source.name}: {size:,} bytes of deployed code ({immutables} of immutables), over "
            f"EIP-170's {EIP170_LIMIT:,}; "
            "anvil and every public chain refuse to deploy it (see /work/notes/SPEC8.md CHANGE 2)"
        )


def _lengths(layout: dict) -> list[int]:
    """The lengths of every immutable in a code layout (modules nest their own)."""
    out = []
    for v in layout.values():
        out += [v["length"]] if "length" in v else _lengths(v)
    return out
