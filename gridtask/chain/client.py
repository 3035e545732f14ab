"""Async access to the ``TaskNetwork`` contract on any EVM JSON-RPC chain.

One ``ChainClient`` sends transactions from one account, through typed methods
(``create_task``, ``submit_score``, ...), each with the gas limit its worst case needs.
Transactions are signed locally (eth-account on coincurve) and nonces are counted
locally, so that a burst of calls needs no round trip each. Every wait and retry goes
through a named policy of ``gridtask.retry``:

- a send that fails because the chain is unreachable is retried with the same signed
  bytes, so it can never happen twice;
- a send refused because the nonce was taken (another process using the same key, or
  a replacement it cannot outbid) is signed afresh with the account's next free nonce,
  with jitter, so two processes sharing a key never wedge each other;
- a sent transaction that vanishes is sent again: with the same bytes while its nonce
  is still free (dropped from the pool, or from a block that a reorg removed), signed
  afresh once another transaction has taken its nonce (then it can never run).

A reverted transaction raises ``TransactionReverted`` with the contract's own reason, read
from the transaction's trace where the provider offers one, else by replaying the call with
its block's number and time (a check such as "validation window not passed" depends on
them). Arguments the ABI cannot take are a ``ValidationError`` before anything is sent.

Log searches start at the contract's deployment block (from the config, or found once
by bisecting ``eth_getCode`` and cached) and ask for the widest block range the
provider accepts, halving it only when refused, so a lookup on a chain with millions of
blocks costs a handful of requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import function_abi_to_4byte_selector, get_abi_input_types, get_abi_output_types, to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import (
    BadFunctionCallOutput,
    BlockNotFound,
    ContractLogicError,
    MismatchedABI,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import RPCEndpoint, TxReceipt

from gridtask import retry
from gridtask.chain import artifact
from gridtask.chain.models import NetworkParams, NodeInfo, TaskDetails, TaskInfo
from gridtask.config import NetworkConfig
from gridtask.exceptions import ChainError, ChainUnreachable, ConfigError, TransactionReverted, ValidationError
from gridtask.keys import Identity
from gridtask.types import GroupOutcome, NodeStatus, TaskState, TaskType

log = logging.getLogger("gridtask.chain")

#: Room for every call that does a bounded amount of work.
GAS_LIMIT = 2_000_000
#: Calls that free a node also let it scan the queue (up to MAX_NODE_MODELS * QUEUE_SCAN
#: tasks, each possibly ended or moved): their worst case needs more room than the common case.
SCANNING_GAS_LIMIT = 8_000_000
FEES_TTL_S = 5.0
#: The suggested tip moves slowly: asked again at most this often (the base fee comes with
#: every block we read anyway).
TIP_TTL_S = 60.0
DEFAULT_TIP_WEI = 10**9
#: How long a transaction whose outcome shows as an event waits for that event before it
#: asks for its receipt (a reverted transaction logs nothing: its receipt says why).
EVENT_CONFIRM_S = 3.0
#: Calls whose success logs an event naming this account's task, so that an application that
#: follows its own events learns the outcome from the event and never polls for the receipt.
CONFIRMED_BY_EVENT = frozenset({"createTask", "startTask", "validateSingleTask"})
#: How long a sent transaction may go unseen (no receipt, unknown to the node) before it is re-sent.
LOST_AFTER_S = 1.0
#: How many times one call is signed afresh after its transaction was replaced.
MAX_RESIGNS = 8
#: Our latest transactions kept to send again if a reorg takes them off the chain.
RECENT_KEPT = 64
#: The contract's limits on what a call carries (``DynArray`` / ``Bytes`` bounds).
MAX_EXCLUDE = 2
GROUP_SIZE = 3
MAX_DISPUTE_CIPHERTEXT = 16_416



def to_bytes32(name: str) -> bytes:
    """A model ID or GPU name as the contract stores it: right-padded ASCII."""
    raw = name.encode()
    if not raw or len(raw) > 32:
        raise ValueError(f"a name on chain must be 1 to 32 bytes: {name!r}")
    return raw.ljust(32, b"\0")


def from_bytes32(raw: bytes) -> str:
    return bytes(raw).rstrip(b"\0").decode(errors="replace")


def _b32(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else to_bytes32(name)


def _gpu(required_gpu: str | bytes) -> bytes:
    """A required GPU as the contract takes it: zero bytes for "any"."""
    return _b32(required_gpu) if required_gpu else bytes(32)


@dataclass(frozen=True)
class ChainEvent:
    """One decoded contract event.

    ``removed`` is True when a reorg took the block that held it off the chain: the event
    did not happen after all (the follower delivers it once more, marked so). A consumer
    that re-reads the chain's state on each event needs nothing else; one that keeps a
    record of events drops the one that was removed.
    """

    name: str
    args: dict[str, Any]
    block_number: int
    transaction_hash: bytes
    log_index: int
    block_hash: bytes = b""
    removed: bool = False

    @property
    def commitment(self) -> bytes | None:
        value = self.args.get("commitment")
        return bytes(value) if value is not None else None

    @property
    def task_keys(self) -> tuple[bytes, ...]:
        """Every task this event is about: its ``commitment`` (the task's key), or the three
        ``keys`` of a ``TaskGroupValidated``; none for a node's own events."""
        if "keys" in self.args:
            return tuple(bytes(k) for k in self.args["keys"])
        return (self.commitment,) if self.commitment is not None else ()

    @property
    def group_outcome(self) -> GroupOutcome | None:
        """How a ``TaskGroupValidated`` ended; None for any other event."""
        return GroupOutcome(int(self.args["outcome"])) if self.name == "TaskGroupValidated" else None

    @property
    def key(self) -> tuple[bytes, int]:
        """What identifies this log: the same log in another block (after a reorg) is another."""
        return (self.block_hash, self.log_index)


class EventCodec:
    """Decodes the contract's logs by topic (web3's public ``process_log``), builds topic filters."""

    def __init__(self, contract: Any) -> None:
        self._by_topic: dict[bytes, Any] = {}
        self._topics: dict[str, bytes] = {}
        for item in contract.abi:
            if item.get("type") != "event":
                continue
            event = getattr(contract.events, item["name"])()
            topic = bytes.fromhex(str(event.topic).removeprefix("0x"))
            self._by_topic[topic] = event
            self._topics[item["name"]] = topic

    def topic(self, name: str) -> bytes:
        return self._topics[name]

    def decode(self, raw: Any) -> ChainEvent | None:
        topics = raw["topics"]
        event = self._by_topic.get(bytes(topics[0])) if topics else None
        if event is None:
            return None
        data = event.process_log(raw)
        return ChainEvent(
            name=data["event"],
            args=dict(data["args"]),
            block_number=int(raw["blockNumber"]),
            transaction_hash=bytes(raw["transactionHash"]),
            log_index=int(raw["logIndex"]),
            block_hash=bytes(raw.get("blockHash") or b""),
            removed=bool(raw.get("removed", False)),
        )


class StreamReceipt(dict[str, Any]):
    """What stands for a receipt when the transaction's outcome was seen as events of the
    account's own event stream (``ChainClient.confirm_by``): ``status`` 1, the transaction's
    hash, block and ``events`` (already decoded); ``logs`` is empty, so code that reads a
    receipt's raw logs finds nothing rather than something half-built."""

    @property
    def events(self) -> list[ChainEvent]:
        return list(self["events"])


#: Given a sent transaction's hash and how long to wait, the events it logged (None: none seen).
EventConfirmer = Callable[[bytes, float], Awaitable[list[ChainEvent] | None]]


@dataclass
class _Sent:
    """One signed transaction in flight, and what is needed to send it again."""

    function: str
    tx: dict[str, Any]
    raw: bytes
    tx_hash: bytes
    sent_at: float = field(default_factory=time.monotonic)


class ChainClient:
    """The contract as seen by one account: typed transactions and views, logs, events."""

    def __init__(
        self,
        rpc_url: str,
        contract_address: str,
        identity: Identity,
        *,
        request_timeout: float = 30.0,
        send_retry_s: float = 60.0,
        deploy_block: int | None = None,
    ) -> None:
        self.rpc_url = rpc_url
        self.identity = identity
        self.address = to_checksum_address(contract_address)
        # No middleware: transactions are built and signed here, and web3's validation layer
        # would ask eth_chainId before every call.
        self.w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout}), middleware=[])
        self.contract = self.w3.eth.contract(address=self.address, abi=artifact.abi())
        self.events = EventCodec(self.contract)
        self._account = Account.from_key(identity.private_key)
        self._send_retry_s = send_retry_s
        self._lock = asyncio.Lock()
        self._nonce: int | None = None
        self._chain_id: int | None = None
        self._fees: tuple[float, dict[str, int]] | None = None
        self._base_fee: tuple[float, int | None] | None = None  # (when seen, base fee of the newest block read)
        self._tip: tuple[float, int] | None = None
        #: Set by a party that follows its own events (the SDK): then ``CONFIRMED_BY_EVENT``
        #: calls return once their event is seen, without polling for a receipt.
        self.confirm_by: EventConfirmer | None = None
        self._deploy_block = deploy_block
        self._log_range: int | None = None  # None: the provider has refused no range yet
        self._recent: dict[int, _Sent] = {}  # nonce -> our latest transactions, to fill gaps after reorgs

    @classmethod
    def from_config(cls, config: NetworkConfig, identity: Identity, **options: Any) -> ChainClient:
        """The client a config names (its deployment block included)."""
        return cls(config.rpc_url, config.contract, identity, deploy_block=config.deploy_block, **options)

    async def __aenter__(self) -> ChainClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.w3.provider.disconnect()

    @property
    def account(self) -> str:
        return to_checksum_address(self.identity.address)

    # ------------------------------------------------------------ low level

    async def rpc(self, awaitable_factory: Any, what: str) -> Any:
        """Run one RPC: a revert becomes ``TransactionReverted``, an error answer ``ChainError``,
        no answer at all ``ChainUnreachable`` (naming the URL)."""
        try:
            return await awaitable_factory()
        except ContractLogicError as exc:
            raise TransactionReverted(_reason(exc), function=what) from exc
        except (ChainError, TransactionNotFound, BlockNotFound):
            raise
        except BadFunctionCallOutput as exc:  # an empty answer: no code at the address
            raise ConfigError(f"{what}: no contract answers at {self.address} on {self.rpc_url}: check the "
                              f"configured address (GRIDTASK_CONTRACT)") from exc
        except Web3RPCError as exc:
            raise ChainError(f"{what} refused by {self.rpc_url}: {_message(exc)}") from exc
        except Exception as exc:  # aiohttp, timeouts, refused connections...
            raise ChainUnreachable(f"chain unreachable at {self.rpc_url} ({what}): {exc!r}") from exc

    async def block_number(self) -> int:
        return int(await self.rpc(lambda: self.w3.eth.block_number, "eth_blockNumber"))

    async def head(self) -> tuple[int, bytes, bytes]:
        """The newest block: its number, hash and parent's hash (one request)."""
        block = await self.rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
        self._saw_block(block)
        return int(block["number"]), bytes(block["hash"]), bytes(block["parentHash"])

    def _saw_block(self, block: Any) -> None:
        """Keep the base fee of a block just read: fees are priced from it, with no request of their own."""
        base = block.get("baseFeePerGas")
        self._base_fee = (time.monotonic(), None if base is None else int(base))

    async def block_hash(self, number: int) -> bytes | None:
        """The hash of block ``number`` on the chain as it is now (None above the head)."""
        try:
            block = await self.rpc(lambda: self.w3.eth.get_block(number), "eth_getBlockByNumber")
        except BlockNotFound:
            return None
        return bytes(block["hash"]) if block else None

    async def get_logs(self, from_block: int, to_block: int, topics: list[Any] | None = None) -> list[ChainEvent]:
        """One ``eth_getLogs`` of this contract's logs (a provider may refuse a wide range)."""
        params: dict[str, Any] = {"address": self.address, "fromBlock": from_block, "toBlock": to_block}
        if topics:
            params["topics"] = topics
        raw = await self.rpc(lambda: self.w3.eth.get_logs(params), "eth_getLogs")  # type: ignore[arg-type]
        return [e for e in (self.events.decode(r) for r in raw) if e is not None]

    async def find_logs(self, topics: list[Any], *, from_block: int | None = None, to_block: int | None = None,
                        first: bool = False) -> list[ChainEvent]:
        """Search from the deployment block (or ``from_block``) to the head (or ``to_block``), in
        as few requests as the provider allows; with ``first``, newest blocks first, stopping at
        the first range with a match."""
        lo = await self.deployment_block() if from_block is None else from_block
        hi = await self.block_number() if to_block is None else to_block
        found: list[ChainEvent] = []
        while lo <= hi:
            span = hi - lo + 1 if self._log_range is None else min(self._log_range, hi - lo + 1)
            a, b = (hi - span + 1, hi) if first else (lo, lo + span - 1)
            try:
                events = await self.get_logs(a, b, topics)
            except ChainUnreachable:
                raise
            except ChainError as exc:  # the provider refused the range: halve it and remember
                if span == 1:
                    raise
                self._log_range = max(1, span // 2)
                log.info("eth_getLogs over %d blocks refused (%s); trying %d", span, exc, self._log_range)
                continue
            if first:
                if events:
                    return events
                hi = a - 1
            else:
                found += events
                lo = b + 1
        return found

    async def deployment_block(self) -> int:
        """The block the contract was deployed in: from the config, else found once by bisecting
        ``eth_getCode`` (about log2(head) requests) and kept."""
        if self._deploy_block is None:
            cached = _DEPLOY_BLOCKS.get((self.rpc_url, self.address))
            self._deploy_block = cached if cached is not None else await self._bisect_deploy_block()
            _DEPLOY_BLOCKS[(self.rpc_url, self.address)] = self._deploy_block
        return self._deploy_block

    async def _bisect_deploy_block(self) -> int:
        async def has_code(block: int) -> bool:
            try:
                code = await self.rpc(lambda: self.w3.eth.get_code(self.address, block), "eth_getCode")
            except ChainUnreachable:
                raise
            except ChainError as exc:
                if "outofrange" in str(exc).lower().replace(" ", ""):
                    return False  # before the chain's first block: nothing was deployed there
                raise
            return len(code) > 0

        lo, hi = 0, await self.block_number()
        if not await has_code(hi):
            raise ChainError(f"no contract at {self.address} on {self.rpc_url}: check the configured address")
        try:
            while lo < hi:
                mid = (lo + hi) // 2
                if await has_code(mid):
                    hi = mid
                else:
                    lo = mid + 1
        except ChainUnreachable:
            raise
        except ChainError as exc:  # a node without the old state cannot tell: search from the start
            log.warning("cannot find the contract's deployment block at %s (%s): log searches start at block 0; "
                        "set deploy_block in the config (GRIDTASK_DEPLOY_BLOCK) to make them cheap",
                        self.rpc_url, exc)
            return 0
        return hi

    # ------------------------------------------------------------ sending

    async def _transact(self, function: str, args: list[Any], *, gas: int, value: int = 0) -> TxReceipt:
        """Send one transaction and wait for its outcome: the events it logged, seen on this
        account's own event stream (``confirm_by``, for ``CONFIRMED_BY_EVENT`` calls), else its
        receipt. A revert raises ``TransactionReverted`` (it logs nothing, so its receipt is
        read once the event did not come)."""
        data = self._encode(function, args)
        for _ in range(MAX_RESIGNS):
            sent = await self._submit(function, data, gas, value)
            if self.confirm_by is not None and function in CONFIRMED_BY_EVENT:
                events = await self.confirm_by(sent.tx_hash, EVENT_CONFIRM_S)
                if events:
                    return StreamReceipt(status=1, transactionHash=sent.tx_hash, logs=[], events=events,  # type: ignore[return-value]
                                         blockNumber=events[0].block_number, blockHash=events[0].block_hash)
            receipt = await self._wait(sent)
            if receipt is not None:
                break
            log.warning("%s: transaction 0x%s was replaced by another of this account; sending afresh",
                        function, sent.tx_hash.hex()[:10])
        else:
            raise ChainError(f"{function}: replaced {MAX_RESIGNS} times by other transactions of "
                             f"{self.account}; is another process using this key without pause?")
        if receipt["status"] != 1:
            raise TransactionReverted(await self._revert_reason(sent.tx, receipt), function=function)
        return receipt

    def _encode(self, function: str, args: list[Any]) -> str:
        try:
            return str(self.contract.encode_abi(function, args=args))
        except MismatchedABI:
            raise _misfit(function, args) from None

    async def _submit(self, function: str, data: str, gas: int, value: int) -> _Sent:
        """Sign with the next nonce and send; re-sign (jittered) while the nonce or fees do not fit."""
        async with self._lock:
            async for attempt in retry.RESIGN.attempts(timeout=self._send_retry_s):
                with attempt:
                    sent = await self._sign(function, data, gas, value)
                    await self._send_raw(sent)
            self._nonce = sent.tx["nonce"] + 1
            self._recent[sent.tx["nonce"]] = sent
            while len(self._recent) > RECENT_KEPT:
                del self._recent[min(self._recent)]
            return sent

    async def _sign(self, function: str, data: str, gas: int, value: int) -> _Sent:
        if self._chain_id is None:
            self._chain_id = int(await self.rpc(lambda: self.w3.eth.chain_id, "eth_chainId"))
        if self._nonce is None:
            self._nonce = await self._transaction_count("pending")
        tx = {
            "to": self.address, "data": data, "value": value, "gas": gas,
            "nonce": self._nonce, "chainId": self._chain_id, **await self._fees_now(),
        }
        raw = bytes(self._account.sign_transaction(tx).raw_transaction)
        return _Sent(function, tx, raw, bytes(self.w3.keccak(raw)))

    async def _transaction_count(self, block: str) -> int:
        return int(await self.rpc(lambda: self.w3.eth.get_transaction_count(self.account, block),  # type: ignore[arg-type]
                                  "eth_getTransactionCount"))

    async def _fees_now(self) -> dict[str, int]:
        """EIP-1559 fees as ``suggested_fees`` prices them, from the base fee of the newest block
        this client read (the event follower reads the head on every poll) and a tip asked at
        most every ``TIP_TTL_S``: no request of its own while blocks are being read. A chain
        without a base fee is priced by ``suggested_fees`` (cached ``FEES_TTL_S``)."""
        now = time.monotonic()
        if self._base_fee is None or now - self._base_fee[0] > FEES_TTL_S:
            self._saw_block(await self.rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber"))
        assert self._base_fee is not None
        base = self._base_fee[1]
        if base is None:  # legacy pricing
            if self._fees is None or now - self._fees[0] > FEES_TTL_S:
                self._fees = (now, await self.rpc(lambda: suggested_fees(self.w3), "eth_gasPrice"))
            return self._fees[1]
        if self._tip is None or now - self._tip[0] > TIP_TTL_S:
            self._tip = (now, await self.rpc(lambda: suggested_tip(self.w3), "eth_maxPriorityFeePerGas"))
        tip = self._tip[1]
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    async def _send_raw(self, sent: _Sent) -> None:
        """Send signed bytes; a transport failure sends the same bytes again (idempotent)."""
        await retry.CHAIN_UNREACHABLE.call(lambda: self._send_once(sent), timeout=self._send_retry_s)

    async def _send_once(self, sent: _Sent) -> None:
        try:
            await self.w3.eth.send_raw_transaction(sent.raw)
            return
        except Exception as exc:
            text = _message(exc).lower()
            if "already known" in text or "already imported" in text:
                return  # an earlier try got through before the failure
            if "nonce too low" in text or "nonce has already been used" in text:
                if await self._known(sent.tx_hash):
                    return  # an earlier try got through before the failure
                self._nonce = None  # another transaction of this account took it: count afresh
                raise retry.Resign(text) from exc
            if "replacement" in text or "already in the pool" in text:
                # Another transaction of this account waits with this nonce: take the next one.
                self._nonce = max(await self._transaction_count("pending"), sent.tx["nonce"] + 1)
                raise retry.Resign(text) from exc
            if "insufficient funds" in text:
                self._nonce = None
                raise ChainError(
                    f"{sent.function}: account {self.identity.address} cannot pay for this transaction "
                    f"(fee, stake or gas): fund it and try again") from exc
            if "underpriced" in text or "fee" in text:
                self._fees = self._base_fee = None  # the base fee moved since we priced: price afresh
                raise retry.Resign(text) from exc
            if "nonce" in text:
                self._nonce = None
                raise ChainError(f"{sent.function}: {_message(exc)}") from exc
            if isinstance(exc, ContractLogicError | Web3RPCError):
                raise ChainError(f"{sent.function} refused by {self.rpc_url}: {_message(exc)}") from exc
            raise ChainUnreachable(f"chain unreachable at {self.rpc_url} ({sent.function}): {exc!r}") from exc

    async def _known(self, tx_hash: bytes) -> bool:
        try:
            await self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            return True
        except Exception:
            return False

    async def _wait(self, sent: _Sent) -> TxReceipt | None:
        """The receipt; None when another transaction took this one's nonce (it can never run)."""
        checked = time.monotonic()

        async def poll() -> TxReceipt | None:
            nonlocal checked
            try:
                return await self.rpc(lambda: self.w3.eth.get_transaction_receipt(sent.tx_hash),  # type: ignore[arg-type]
                                      "eth_getTransactionReceipt")
            except TransactionNotFound:
                if time.monotonic() - checked < LOST_AFTER_S:
                    raise
                checked = time.monotonic()
                mined = await self._transaction_count("latest")
                if await self._known(sent.tx_hash):
                    await self._fill_gap(mined, sent.tx["nonce"])
                    raise
                # Unknown to the node: dropped from the pool or from a reorged block, or replaced.
                if mined > sent.tx["nonce"]:
                    try:  # its nonce is taken; a receipt may have landed meanwhile
                        return await self.w3.eth.get_transaction_receipt(sent.tx_hash)  # type: ignore[arg-type]
                    except TransactionNotFound:
                        return None
                log.info("%s: transaction 0x%s lost; sending it again", sent.function, sent.tx_hash.hex()[:10])
                with contextlib.suppress(retry.Resign):  # another one holds the nonce for now: wait for it
                    await self._send_raw(sent)
                await self._fill_gap(mined, sent.tx["nonce"])
                raise

        try:
            return await retry.RECEIPT_WAIT.call(poll, timeout=self._send_retry_s)
        except (TransactionNotFound, ChainUnreachable) as exc:
            self._nonce = None  # it may have been dropped: never queue behind a gap
            raise ChainError(f"{sent.function}: no receipt for 0x{sent.tx_hash.hex()} within "
                             f"{self._send_retry_s:.0f}s ({exc})") from exc

    async def _fill_gap(self, mined: int, nonce: int) -> None:
        """A transaction waits behind nonces that nothing fills (a reorg took transactions of this
        account off the chain, and the chain did not put them back in its pool): send our own
        transactions for those nonces again, or a no-op (0 wei to ourselves) where we have none."""
        if mined >= nonce:
            return
        async with self._lock:
            if await self._transaction_count("pending") > nonce:
                return  # the nonces below are in the pool: it only has to mine them
            for n in range(mined, nonce):
                earlier = self._recent.get(n)
                if earlier is None:
                    tx = {"to": self.account, "value": 0, "gas": 21_000, "nonce": n, "chainId": self._chain_id,
                          **await self._fees_now()}
                    raw = bytes(self._account.sign_transaction(tx).raw_transaction)
                    earlier = _Sent("no-op", tx, raw, bytes(self.w3.keccak(raw)))
                log.warning("nonce %d of %s is missing (reorg?): sending %s again", n, self.account, earlier.function)
                with contextlib.suppress(ChainError):
                    await self._send_raw(earlier)

    async def _revert_reason(self, tx: dict[str, Any], receipt: TxReceipt) -> str:
        """Why a mined transaction reverted, as exactly as the provider allows: its own trace
        (``debug_traceTransaction``); else the call replayed on the state before its block with
        that block's number and time (checks like "a later block than creation" or "window
        passed" depend on them); else replayed plainly."""
        for find in (self._traced_reason, self._replayed_reason):
            try:
                reason = await find(tx, receipt)
            except Exception as exc:  # the provider lacks the method or the parameter: try the next way
                log.debug("revert reason via %s unavailable: %r", find.__name__, exc)
                continue
            if reason:
                return reason
        return "reverted (reason unavailable)"

    async def _raw(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC request as the provider answers it (a dict with ``result`` or ``error``)."""
        return await self.w3.provider.make_request(RPCEndpoint(method), params)

    async def _traced_reason(self, tx: dict[str, Any], receipt: TxReceipt) -> str:
        answer = await self._raw("debug_traceTransaction",
                                 ["0x" + bytes(receipt["transactionHash"]).hex(), {"tracer": "callTracer"}])
        trace = answer.get("result") or {}
        return _revert_data_reason(trace.get("output")) or str(trace.get("revertReason") or "") or (
            str(trace["error"]) if trace.get("error") not in (None, "execution reverted") else "")

    async def _replayed_reason(self, tx: dict[str, Any], receipt: TxReceipt) -> str:
        number = int(receipt["blockNumber"])
        block = await self.w3.eth.get_block(number)
        call = {"from": self.account, "to": tx["to"], "data": tx["data"], "value": hex(int(tx.get("value", 0)))}
        overrides = {"number": hex(number), "time": hex(int(block["timestamp"]))}
        for params in ([call, hex(number - 1), {}, overrides], [call, hex(number - 1)]):
            error = (await self._raw("eth_call", params)).get("error")
            if error is None:
                return ""  # it would not revert here: the state before it differs from what it met
            reason = _revert_data_reason(error.get("data")) or _strip_reverted(str(error.get("message", "")))
            if "revert" in str(error.get("message", "")).lower() or error.get("data"):
                return reason or "reverted"
        return ""

    # ------------------------------------------------------------ transactions: applications

    async def create_task(
        self, *, task_type: int, commitment: bytes, nonce: bytes, models: Sequence[str | bytes],
        min_vram: int, required_gpu: str | bytes, params_hash: bytes, task_size: int, timeout: int, fee: int,
        any_model: bool = False,
    ) -> TxReceipt:
        """Create a task, paying ``fee`` into escrow (state CREATED); ``start_task``, in a later
        block, selects its node. ``any_model``: the models are alternatives (a node serving any
        one of them runs it) instead of all required; ``TaskCreated`` carries the flag."""
        return await self._transact(
            "createTask", [int(task_type), commitment, nonce, [_b32(m) for m in models], min_vram,
                           _gpu(required_gpu), params_hash, task_size, timeout, bool(any_model)],
            gas=GAS_LIMIT, value=fee)

    async def start_task(
        self, key: bytes, models: Sequence[str | bytes], min_vram: int, required_gpu: str | bytes,
        exclude: Sequence[str] = (), any_model: bool = False,
    ) -> TxReceipt:
        """Select a node for a CREATED task (or queue it), in a block after its creation: the
        creation block's hash, unknown when the task was created, seeds the selection and the
        sampling. The requirements (``any_model`` among them) must be those given at creation;
        ``exclude`` (at most ``MAX_EXCLUDE`` nodes) never run it."""
        if len(exclude) > MAX_EXCLUDE:
            raise ValidationError(f"exclude: at most {MAX_EXCLUDE} nodes per task (got {len(exclude)})")
        return await self._transact(
            "startTask", [key, [_b32(m) for m in models], min_vram, _gpu(required_gpu),
                          [to_checksum_address(a) for a in exclude], bool(any_model)], gas=GAS_LIMIT)

    async def validate_single_task(self, key: bytes, task_id_hash: bytes, nonce: bytes) -> TxReceipt:
        """The creator accepts the node's score of a task that was not sampled, opening its
        commitment with ``task_id_hash`` = keccak(task ID) (``gridtask.crypto.task_id_hash``;
        never the task ID itself, which would publish the result key). The contract checks the
        opening and that the task was not sampled."""
        return await self._transact("validateSingleTask", [key, task_id_hash, nonce], gas=GAS_LIMIT)

    async def validate_task_group(self, task_id_hash: bytes, nonces: Sequence[bytes]) -> TxReceipt:
        """The creator settles a group of three tasks with one task ID, opened by
        ``task_id_hash`` = keccak(task ID) (``nonces[0]`` is the original's): agreeing scores
        are validated, a disagreeing node slashed, or the group aborted and refunded (the
        members' nodes were freed when they scored; the scanning limit is kept as headroom)."""
        if len(nonces) != GROUP_SIZE:
            raise ValidationError(f"nonces: a validation group has exactly {GROUP_SIZE} tasks (got {len(nonces)})")
        return await self._transact("validateTaskGroup", [task_id_hash, list(nonces)], gas=SCANNING_GAS_LIMIT)

    async def dispute_result(self, key: bytes, task_id: bytes, nonce: bytes, ciphertext: bytes) -> TxReceipt:
        """The creator proves that the delivered ciphertext does not decrypt to the committed
        score (within the challenge window): the fee comes back and the node is slashed. Takes
        the task ID itself (the contract derives the result key from it): the one call that
        publishes it, and with it this task's result."""
        if len(ciphertext) > MAX_DISPUTE_CIPHERTEXT:
            raise ValidationError(
                f"ciphertext: at most {MAX_DISPUTE_CIPHERTEXT:,} bytes can be disputed on chain "
                f"(got {len(ciphertext):,}); a larger result cannot be disputed")
        return await self._transact("disputeResult", [key, task_id, nonce, ciphertext], gas=GAS_LIMIT)

    async def claim_unvalidated(self, key: bytes) -> TxReceipt:
        """The node is paid for a score its creator left unvalidated past the validation window
        (it was freed when it scored; the scanning limit is kept as headroom)."""
        return await self._transact("claimUnvalidated", [key], gas=SCANNING_GAS_LIMIT)

    async def cancel_task(self, commitment: bytes) -> TxReceipt:
        """The creator takes back a task still in the queue."""
        return await self._transact("cancelTask", [commitment], gas=GAS_LIMIT)

    async def abort_task(self, commitment: bytes, reason: str) -> TxReceipt:
        """End a task whose stage deadline passed (creator) or that its node gives up; a task
        still running frees its node, which may then take queued work: scanning room."""
        return await self._transact("abortTask", [commitment, reason[:64]], gas=SCANNING_GAS_LIMIT)

    async def withdraw(self) -> TxReceipt:
        """Take out everything ``balanceOf`` owes this account."""
        return await self._transact("withdraw", [], gas=GAS_LIMIT)

    async def withdraw_to(self, recipient: str) -> TxReceipt:
        """Pay what this account is owed to ``recipient`` (an account that can receive ether,
        when this one is a contract without a payable fallback)."""
        return await self._transact("withdrawTo", [to_checksum_address(recipient)], gas=GAS_LIMIT)

    # ------------------------------------------------------------ transactions: nodes

    async def join(self, *, gpu: str | bytes, vram: int, models: Sequence[str | bytes], public_key: bytes,
                   version: int, stake: int) -> TxReceipt:
        """Register with a stake; an idle node takes queued work at once: scanning room."""
        return await self._transact(
            "join", [_b32(gpu), vram, [_b32(m) for m in models], public_key, version],
            gas=SCANNING_GAS_LIMIT, value=stake)

    async def add_models(self, models: Sequence[str | bytes]) -> TxReceipt:
        """This joined node also serves ``models`` (not while leaving; at most
        ``MAX_NODE_MODELS`` in all): selection and the queue see it at once, and an idle node
        takes queued work it can now run, so this needs scanning room. Emits
        ``NodeModelsChanged``."""
        return await self._transact("addModels", [[_b32(m) for m in models]], gas=SCANNING_GAS_LIMIT)

    async def remove_models(self, models: Sequence[str | bytes]) -> TxReceipt:
        """This joined node stops serving ``models`` (each served now; one model must stay): no
        new task of theirs reaches it; a task in hand goes on. Emits ``NodeModelsChanged``."""
        return await self._transact("removeModels", [[_b32(m) for m in models]], gas=GAS_LIMIT)

    async def pause(self) -> TxReceipt:
        """Take no new work: at once when idle, when the current task ends when busy."""
        return await self._transact("pause", [], gas=GAS_LIMIT)

    async def resume(self) -> TxReceipt:
        """Back to idle, taking queued work: scanning room."""
        return await self._transact("resume", [], gas=SCANNING_GAS_LIMIT)

    async def quit(self) -> TxReceipt:
        """Leave selection at once (LEAVING); the stake stays slashable for ``unstake_delay``,
        after which ``withdraw`` pays it out."""
        return await self._transact("quit", [], gas=GAS_LIMIT)

    async def top_up(self, value: int) -> TxReceipt:
        """Add ``value`` wei to this node's stake (a node slashed below the minimum must, to resume)."""
        return await self._transact("topUp", [], gas=GAS_LIMIT, value=value)

    async def take_queued_task(self) -> bool:
        """Claim the best-paying queued task this idle node can run; True if one started."""
        receipt = await self._transact("takeQueuedTask", [], gas=SCANNING_GAS_LIMIT)
        return any(e.name == "TaskStarted" and e.args.get("node") == self.account
                   for e in self.decode_receipt(receipt))

    async def submit_score(self, commitment: bytes, score: bytes, result_hash: bytes) -> TxReceipt:
        """Commit the result's score and the hash of its ciphertext. The node is BUSY only while it
        computes (SPEC8 liveness decision): scoring frees it, and it may take queued work at once,
        so this needs scanning room."""
        return await self._transact("submitScore", [commitment, score, result_hash], gas=SCANNING_GAS_LIMIT)

    async def report_task_error(self, commitment: bytes, code: int) -> TxReceipt:
        """The task's parameters cannot run (refund); frees the node: scanning room."""
        return await self._transact("reportTaskError", [commitment, int(code)], gas=SCANNING_GAS_LIMIT)

    # ------------------------------------------------------------ transactions: the relay

    async def report_result_uploaded(self, commitment: bytes) -> None:
        """The relay holds the committed result: pay the node (freed when it scored)."""
        await self._transact("reportResultUploaded", [commitment], gas=SCANNING_GAS_LIMIT)

    # ------------------------------------------------------------ views

    def _call_data(self, function: str, args: Sequence[Any]) -> tuple[str, list[str]]:
        """A view's calldata (0x-hex) and its output types, encoded with eth_abi from the
        artifact's ABI: no web3 contract machinery per call (it cost ~5 ms of CPU each)."""
        spec = _VIEW_SPECS.get(function)
        if spec is None:
            abi: Any = next((i for i in artifact.abi() if i.get("type") == "function" and i.get("name") == function),
                            None)
            if abi is None:
                raise ValidationError(f"{function}: no such function in the contract's ABI")
            spec = _VIEW_SPECS[function] = (function_abi_to_4byte_selector(abi), get_abi_input_types(abi),
                                            get_abi_output_types(abi))
        selector, inputs, outputs = spec
        if len(args) != len(inputs) or not all(_fits(t, a) for t, a in zip(inputs, args, strict=False)):
            raise _misfit(function, args)  # eth_abi would pad a short bytes32; web3 refused it, and so do we
        try:
            encoded = abi_encode(inputs, list(args))
        except Exception:
            raise _misfit(function, args) from None
        return "0x" + (selector + encoded).hex(), outputs

    def _decode_answer(self, function: str, outputs: list[str], answer: Any) -> Any:
        """A raw eth_call answer as web3 would give it: one value, or a list of them; a revert
        is ``TransactionReverted`` with the contract's reason."""
        error = answer.get("error") if isinstance(answer, dict) else None
        if error is not None:
            text = str(error.get("message", ""))
            if "revert" in text.lower() or error.get("data"):
                raise TransactionReverted(_revert_data_reason(error.get("data")) or _strip_reverted(text) or
                                          "reverted", function=function)
            raise ChainError(f"{function} refused by {self.rpc_url}: {text}")
        raw = bytes.fromhex(str(answer.get("result") or "0x").removeprefix("0x"))
        if not raw and outputs:  # no code at the address answers nothing
            raise ConfigError(f"{function}: no contract answers at {self.address} on {self.rpc_url}: check the "
                              f"configured address (GRIDTASK_CONTRACT)")
        values = abi_decode(outputs, raw)
        return values[0] if len(values) == 1 else list(values)

    def _call_params(self, data: str) -> list[Any]:
        return [{"to": self.address, "data": data}, "latest"]

    async def _view(self, function: str, *args: Any) -> Any:
        data, outputs = self._call_data(function, args)
        answer = await self.rpc(lambda: self._raw("eth_call", self._call_params(data)), function)
        return self._decode_answer(function, outputs, answer)

    async def _views(self, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Several views (``(function, *args)`` each) in one JSON-RPC batch: one round trip.
        A provider that takes no batches gets them concurrently instead, and a failure is
        raised once every one has answered: none is cancelled or left running (web3 takes a
        thread lock around each request's session, and a request cut off there, or still
        running while the client closes, leaves that lock held and the process unable to exit)."""
        encoded = [self._call_data(str(call[0]), call[1:]) for call in calls]
        if len(calls) == 1:
            return [await self._view(*calls[0])]
        what = ", ".join(dict.fromkeys(str(c[0]) for c in calls))
        requests = [(RPCEndpoint("eth_call"), self._call_params(data)) for data, _ in encoded]
        try:
            answers = await self.rpc(lambda: self.w3.provider.make_batch_request(requests), what)
        except ChainUnreachable:
            raise
        except ChainError as exc:  # no batches here: one request each
            log.info("a batch of views was refused (%s); asking one by one", exc)
            answers = None
        if isinstance(answers, list) and len(answers) == len(calls):
            answers = sorted(answers, key=lambda a: int(a.get("id", 0)) if isinstance(a, dict) else 0)
            return [self._decode_answer(str(c[0]), outputs, a)
                    for c, (_, outputs), a in zip(calls, encoded, answers, strict=True)]
        found = await asyncio.gather(*(self._view(*call) for call in calls), return_exceptions=True)
        failed = next((a for a in found if isinstance(a, BaseException)), None)
        if failed is not None:
            raise failed
        return list(found)

    async def get_task(self, commitment: bytes) -> TaskInfo | None:
        """The task under its key on chain (``gridtask.crypto.task_key``); None if there is none."""
        return _task_info(commitment, await self._view("getTask", commitment))

    async def get_tasks(self, keys: Sequence[bytes]) -> list[TaskInfo | None]:
        """Several tasks' records in one round trip (``_views``)."""
        answers = await self._views([("getTask", key) for key in keys])
        return [_task_info(key, answer) for key, answer in zip(keys, answers, strict=True)]

    async def get_node(self, address: str) -> NodeInfo | None:
        """The node's record; for a node that quit, also when its stake is released."""
        status, stake, gpu, vram, public_key, version = await self._view("getNode", to_checksum_address(address))
        if int(status) == 0:
            return None
        leaving = NodeStatus(int(status)) == NodeStatus.LEAVING
        return NodeInfo(
            address=to_checksum_address(address), status=NodeStatus(int(status)), stake=int(stake),
            gpu=from_bytes32(gpu), vram=int(vram), public_key=bytes(public_key), version=int(version),
            release_at=await self.release_at(address) if leaving else 0,
        )

    async def release_at(self, address: str | None = None) -> int:
        """When a node that quit gets its stake back (unix seconds; 0 if it has not quit)."""
        return int(await self._view("release_at", to_checksum_address(address or self.account)))

    async def get_task_info(self, key: bytes) -> TaskDetails:
        """What ``get_task`` leaves out: task type and size, creation block (until started), grouped."""
        task_type, task_size, created, grouped = await self._view("getTaskInfo", key)
        return TaskDetails(task_type=int(task_type), task_size=int(task_size), created_block=int(created),
                           grouped=bool(grouped))

    async def get_node_models(self, address: str) -> list[str]:
        return [from_bytes32(m) for m in await self._view("getNodeModels", to_checksum_address(address))]

    async def balance_of(self, address: str | None = None) -> int:
        return int(await self._view("balanceOf", to_checksum_address(address or self.identity.address)))

    async def model_node_count(self, model: str | bytes) -> int:
        """How many registered nodes serve ``model``."""
        return int(await self._view("model_node_count", _b32(model)))

    async def queued_count(self) -> int:
        return int(await self._view("queuedCount"))

    async def nonce_used(self, nonce: bytes, creator: str | None = None) -> bool:
        """Whether ``creator`` (this account by default) has used ``nonce`` already."""
        return bool(await self._view("nonce_used", to_checksum_address(creator or self.account), nonce))

    async def pause_requested(self, address: str | None = None) -> bool:
        """Whether a busy node asked to pause when its task ends."""
        return bool(await self._view("pauseRequested", to_checksum_address(address or self.account)))

    async def min_stake(self) -> int:
        return int(await self._view("min_stake"))

    async def stake_cap_multiple(self) -> int:
        """Stakes above this multiple of the minimum add no selection weight."""
        return int(await self._view("stake_cap_multiple"))

    async def timeout_bounds(self) -> tuple[int, int]:
        """The stage timeouts the contract accepts: (min, max) seconds."""
        return int(await self._view("min_timeout")), int(await self._view("max_timeout"))

    async def is_sampled(self, key: bytes, task_id_hash: bytes, nonce: bytes) -> bool:
        """Whether a started task was drawn for validation by a group of three: decided by
        keccak(task ID) (the creator's secret, committed before) and its creation block's hash
        (unknown then). Reverts unless ``task_id_hash`` and ``nonce`` open the task's commitment."""
        return bool(await self._view("isSampled", key, task_id_hash, nonce))

    async def network_params(self) -> NetworkParams:
        """Every deploy-time setting, read from the contract (one request each, concurrently)."""
        names = [f.name for f in dataclasses.fields(NetworkParams) if f.name != "similarity_bits"]
        try:
            values = await self._views([(name,) for name in names] + [("similarity_bits", int(t)) for t in TaskType])
        except TransactionReverted as exc:
            # A contract from before issue 8 has no such getter (and no fallback): it reverts bare.
            raise ConfigError(
                f"the contract at {self.address} on {self.rpc_url} does not answer {exc.function}: it is "
                f"not this gridtask's TaskNetwork (an older deployment, or a config file written by an "
                f"older gridtask): start a new devnet, or point the config (GRIDTASK_CONTRACT) at a "
                f"current deployment") from exc
        return NetworkParams(**{n: int(v) for n, v in zip(names, values, strict=False)},
                             similarity_bits=tuple(int(b) for b in values[len(names):]))

    async def relay_address(self) -> str:
        return to_checksum_address(await self._view("relay"))

    async def verifier_address(self) -> str:
        """The ScoreVerifier contract this TaskNetwork asks whether scores agree and results match."""
        return to_checksum_address(await self._view("verifier"))

    def decode_receipt(self, receipt: TxReceipt) -> list[ChainEvent]:
        """The contract's events in one receipt (or those a ``StreamReceipt`` saw)."""
        if isinstance(receipt, StreamReceipt):
            return receipt.events
        return [e for e in (self.events.decode(r) for r in receipt["logs"]
                            if to_checksum_address(r["address"]) == self.address) if e is not None]


async def suggested_fees(w3: AsyncWeb3) -> dict[str, int]:
    """EIP-1559 fees: up to twice the base fee plus the suggested tip (what is paid is the base fee
    plus the tip, so our own offers never feed back into the price, as a legacy gas price of
    "twice the suggestion" would); a chain without a base fee gets its own gas price, as it is."""
    block = await w3.eth.get_block("latest")
    base = block.get("baseFeePerGas")
    if base is None:
        return {"gasPrice": int(await w3.eth.gas_price)}
    tip = await suggested_tip(w3)
    return {"maxFeePerGas": 2 * int(base) + tip, "maxPriorityFeePerGas": tip}


async def suggested_tip(w3: AsyncWeb3) -> int:
    """The chain's suggested priority fee, or 1 gwei where it has no such method."""
    try:
        return int(await w3.eth.max_priority_fee)
    except Exception:
        return DEFAULT_TIP_WEI


# Per view: its selector, input and output types (from the artifact's ABI), built once per process.
_VIEW_SPECS: dict[str, tuple[bytes, list[str], list[str]]] = {}

# Deployment blocks found by bisection, per (RPC URL, contract): found once per process.
_DEPLOY_BLOCKS: dict[tuple[str, str], int] = {}


def _task_info(key: bytes, answer: Sequence[Any]) -> TaskInfo | None:
    creator, node, fee, state, deadline, timeout, score, result_hash = answer
    if int(state) == 0:
        return None
    return TaskInfo(
        commitment=key, creator=to_checksum_address(creator), node=to_checksum_address(node),
        fee=int(fee), state=TaskState(int(state)), deadline=int(deadline), timeout=int(timeout),
        score=bytes(score), result_hash=bytes(result_hash),
    )


def _fits(abi_type: str, value: Any) -> bool:
    """Strict fixed-size bytes: a ``bytesN`` (or an array of them) takes exactly N bytes."""
    base, _, dims = abi_type.partition("[")
    if dims:
        return isinstance(value, list | tuple) and all(_fits(base, v) for v in value)
    size = base.removeprefix("bytes")
    if base.startswith("bytes") and size.isdigit():
        return isinstance(value, bytes | bytearray) and len(value) == int(size)
    return True


def _misfit(function: str, args: Sequence[Any]) -> ValidationError:
    """Arguments the contract's ABI cannot take: named by their sizes, never sent."""
    shown = ", ".join(f"{len(a)} bytes" if isinstance(a, bytes | bytearray) else type(a).__name__ for a in args)
    return ValidationError(f"{function}: the arguments ({shown}) do not fit the contract's ABI: task keys, "
                           f"keccak(task ID), nonces, scores and hashes are 32 bytes each")


def _message(exc: BaseException) -> str:
    """The text of a JSON-RPC error (web3 keeps it in ``args[0]['message']`` or ``message``)."""
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    first = exc.args[0] if exc.args else None
    if isinstance(first, dict) and "message" in first:
        return str(first["message"])
    return str(exc)


def _reason(exc: ContractLogicError) -> str:
    return _strip_reverted(str(exc.message if getattr(exc, "message", None) else exc)) or "reverted"


def _strip_reverted(text: str) -> str:
    return text.removeprefix("execution reverted: ").removeprefix("execution reverted").strip()


ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string): what `assert cond, "reason"` reverts with


def _revert_data_reason(data: object) -> str:
    """The reason string of ``Error(string)`` revert data (hex or bytes); empty when there is none."""
    if isinstance(data, dict):  # some providers nest it: {"data": "0x..."}
        data = data.get("data")
    if isinstance(data, str):
        try:
            data = bytes.fromhex(data.removeprefix("0x"))
        except ValueError:
            return ""
    if not isinstance(data, bytes | bytearray) or not bytes(data).startswith(ERROR_SELECTOR):
        return ""
    try:
        return str(abi_decode(["string"], bytes(data)[4:])[0])
    except Exception:
        return ""
