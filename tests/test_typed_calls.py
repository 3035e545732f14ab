"""Every function of the compiled contract has a typed method on ChainClient (so a new
function cannot be reached only by a string name), and each transaction names its gas."""

from __future__ import annotations

import dataclasses
import inspect
import re
from enum import IntEnum

import pytest

from gridtask.chain import artifact, client
from gridtask.chain.client import GAS_LIMIT, SCANNING_GAS_LIMIT, ChainClient
from gridtask.chain.models import NetworkParams
from gridtask.types import GroupOutcome, NodeStatus, TaskState

# Contract getters read through a differently named (clearer) method.
RENAMED = {"getTask": "get_task", "getNode": "get_node", "getNodeModels": "get_node_models",
           "queuedCount": "queued_count", "pauseRequested": "pause_requested", "relay": "relay_address",
           "balanceOf": "balance_of", "min_timeout": "timeout_bounds", "max_timeout": "timeout_bounds",
           "verifier": "verifier_address",
           # the deploy settings of issue 8 are read together (NetworkParams)
           **{name: "network_params" for name in ("validation_rate_bps", "validation_window", "challenge_window",
                                                 "unstake_delay", "slash_bps", "min_fee_per_unit", "similarity_bits")}}


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


def test_network_params_are_the_constructors_arguments_and_each_has_a_getter() -> None:
    """Deploying passes every NetworkParams field by its name, and network_params reads each back:
    a setting the contract adds, drops or renames breaks here, not in a deployment."""
    constructor = next(item for item in artifact.abi() if item["type"] == "constructor")
    arguments = {i["name"].strip("_") for i in constructor["inputs"]}
    fields = {f.name for f in dataclasses.fields(NetworkParams)}
    assert arguments == fields | {"relay", "verifier"}
    getters = {item["name"] for item in artifact.abi() if item["type"] == "function"
               and item["stateMutability"] == "view"}
    assert fields <= getters, f"no public getter for {sorted(fields - getters)}"


@pytest.mark.parametrize("enum", [TaskState, NodeStatus, GroupOutcome])
def test_python_enums_mirror_the_contracts_constants(enum: type[IntEnum]) -> None:
    """A state, status or outcome the Python side reads by number names the contract's own constant
    (in whichever module of the contract it lives)."""
    source = "\n".join(p.read_text() for p in sorted(artifact.CONTRACTS_DIR.glob("*.vy")))
    for member in enum:
        if member.value:
            assert re.search(rf"^{member.name}: constant\(uint256\) = {member.value}\b", source, re.M), member
