"""Every function of the compiled contract has a typed method on ChainClient (so a new
function cannot be reached only by a string name), and each transaction names its gas."""

from __future__ import annotations

import inspect
import re

from gridtask.chain import artifact, client
from gridtask.chain.client import GAS_LIMIT, SCANNING_GAS_LIMIT, ChainClient

# Contract getters read through a differently named (clearer) method.
RENAMED = {"getTask": "get_task", "getNode": "get_node", "getNodeModels": "get_node_models",
           "queuedCount": "queued_count", "pauseRequested": "pause_requested", "relay": "relay_address",
           "balanceOf": "balance_of", "min_timeout": "timeout_bounds", "max_timeout": "timeout_bounds"}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_every_contract_function_has_a_typed_method() -> None:
    functions = {item["name"] for item in artifact.abi() if item["type"] == "function"}
    missing = sorted(f for f in functions
                     if not inspect.iscoroutinefunction(getattr(ChainClient, RENAMED.get(f, snake(f)), None)))
    assert not missing, f"no typed ChainClient method for {missing}"


def test_every_transaction_names_its_gas_limit_beside_it() -> None:
    mutating = {item["name"] for item in artifact.abi()
                if item["type"] == "function" and item["stateMutability"] in ("nonpayable", "payable")}
    source = inspect.getsource(client)
    for name in mutating:
        call = re.search(rf'_transact\(\s*"{name}",.*?gas=(\w+)', source, re.S)  # gas= is required
        assert call is not None, f"{name} is not sent by a typed method with its gas"
        assert call.group(1) in ("GAS_LIMIT", "SCANNING_GAS_LIMIT"), name
    assert SCANNING_GAS_LIMIT > GAS_LIMIT
