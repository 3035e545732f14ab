"""Deploy the committed ``ScoreVerifier`` and ``TaskNetwork`` bytecode: no compiler needed."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from eth_abi import encode
from eth_account import Account
from eth_typing import HexStr
from eth_utils import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import ContractLogicError, Web3RPCError

from gridtask.chain import artifact
from gridtask.chain.client import suggested_fees
from gridtask.chain.models import ETHER, NetworkParams
from gridtask.exceptions import ChainError, ConfigError
from gridtask.keys import Identity

__all__ = ["ETHER", "NetworkParams", "constructor_args", "deploy", "deploy_source_registry"]

log = logging.getLogger("gridtask.chain.deploy")

#: Headroom over the deployment's estimated gas.
DEPLOY_GAS_MARGIN = 1.2
NETWORK, VERIFIER, SOURCES = "TaskNetwork", "ScoreVerifier", "SourceRegistry"
#: Where the dry run pretends the verifier lives (any address: its code is put there for the call only).
STAND_IN_VERIFIER = to_checksum_address("0x" + "5c" * 20)


def constructor_args(params: NetworkParams, relay_address: str, verifier_address: str) -> tuple[list[str], list[Any]]:
    """TaskNetwork's constructor types and values, in the order the committed artifact declares them.

    Each argument is matched to the ``NetworkParams`` field of its name (``_min_stake`` ->
    ``min_stake``; ``_relay`` and ``_verifier`` are the relay's account and the ScoreVerifier's
    address), so the order lives in the contract only, and a setting one side has and the other
    lacks is an error, never silently dropped."""
    values = dataclasses.asdict(params) | {"relay": to_checksum_address(relay_address),
                                            "verifier": to_checksum_address(verifier_address)}
    inputs: list[dict[str, Any]] = []
    for item in artifact.abi(NETWORK):
        if item["type"] == "constructor":
            inputs = item["inputs"]
    names = [i["name"].strip("_") for i in inputs]
    if set(names) != set(values):
        raise ConfigError(
            f"the committed TaskNetwork constructor takes {sorted(set(names) - set(values))} that NetworkParams "
            f"lacks and lacks {sorted(set(values) - set(names))}: gridtask and its contract artifact are out "
            f"of step (reinstall gridtask)")
    return [i["type"] for i in inputs], [_abi_value(values[name]) for name in names]


def _abi_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


async def deploy(rpc_url: str, deployer: Identity, relay_address: str, params: NetworkParams) -> str:
    """Deploy the ScoreVerifier, then TaskNetwork pointing at it; return TaskNetwork's checksum
    address. Settings the constructor refuses raise ``ConfigError`` with its reason, found by a
    dry run before anything is sent (so they cost nothing)."""
    async def steps(w3: AsyncWeb3) -> str:
        verifier_code = artifact.bytecode(VERIFIER)
        await _dry_run(w3, deployer, params, relay_address, verifier_code)
        verifier = await _create(w3, deployer, VERIFIER, HexStr(verifier_code))
        return await _create(w3, deployer, NETWORK, _network_code(params, relay_address, verifier))

    return await _deploying(rpc_url, "TaskNetwork", steps)


async def deploy_source_registry(rpc_url: str, deployer: Identity) -> str:
    """Deploy the SourceRegistry (OpenGPU-style sources, beside TaskNetwork: no constructor
    arguments, it holds no money) and return its checksum address."""
    async def steps(w3: AsyncWeb3) -> str:
        return await _create(w3, deployer, SOURCES, HexStr(artifact.bytecode(SOURCES)))

    return await _deploying(rpc_url, "SourceRegistry", steps)


async def _deploying(rpc_url: str, what: str, steps: Callable[[AsyncWeb3], Awaitable[str]]) -> str:
    """Run ``steps`` on a connection of its own: a failure that is not already a config or chain
    error becomes a ChainError naming ``what``; the connection is closed either way."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    try:
        return await steps(w3)
    except (ConfigError, ChainError):
        raise
    except Exception as exc:
        raise ChainError(f"could not deploy {what} on {rpc_url}: {exc!r}") from exc
    finally:
        await w3.provider.disconnect()


def _network_code(params: NetworkParams, relay_address: str, verifier: str) -> HexStr:
    return HexStr(artifact.bytecode(NETWORK) + encode(*constructor_args(params, relay_address, verifier)).hex())


async def _dry_run(w3: AsyncWeb3, deployer: Identity, params: NetworkParams, relay_address: str,
                   verifier_code: str) -> None:
    """Ask the chain whether TaskNetwork's constructor takes ``params``, with the verifier's code
    placed at a stand-in address for the call only (a state override), so nothing is deployed."""
    sender = to_checksum_address(deployer.address)
    runtime = await w3.eth.call({"from": sender, "data": HexStr(verifier_code)})  # init code returns the runtime
    data = _network_code(params, relay_address, STAND_IN_VERIFIER)
    stand_in = {STAND_IN_VERIFIER: {"code": HexStr("0x" + runtime.hex())}}
    try:
        await w3.eth.call({"from": sender, "data": data}, "latest", stand_in)  # type: ignore[arg-type]
    except ContractLogicError as exc:
        raise ConfigError(f"TaskNetwork refused its settings {params}: {exc.message}") from None
    except Web3RPCError as exc:  # a provider without state overrides: the settings are checked at deployment
        log.info("no dry run of TaskNetwork's settings (%s); deploying", exc)


async def _create(w3: AsyncWeb3, deployer: Identity, name: str, data: HexStr) -> str:
    """Send one contract creation and return the new contract's checksum address."""
    sender = to_checksum_address(deployer.address)
    try:
        gas = await w3.eth.estimate_gas({"from": sender, "data": data})
    except ContractLogicError as exc:
        raise ConfigError(f"{name} refused its settings: {exc.message}") from None
    tx = {
        "data": data, "value": 0, "gas": int(gas * DEPLOY_GAS_MARGIN), **await suggested_fees(w3),
        "nonce": await w3.eth.get_transaction_count(sender, "pending"),
        "chainId": await w3.eth.chain_id,
    }
    signed = Account.from_key(deployer.private_key).sign_transaction(tx)
    receipt = await w3.eth.wait_for_transaction_receipt(await w3.eth.send_raw_transaction(signed.raw_transaction),
                                                        timeout=60)
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise ChainError(f"{name} deployment reverted (transaction 0x{bytes(receipt['transactionHash']).hex()})")
    return to_checksum_address(receipt["contractAddress"])
