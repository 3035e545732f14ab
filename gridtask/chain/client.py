"""Async access to the ``TaskNetwork`` contract on any EVM JSON-RPC chain.

One ``ChainClient`` sends transactions from one account. Transactions are signed
locally (eth-account on coincurve), nonces are counted locally so that a burst of
calls needs no round trip each, and a send that fails because the chain is
unreachable is retried with the same signed bytes, so it can never happen twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_utils import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3._utils.events import get_event_data
from web3.exceptions import ContractLogicError, TransactionNotFound
from web3.types import TxReceipt

from gridtask.chain import artifact
from gridtask.chain.models import NodeInfo, TaskInfo
from gridtask.exceptions import ChainError, TransactionReverted
from gridtask.keys import Identity
from gridtask.types import NodeStatus, TaskState

log = logging.getLogger("gridtask.chain")

GAS_LIMIT = 2_000_000
# Calls that free a node also let it scan the queue (up to MAX_NODE_MODELS * QUEUE_SCAN tasks,
# each possibly ended or moved): their worst case needs more room than the common case uses.
SCANNING_CALLS = {"reportResultUploaded", "abortTask", "reportTaskError", "join", "resume", "takeQueuedTask"}
SCANNING_GAS_LIMIT = 8_000_000
MAX_LOG_RANGE = 5_000
FEES_TTL_S = 5.0
DEFAULT_TIP_WEI = 10**9
RECEIPT_POLL_S = 0.02


def to_bytes32(name: str) -> bytes:
    """A model ID or GPU name as the contract stores it: right-padded ASCII."""
    raw = name.encode()
    if not raw or len(raw) > 32:
        raise ValueError(f"a name on chain must be 1 to 32 bytes: {name!r}")
    return raw.ljust(32, b"\0")


def from_bytes32(raw: bytes) -> str:
    return bytes(raw).rstrip(b"\0").decode(errors="replace")


@dataclass(frozen=True)
class ChainEvent:
    """One decoded contract event."""

    name: str
    args: dict[str, Any]
    block_number: int
    transaction_hash: bytes
    log_index: int

    @property
    def commitment(self) -> bytes | None:
        value = self.args.get("commitment")
        return bytes(value) if value is not None else None


class EventCodec:
    """Decodes the contract's logs by topic, and builds topic filters."""

    def __init__(self, abi: list[dict[str, Any]], w3: AsyncWeb3) -> None:
        self._codec = w3.codec
        self._by_topic: dict[bytes, dict[str, Any]] = {}
        self._topics: dict[str, bytes] = {}
        for item in abi:
            if item.get("type") != "event":
                continue
            sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            topic = bytes(w3.keccak(text=sig))
            self._by_topic[topic] = item
            self._topics[item["name"]] = topic

    def topic(self, name: str) -> bytes:
        return self._topics[name]

    def decode(self, raw: Any) -> ChainEvent | None:
        topics = raw["topics"]
        abi = self._by_topic.get(bytes(topics[0])) if topics else None
        if abi is None:
            return None
        data = get_event_data(self._codec, abi, raw)
        return ChainEvent(
            name=abi["name"],
            args=dict(data["args"]),
            block_number=int(raw["blockNumber"]),
            transaction_hash=bytes(raw["transactionHash"]),
            log_index=int(raw["logIndex"]),
        )


