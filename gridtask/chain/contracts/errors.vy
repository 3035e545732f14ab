# pragma version 0.4.3
# pragma evm-version cancun
"""
@title Errors
@notice One way to revert with a reason, shared by every module (stateless).
"""


@internal
@pure
def fail(code: uint256):
    """@dev Revert with Error("E<code>"). Every check calls this one function with a number
    (the compiler's own `assert ..., reason` costs ~90 bytes of code per check, a reason
    string passed here ~25, a number ~4; the contract must stay under the 24,576-byte
    limit): gridtask.chain.reasons is the one table that says what each code means, and
    ChainClient's TransactionReverted carries that text. Nothing runs unless a check fails."""
    raw_revert(abi_encode(concat("E", uint2str(code)), method_id=method_id("Error(string)")))
