"""Deploy the committed ``TaskNetwork`` bytecode: no compiler needed."""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import encode
from eth_account import Account
from eth_typing import HexStr
from eth_utils import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import ContractLogicError

from gridtask.chain import artifact
from gridtask.exceptions import ChainError, ConfigError
from gridtask.keys import Identity

ETHER = 10**18
DEPLOY_GAS = 5_000_000


@dataclass(frozen=True)
class NetworkParams:
    """The contract's deploy-time settings. Their bounds are the constructor's (e.g.
    ``max_timeout`` at most 2**32 - 1 s); `deploy` reports a refusal with its reason."""

    min_stake: int = ETHER
    stake_cap_multiple: int = 10
    min_timeout: int = 5
    max_timeout: int = 24 * 3600


async def deploy(rpc_url: str, deployer: Identity, relay_address: str, params: NetworkParams) -> str:
    """Deploy and return the contract's checksum address. Settings the constructor refuses
    raise ``ConfigError`` with its reason (a dry run first, so nothing is spent on them)."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    try:
        args = encode(
            ["uint256", "uint256", "uint256", "uint256", "address"],
            [params.min_stake, params.stake_cap_multiple, params.min_timeout, params.max_timeout,
             to_checksum_address(relay_address)],
        )
        data = HexStr(artifact.bytecode() + args.hex())
        sender = to_checksum_address(deployer.address)
        try:
            await w3.eth.call({"from": sender, "data": data, "gas": DEPLOY_GAS})
        except ContractLogicError as exc:
            raise ConfigError(f"TaskNetwork refused its settings {params}: {exc.message}") from None
        tx = {
            "data": data, "value": 0, "gas": DEPLOY_GAS,
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