class ChainClient:
    """The contract as seen by one account: transactions, views and event decoding."""

    def __init__(
        self,
        rpc_url: str,
        contract_address: str,
        identity: Identity,
        *,
        request_timeout: float = 30.0,
        send_retry_s: float = 60.0,
    ) -> None:
        self.rpc_url = rpc_url
        self.identity = identity
        self.address = to_checksum_address(contract_address)
        # No middleware: transactions are built and signed here, and web3's validation layer
        # would ask eth_chainId before every call.
        self.w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout}), middleware=[])
        self.contract = self.w3.eth.contract(address=self.address, abi=artifact.abi())
        self.events = EventCodec(artifact.abi(), self.w3)
        self._account = Account.from_key(identity.private_key)
        self._send_retry_s = send_retry_s
        self._lock = asyncio.Lock()
        self._nonce: int | None = None
        self._chain_id: int | None = None
        self._fees: tuple[float, dict[str, int]] | None = None

    async def __aenter__(self) -> ChainClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.w3.provider.disconnect()

    # ------------------------------------------------------------ low level

    async def rpc(self, awaitable_factory: Any, what: str) -> Any:
        """Run one RPC, turning transport failures into a ChainError that names the URL."""
        try:
            return await awaitable_factory()
        except ContractLogicError as exc:
            raise TransactionReverted(_reason(exc), function=what) from exc
        except (ChainError, TransactionNotFound):
            raise
        except Exception as exc:  # aiohttp, timeouts, refused connections...
            raise ChainError(f"chain unreachable at {self.rpc_url} ({what}): {exc!r}") from exc

    async def block_number(self) -> int:
        return int(await self.rpc(lambda: self.w3.eth.block_number, "eth_blockNumber"))

    async def get_logs(self, from_block: int, to_block: int, topics: list[Any] | None = None) -> list[ChainEvent]:
        params: dict[str, Any] = {"address": self.address, "fromBlock": from_block, "toBlock": to_block}
        if topics:
            params["topics"] = topics
        raw = await self.rpc(lambda: self.w3.eth.get_logs(params), "eth_getLogs")  # type: ignore[arg-type]
        return [e for e in (self.events.decode(r) for r in raw) if e is not None]

    async def find_logs(self, topics: list[Any], *, from_block: int = 0, first: bool = False) -> list[ChainEvent]:
        """Search the whole chain in ranges that RPC providers accept; with ``first``,
        newest ranges first and stop at the first match."""
        head = await self.block_number()
        ranges = [(lo, min(lo + MAX_LOG_RANGE - 1, head)) for lo in range(from_block, head + 1, MAX_LOG_RANGE)]
        found: list[ChainEvent] = []
        for lo, hi in reversed(ranges) if first else ranges:
            events = await self.get_logs(lo, hi, topics)
            if first and events:
                return events
            found += events
        return found

    async def transact(self, function: str, *args: Any, value: int = 0) -> TxReceipt:
        """Send one transaction and wait for it; a revert raises ``TransactionReverted``."""
        async with self._lock:
            raw, tx = await self._sign(function, args, value)
            try:
                tx_hash = await self._send(raw, function)
            except _Underpriced:  # the base fee moved since we priced: price afresh, once
                self._fees = None
                raw, tx = await self._sign(function, args, value)
                tx_hash = await self._send(raw, function)
            except _StaleNonce:  # the account was used elsewhere: count afresh, once
                self._nonce = None
                raw, tx = await self._sign(function, args, value)
                tx_hash = await self._send(raw, function)
            self._nonce = tx["nonce"] + 1
        try:
            receipt = await self._wait(tx_hash, function)
        except ChainError:
            self._nonce = None  # it may have been dropped: never queue behind a gap
            raise
        if receipt["status"] != 1:
            raise TransactionReverted(await self._revert_reason(tx, receipt), function=function)
        return receipt

    async def _sign(self, function: str, args: Iterable[Any], value: int) -> tuple[bytes, dict[str, Any]]:
        if self._chain_id is None:
            self._chain_id = int(await self.rpc(lambda: self.w3.eth.chain_id, "eth_chainId"))
        if self._nonce is None:
            self._nonce = int(await self.rpc(
                lambda: self.w3.eth.get_transaction_count(to_checksum_address(self.identity.address), "pending"),
                "eth_getTransactionCount"))
        data = self.contract.encode_abi(function, args=list(args))
        gas = SCANNING_GAS_LIMIT if function in SCANNING_CALLS else GAS_LIMIT
        tx = {
            "to": self.address, "data": data, "value": value, "gas": gas,
            "nonce": self._nonce, "chainId": self._chain_id, **await self._fees_now(),
        }
        signed = self._account.sign_transaction(tx)
        return bytes(signed.raw_transaction), tx

    async def _fees_now(self) -> dict[str, int]:
        """EIP-1559 fees: up to twice the base fee plus the suggested tip (what is paid is the
        base fee plus the tip, so our own offers never feed back into the price); a chain
        without a base fee gets its own gas price, as it is."""
        now = time.monotonic()
        if self._fees is None or now - self._fees[0] > FEES_TTL_S:
            block = await self.rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
            base = block.get("baseFeePerGas")
            if base is None:
                fees = {"gasPrice": int(await self.rpc(lambda: self.w3.eth.gas_price, "eth_gasPrice"))}
            else:
                try:
                    tip = int(await self.w3.eth.max_priority_fee)
                except Exception:
                    tip = DEFAULT_TIP_WEI
                fees = {"maxFeePerGas": 2 * int(base) + tip, "maxPriorityFeePerGas": tip}
            self._fees = (now, fees)
        return self._fees[1]

    async def _send(self, raw: bytes, function: str) -> bytes:
        """Send signed bytes; on a transport failure send the same bytes again (idempotent)."""
        deadline = time.monotonic() + self._send_retry_s
        tx_hash = bytes(self.w3.keccak(raw))
        while True:
            try:
                return bytes(await self.w3.eth.send_raw_transaction(raw))
            except Exception as exc:
                text = str(exc).lower()
                if "already known" in text:
                    return tx_hash  # the first attempt got through before the failure
                if "nonce too low" in text:
                    if await self._known(tx_hash):
                        return tx_hash  # the first attempt got through before the failure
                    raise _StaleNonce(text) from exc
                if "nonce" in text:
                    self._nonce = None  # someone else used this account: resync next time
                    raise ChainError(f"{function}: {exc}") from exc
                if "insufficient funds" in text:
                    self._nonce = None
                    raise ChainError(
                        f"{function}: account {self.identity.address} cannot pay for this transaction "
                        f"(fee, stake or gas): fund it and try again") from exc
                if "fee" in text or "underpriced" in text:
                    raise _Underpriced(text) from exc
                if isinstance(exc, ContractLogicError) or time.monotonic() > deadline:
                    raise ChainError(f"chain unreachable at {self.rpc_url} ({function}): {exc!r}") from exc
                log.warning("send %s failed (%r); retrying", function, exc)
                await asyncio.sleep(0.5)

    async def _known(self, tx_hash: bytes) -> bool:
        try:
            await self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            return True
        except Exception:
            return False

    async def _wait(self, tx_hash: bytes, function: str) -> TxReceipt:
        deadline = time.monotonic() + self._send_retry_s
        delay = RECEIPT_POLL_S
        while True:
            try:
                return await self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                pass
            except Exception as exc:
                log.warning("receipt of %s unavailable (%r); retrying", function, exc)
            if time.monotonic() > deadline:
                raise ChainError(f"{function}: no receipt for 0x{tx_hash.hex()} within {self._send_retry_s:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    async def _revert_reason(self, tx: dict[str, Any], receipt: TxReceipt) -> str:
        call = {k: tx[k] for k in ("to", "data", "value")} | {"from": self.identity.address}
        try:
            await self.w3.eth.call(call, receipt["blockNumber"] - 1)  # type: ignore[arg-type]
        except ContractLogicError as exc:
            return _reason(exc)
        except Exception:
            pass
        return "reverted (reason unavailable)"

    # ------------------------------------------------------------ views

    async def call(self, function: str, *args: Any) -> Any:
        fn = getattr(self.contract.functions, function)(*args)
        return await self.rpc(lambda: fn.call(), function)

    async def get_task(self, commitment: bytes) -> TaskInfo | None:
        creator, node, fee, state, deadline, timeout, score, result_hash = await self.call("getTask", commitment)
        if int(state) == 0:
            return None
        return TaskInfo(
            commitment=commitment, creator=to_checksum_address(creator), node=to_checksum_address(node),
            fee=int(fee), state=TaskState(int(state)), deadline=int(deadline), timeout=int(timeout),
            score=bytes(score), result_hash=bytes(result_hash),
        )

    async def get_node(self, address: str) -> NodeInfo | None:
        status, stake, gpu, vram, public_key, version = await self.call("getNode", to_checksum_address(address))
        if int(status) == 0:
            return None
        return NodeInfo(
            address=to_checksum_address(address), status=NodeStatus(int(status)), stake=int(stake),
            gpu=from_bytes32(gpu), vram=int(vram), public_key=bytes(public_key), version=int(version),
        )

    async def balance_of(self, address: str | None = None) -> int:
        return int(await self.call("balanceOf", to_checksum_address(address or self.identity.address)))

    # ------------------------------------------------------------ relay's one transaction

    async def report_result_uploaded(self, commitment: bytes) -> None:
        await self.transact("reportResultUploaded", commitment)


class _StaleNonce(ChainError):
    """Our nonce was used by another transaction of this account: re-sign with a fresh one."""


class _Underpriced(ChainError):
    """The chain refused the fees offered (the base fee rose): re-sign with fresh fees."""


def _reason(exc: ContractLogicError) -> str:
    text = str(exc.message if getattr(exc, "message", None) else exc)
    return text.removeprefix("execution reverted: ").removeprefix("execution reverted").strip() or "reverted"
