"""Deploy the committed ``TaskNetwork`` bytecode: no compiler needed."""

from __future__ import annotations

import dataclasses
from typing import Any

from eth_abi import encode
from eth_account import Account
from eth_typing import HexStr
from eth_utils import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import ContractLogicError

from gridtask.chain import artifact
from gridtask.chain.models import ETHER, NetworkParams
from gridtask.exceptions import ChainError, ConfigError
from gridtask.keys import Identity

__all__ = ["ETHER", "NetworkParams", "constructor_args", "deploy"]

#: Headroom over the deployment's estimated gas.
DEPLOY_GAS_MARGIN = 1.2


def constructor_args(params: NetworkParams, relay_address: str) -> tuple[list[str], list[Any]]:
    """The constructor's ABI types and values, in the order the committed artifact declares them.

    Each argument is matched to the ``NetworkParams`` field of its name (``_min_stake`` ->
    ``min_stake``; ``_relay`` is the relay's address), so the order lives in the contract only,
    and a setting one side has and the other lacks is an error, never silently dropped."""
    values = dataclasses.asdict(params) | {"relay": to_checksum_address(relay_address)}
    inputs: list[dict[str, Any]] = []
    for item in artifact.abi():
        if item["type"] == "constructor":
            inputs = item["inputs"]
    names = [i["name"].strip("_") for i in inputs]
    if set(names) - set(values):  # TODO(H3): strict (!=) once the issue-8 artifact is committed
        raise ConfigError(
            f"the committed TaskNetwork constructor takes {sorted(set(names) - set(values))} that NetworkParams "
            f"lacks and lacks {sorted(set(values) - set(names))}: gridtask and its contract artifact are out "
            f"of step (reinstall gridtask)")
    return [i["type"] for i in inputs], [_abi_value(values[name]) for name in names]


def _abi_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


async def deploy(rpc_url: str, deployer: Identity, relay_address: str, params: NetworkParams) -> str:
    """Deploy and return the contract's checksum address. Settings the constructor refuses
    raise ``ConfigError`` with its reason (found by the gas estimate, so nothing is spent on them)."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    try:
        data = HexStr(artifact.bytecode() + encode(*constructor_args(params, relay_address)).hex())
        sender = to_checksum_address(deployer.address)
        try:  # the estimate is a dry run: settings the constructor refuses cost nothing
            gas = await w3.eth.estimate_gas({"from": sender, "data": data})
        except ContractLogicError as exc:
            raise ConfigError(f"TaskNetwork refused its settings {params}: {exc.message}") from None
        tx = {
            "data": data, "value": 0, "gas": int(gas * DEPLOY_GAS_MARGIN),
            "gasPrice": await w3.eth.gas_price * 2,
            "nonce": await w3.eth.get_transaction_count(sender, "pending"),
            "chainId": await w3.eth.chain_id,
        }
        signed = Account.from_key(deployer.private_key).sign_transaction(tx)
        tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    except ConfigError:
        raise
    except Exception as exc:
        raise ChainError(f"could not deploy TaskNetwork on {rpc_url}: {exc!r}") from exc
    finally:
        await w3.provider.disconnect()
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise ChainError("TaskNetwork deployment reverted")
    return to_checksum_address(receipt["contractAddress"])
