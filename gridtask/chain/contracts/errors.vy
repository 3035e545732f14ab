# pragma version 0.4.3
# pragma evm-version cancun
"""
@title Errors
@notice One way to revert with a reason, shared by every module (stateless).
"""


@internal
@pure
def fail(reason: String[64]):
    """@dev Revert with Error(reason). Every check calls this one function (the compiler's
    own `assert ..., reason` costs ~90 bytes of code per check, and the contract must
    stay under the 24,576-byte limit); nothing runs unless the check fails."""
    raw_revert(abi_encode(reason, method_id=method_id("Error(string)")))
