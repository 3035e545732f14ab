"""OpenGPU's client API (``ogpu.client``) on gridtask: sources, tasks, responses, watchers.

    import gridtask.sdk.opengpu as ogpu
    ogpu.client.ChainConfig.set_chain(ogpu.client.ChainId.DEVNET)
    task = ogpu.client.publish_task(ogpu.client.TaskInfo(source=addr, config=ogpu.client.TaskInput(
        function_name="text2text", data={...}), expiryTime=int(time.time()) + 600, payment=10**15))

How it maps (docs in README "OpenGPU sources"):

- A **source** is registered in the ``SourceRegistry`` contract (its address derived from the
  owner and a nonce); its code is a content-addressed bundle on the relay with a manifest of
  each ``@expose`` function's input and output JSON schema. ``ImageEnvironments(cpu=PATH)``
  names the code: a local directory (``main.py`` + anything it needs) or one ``.py`` file.
- A **task** is one gridtask task (``TaskType.SOURCE``, model ``limits.source_model(source)``)
  driven by this process's ``gridtask.sdk.Client`` on a background event loop: parameters go
  sealed to the node this process learns of, so **this process must stay up until the task
  ends** (``Task.wait()``; at exit it waits for its unfinished tasks, up to their expiry).
  A task's address is its key on chain (0x + 64 hex digits).
- ``expiryTime`` becomes the task's stage timeout: a task no node answered by then is aborted
  by the SDK, and its payment refunded (``EXPIRED``).
- ``FIRST_RESPONSE``: the one task's checked result finalizes it and pays its node.
  ``MANUAL_CONFIRMATION``: ``TaskInfo.responses`` tasks (2 by default) run the same call on
  different nodes; each is a ``Response``, paid once delivered (gridtask never shows a result
  before it is paid for, so "pay only the confirmed one" would let a creator take every answer
  and pay one), and ``confirm()`` records the chosen one on chain (``SourceRegistry.
  confirmResponse``), which makes the task ``FINALIZED``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, ClassVar, TypeVar

from eth_utils import to_checksum_address
from pydantic import BaseModel

from gridtask.chain import artifact
from gridtask.chain.client import ChainClient, EventCodec
from gridtask.config import NetworkConfig, load_config
from gridtask.exceptions import (
    ChainError,
    ConfigError,
    TaskAborted,
    TaskErrored,
    TaskFailed,
    TaskTimeout,
    TransactionReverted,
    ValidationError,
)
from gridtask.keys import Identity
from gridtask.limits import check_source_call, source_model
from gridtask.sdk import Client, TaskHandle
from gridtask.sdk.opengpu.errors import (
    ExpiryTooLongError,
    InsufficientBalanceError,
    NotSourceOwnerError,
    PaymentBelowMinimumError,
    ResponseAlreadyConfirmedError,
    SourceInactiveError,
    SourceNotFoundError,
    TaskAlreadyFinalizedError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotFoundError,
    TxReceiptTimeoutError,
)
from gridtask.sdk.opengpu.manifest import check_call, pack_source, read_manifest
from gridtask.sdk.opengpu.registry import REGISTRY, SourceStatus, is_registered, source_record
from gridtask.types import TaskState, TaskType

log = logging.getLogger("gridtask.sdk.opengpu")
T = TypeVar("T")

DEFAULT_RESPONSES = 2
"""How many nodes answer a MANUAL_CONFIRMATION task unless ``TaskInfo.responses`` says."""
GAS_RESERVE = 10**16
"""What a task's transactions may cost on top of its payment (the balance check keeps it free)."""
ZERO = bytes(32)

# ---------------------------------------------------------------- names ogpu users know


class ChainId(Enum):
    """Which network: gridtask reads it from its config (``~/.gridtask/config.json``, written by
    the devnet, or ``GRIDTASK_*``); OpenGPU's names are kept so their code runs unchanged."""

    DEVNET = "devnet"
    OGPU_TESTNET = "ogpu-testnet"
    OGPU_MAINNET = "ogpu-mainnet"


class ChainConfig:
    """The network the module-level functions use (ogpu's ``ChainConfig``)."""

    _chain: ClassVar[ChainId] = ChainId.DEVNET
    _config: ClassVar[NetworkConfig | None] = None

    @classmethod
    def set_chain(cls, chain_id: ChainId) -> None:
        """Select the network (every ``ChainId`` is the configured one; see ``ChainId``)."""
        if not isinstance(chain_id, ChainId):
            raise ConfigError(f"set_chain: a ChainId (got {chain_id!r})")
        cls._chain = chain_id

    @classmethod
    def get_chain(cls) -> ChainId:
        return cls._chain

    @classmethod
    def set_config(cls, config: NetworkConfig | None) -> None:
        """Use this network config instead of the config file (tests, several networks)."""
        cls._config = config

    @classmethod
    def config(cls) -> NetworkConfig:
        config = cls._config or load_config()
        if not config.source_registry:
            raise ConfigError("this network has no SourceRegistry (source_registry in the config, or "
                              "GRIDTASK_SOURCE_REGISTRY): start one with `gridtask devnet`")
        return config


class DeliveryMethod(IntEnum):
    """How a task's response is chosen (ogpu's numbering)."""

    MANUAL_CONFIRMATION = 0
    FIRST_RESPONSE = 1


class TaskStatus(IntEnum):
    """ogpu's task statuses, and gridtask's FAILED: the node refused the call (an unknown
    function, data its input model refused, a sandbox limit); the payment was refunded."""

    NEW = 0
    ATTEMPTED = 1
    RESPONDED = 2
    CANCELED = 3
    EXPIRED = 4
    FINALIZED = 5
    FAILED = 6


class ResponseStatus(IntEnum):
    SUBMITTED = 0
    CONFIRMED = 1


class Environment(IntEnum):
    CPU = 1
    NVIDIA = 2
    AMD = 4


@dataclass
class ImageEnvironments:
    """Where the source's code is, per environment: a local directory or ``.py`` file (packed
    into one bundle), or ``bundle:<sha256>`` of one already on the relay. Every non-empty field
    must name the same code (gridtask runs one bundle; the fields say where it may run)."""

    cpu: str = ""
    nvidia: str = ""
    amd: str = ""


@dataclass
class SourceInfo:
    """What ``publish_source`` registers (ogpu's fields)."""

    name: str
    description: str
    logoUrl: str  # noqa: N815 (ogpu's name)
    imageEnvs: ImageEnvironments  # noqa: N815
    minPayment: int  # noqa: N815
    minAvailableLockup: int = 0  # noqa: N815
    maxExpiryDuration: int = 86400  # noqa: N815
    deliveryMethod: DeliveryMethod = DeliveryMethod.FIRST_RESPONSE  # noqa: N815


@dataclass
class TaskInput:
    """Which function to call, with what data (a pydantic model or a dict)."""

    function_name: str
    data: BaseModel | dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        data = self.data.model_dump(mode="json") if isinstance(self.data, BaseModel) else self.data
        return {"function_name": self.function_name, "data": data}


@dataclass
class TaskInfo:
    """What ``publish_task`` publishes (ogpu's fields; ``responses``: gridtask's, how many nodes
    answer a MANUAL_CONFIRMATION task)."""

    source: str
    config: TaskInput
    expiryTime: int  # noqa: N815
    payment: int
    responses: int = DEFAULT_RESPONSES


@dataclass(frozen=True)
class SourceParams:
    """A source as the registry holds it."""

    address: str
    client: str
    bundleHash: str  # noqa: N815
    name: str
    description: str
    logoUrl: str  # noqa: N815
    imageEnvironments: int  # noqa: N815
    minPayment: int  # noqa: N815
    minAvailableLockup: int  # noqa: N815
    maxExpiryDuration: int  # noqa: N815
    deliveryMethod: DeliveryMethod  # noqa: N815
    status: SourceStatus
    lastUpdateTime: int  # noqa: N815


@dataclass(frozen=True)
class TaskSnapshot:
    address: str
    source: str
    status: TaskStatus
    payment: int
    expiry_time: int
    delivery_method: DeliveryMethod
    attempt_count: int
    winning_provider: str | None
    error: str | None


# ---------------------------------------------------------------- the registry contract


class _Registry(ChainClient):
    """The SourceRegistry as seen by one account (a ChainClient aimed at the other contract:
    the same signing, nonce and re-signing rules as every gridtask transaction)."""

    def __init__(self, config: NetworkConfig, identity: Identity) -> None:
        super().__init__(config.rpc_url, config.source_registry, identity)
        self.contract = self.w3.eth.contract(address=self.address, abi=artifact.abi(REGISTRY))
        self.events = EventCodec(self.contract)  # its logs are the registry's events

    async def source(self, address: str) -> SourceParams:
        r = source_record(await self.contract.functions.sources(to_checksum_address(address)).call())
        if not is_registered(r):
            raise SourceNotFoundError(f"no source at {address} in the SourceRegistry {self.address}")
        return SourceParams(to_checksum_address(address), r["owner"], "0x" + bytes(r["bundleHash"]).hex(), r["name"],
                            r["description"], r["logoUrl"], r["imageEnvironments"], r["minPayment"],
                            r["minAvailableLockup"], r["maxExpiryDuration"], DeliveryMethod(r["deliveryMethod"]),
                            SourceStatus(r["status"]), r["lastUpdateTime"])

    async def transact(self, function: str, *args: Any) -> Any:
        return await self._transact(function, list(args), gas=600_000)

    async def confirmed(self, creator: str, task: bytes) -> bytes:
        return bytes(await self.contract.functions.confirmedResponse(creator, task).call())

    async def next_address(self) -> str:
        nonce = await self.contract.functions.sourceNonce(self.account).call()
        return str(await self.contract.functions.sourceAddress(self.account, nonce).call())


# ---------------------------------------------------------------- records of this process


@dataclass
class _ResponseRecord:
    key: str
    task: str
    node: str
    output: dict[str, Any]
    at: int


@dataclass
class _TaskRecord:
    address: str
    source: str
    function: str
    payment: int
    expiry: int
    delivery: DeliveryMethod
    handles: list[TaskHandle] = field(default_factory=list)
    status: TaskStatus = TaskStatus.NEW
    attempts: dict[str, str] = field(default_factory=dict)  # member key -> node
    responses: list[_ResponseRecord] = field(default_factory=list)
    confirmed: str | None = None
    error: str | None = None
    error_code: int = 0
    refunded: int = 0
    canceled: bool = False
    running: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _Runtime:
    """One background event loop with one open ``Client`` per network and key: ogpu's functions
    are sync, and a gridtask task needs its creator online to seal its parameters to the node."""

    _instances: ClassVar[dict[tuple[str, str], _Runtime]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ogpu-runtime", daemon=True)
        self.thread.start()
        self.tasks: dict[str, _TaskRecord] = {}
        self._by_member: dict[str, _TaskRecord] = {}
        self._manifests: dict[str, dict[str, Any]] = {}
        self.client = Client(config=config, event_hooks={"step": [self._on_step]})
        self.registry = _Registry(config, self.client.identity)
        self.run(self.client.open())

    @classmethod
    def get(cls, private_key: str | None = None) -> _Runtime:
        config = ChainConfig.config()
        if private_key:
            config = config.model_copy(update={"private_key": private_key})
        key = (config.rpc_url + config.source_registry, str(Identity.from_hex(config.private_key).address))
        with cls._lock:
            if key not in cls._instances:
                cls._instances[key] = cls(config)
            return cls._instances[key]

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run on the runtime's loop and wait (from any thread, or any other event loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # ------------------------------------------------------------ sources

    async def publish_source(self, info: SourceInfo) -> str:
        bundle_hash = await self._bundle_of(info.imageEnvs)
        envs = _environments(info.imageEnvs)
        receipt = await self.registry.transact(
            "registerSource", bytes.fromhex(bundle_hash), info.name, info.description, info.logoUrl, envs,
            info.minPayment, info.minAvailableLockup, info.maxExpiryDuration, int(info.deliveryMethod))
        address = _published_address(self.registry, receipt)
        log.info("source %s published (bundle %s)", address, bundle_hash[:12])
        return address

    async def update_source(self, address: str, info: SourceInfo) -> None:
        current = await self.registry.source(address)
        if current.client.lower() != self.client.identity.address.lower():
            raise NotSourceOwnerError(f"source {address} is {current.client}'s; only its owner may change it")
        bundle_hash = await self._bundle_of(info.imageEnvs)
        envs = _environments(info.imageEnvs)
        await self._registry_call("updateSource", to_checksum_address(address), bytes.fromhex(bundle_hash),
                                  info.name, info.description, info.logoUrl, envs, info.minPayment,
                                  info.minAvailableLockup, info.maxExpiryDuration, int(info.deliveryMethod))

    async def inactivate_source(self, address: str) -> None:
        await self._registry_call("inactivateSource", to_checksum_address(address))

    async def _registry_call(self, function: str, *args: Any) -> Any:
        try:
            return await self.registry.transact(function, *args)
        except TransactionReverted as exc:
            if "not the owner" in str(exc):
                raise NotSourceOwnerError(f"{function}: only the source's owner may do this") from None
            if "inactive" in str(exc):
                raise SourceInactiveError(f"{function}: the source is inactive") from None
            raise

    async def _bundle_of(self, envs: ImageEnvironments) -> str:
        named = {v for v in (envs.cpu, envs.nvidia, envs.amd) if v}
        if len(named) != 1:
            raise ValidationError("imageEnvs: name the source's code (a directory or .py file, or bundle:<sha256>) "
                                  f"in at least one field, the same in each (got {sorted(named)})")
        where = named.pop()
        if where.startswith("bundle:"):
            bundle_hash = where.removeprefix("bundle:")
            read_manifest(await self.client.relay.get_bundle(bundle_hash))  # it is there, and a source's
            return bundle_hash
        bundle, manifest = await asyncio.to_thread(pack_source, where)
        bundle_hash = str(await self.client.relay.put_bundle(bundle))
        self._manifests[bundle_hash] = manifest
        return bundle_hash

    async def manifest(self, bundle_hash: str) -> dict[str, Any]:
        if bundle_hash not in self._manifests:
            self._manifests[bundle_hash] = read_manifest(await self.client.relay.get_bundle(bundle_hash))
        return self._manifests[bundle_hash]

    # ------------------------------------------------------------ tasks

    async def publish_task(self, info: TaskInfo, receipt_timeout: float) -> _TaskRecord:
        """Every check first (nothing is sent until all pass), then the task(s) on chain."""
        call = info.config.to_dict()
        function, data = call["function_name"], call["data"]
        if not isinstance(info.payment, int) or isinstance(info.payment, bool) or info.payment <= 0:
            raise ValidationError(f"payment: a positive integer number of wei (got {info.payment!r})")
        now = int(time.time())
        if info.expiryTime <= now:
            raise TaskExpiredError("(not published)", info.expiryTime)
        params = await self.registry.source(info.source)
        if params.status != SourceStatus.ACTIVE:
            raise SourceInactiveError(f"source {info.source} was inactivated by its owner: it takes no new tasks")
        if info.payment < params.minPayment:
            raise PaymentBelowMinimumError(params.address, info.payment, params.minPayment)
        if info.expiryTime - now > params.maxExpiryDuration:
            raise ExpiryTooLongError(f"expiryTime is {info.expiryTime - now} s away, over source {params.address}'s "
                                     f"maxExpiryDuration of {params.maxExpiryDuration} s; nothing was sent")
        check_call(await self.manifest(params.bundleHash.removeprefix("0x")), function, data, params.address)
        inputs = {"source": params.address, "function": function, "data": data}
        check_source_call(inputs)
        count = 1 if params.deliveryMethod == DeliveryMethod.FIRST_RESPONSE else info.responses
        if not isinstance(count, int) or count < 1:
            raise ValidationError(f"responses: at least 1 (got {count!r})")
        required = info.payment * count + GAS_RESERVE
        available = int(await self.client.chain.w3.eth.get_balance(to_checksum_address(self.client.identity.address)))
        if available < required:
            raise InsufficientBalanceError(self.client.identity.address, required, available)
        network = await self.client.chain.network_params()
        stage = min(max(info.expiryTime - now, network.min_timeout), network.max_timeout)
        model = source_model(params.address)
        handles: list[TaskHandle] = []
        for _ in range(count):
            try:
                handles.append(await asyncio.wait_for(
                    self.client.submit(TaskType.SOURCE, model, inputs, fee=info.payment, stage_timeout=stage),
                    receipt_timeout))
            except TimeoutError:
                raise TxReceiptTimeoutError(f"publish_task on source {params.address}", receipt_timeout) from None
        record = _TaskRecord(handles[0].task_id, params.address, function, info.payment, info.expiryTime,
                             params.deliveryMethod, handles)
        self.tasks[record.address] = record
        for handle in handles:
            self._by_member[handle.task_id] = record
            if handle.node and int(handle.node, 16):  # started at once, before the record existed
                record.attempts[handle.task_id] = handle.node
                record.status = TaskStatus.ATTEMPTED
            record.running += 1
            self.loop.create_task(self._drive(record, handle))
        return record

    async def _drive(self, record: _TaskRecord, handle: TaskHandle) -> None:
        """Follow one task on chain to its end (``Client.result``: upload, validate, download,
        check), and keep what it says on the record."""
        wait = max(record.expiry - time.time(), 1) + 4 * handle.stage_timeout
        try:
            output = await self.client.result(handle, timeout=wait)
            record.responses.append(_ResponseRecord(handle.task_id, record.address, handle.node,
                                                    dict(output.get("output", {})), int(time.time())))
            if record.delivery == DeliveryMethod.FIRST_RESPONSE and record.confirmed is None:
                record.confirmed = handle.task_id
                record.status = TaskStatus.FINALIZED
            elif record.status != TaskStatus.FINALIZED:
                record.status = TaskStatus.RESPONDED
        except TaskTimeout:
            with contextlib.suppress(ChainError):
                await self.client.abort(handle.task_id, "creator: expired")
            record.refunded += handle.fee
            self._ended(record, TaskStatus.EXPIRED)
        except TaskAborted as exc:
            record.refunded += exc.fee or handle.fee
            record.error = exc.reason
            self._ended(record, TaskStatus.CANCELED if record.canceled else TaskStatus.EXPIRED)
        except TaskErrored as exc:
            record.refunded += handle.fee
            record.error, record.error_code = exc.message, exc.code
            self._ended(record, TaskStatus.FAILED)
        except TaskFailed as exc:
            record.error = str(exc)
            self._ended(record, TaskStatus.FAILED)
        except Exception as exc:  # the record must end: a waiter is told what happened
            log.exception("task %s: following it failed", record.address)
            record.error = f"{type(exc).__name__}: {exc}"
            self._ended(record, TaskStatus.FAILED)
        finally:
            record.running -= 1
            if record.running == 0:
                record.done.set()

    def _ended(self, record: _TaskRecord, status: TaskStatus) -> None:
        """A member that failed: the task takes that status unless another member answered."""
        if not record.responses:
            record.status = status

    def _on_step(self, step: Any) -> None:
        record = self._by_member.get(step.task_id)
        if record is None:
            return
        if step.name == "started" and step.detail.get("node"):
            record.attempts[step.task_id] = str(step.detail["node"])
            if record.status == TaskStatus.NEW:
                record.status = TaskStatus.ATTEMPTED

    async def cancel(self, record: _TaskRecord) -> None:
        """Abort every member still waiting for a node (refunded); one a node already took runs on."""
        if record.status not in (TaskStatus.NEW,) or record.attempts:
            raise TaskAlreadyFinalizedError(f"task {record.address} is {record.status.name}: a node took it, so it "
                                            f"can no longer be canceled (it ends by itself, or expires)")
        record.canceled = True
        for handle in record.handles:
            info = await self.client.task(handle.task_id)
            if info is not None and info.state in (TaskState.CREATED, TaskState.QUEUED):
                try:
                    await self.client.chain.cancel_task(bytes.fromhex(handle.task_id.removeprefix("0x")))
                except TransactionReverted as exc:
                    raise TaskAlreadyFinalizedError(f"task {record.address} cannot be canceled now: {exc}") from None
        await record.done.wait()

    async def confirm(self, record: _TaskRecord, response: str) -> None:
        if record.confirmed is not None:
            raise ResponseAlreadyConfirmedError(f"task {record.address} already has its confirmed response "
                                                f"{record.confirmed}")
        if response not in {r.key for r in record.responses}:
            raise ValidationError(f"response {response} is not a delivered response of task {record.address}")
        task, chosen = bytes.fromhex(record.address.removeprefix("0x")), bytes.fromhex(response.removeprefix("0x"))
        try:
            await self.registry.transact("confirmResponse", task, chosen)
        except TransactionReverted as exc:
            if "already confirmed" in str(exc):
                raise ResponseAlreadyConfirmedError(f"task {record.address} already has a confirmed response") from None
            raise
        record.confirmed = response
        record.status = TaskStatus.FINALIZED

    def record(self, address: str) -> _TaskRecord:
        record = self.tasks.get(address.lower()) or self.tasks.get(address)
        if record is None:
            raise TaskNotFoundError(f"this process published no task {address}: a gridtask task is followed by "
                                    f"the process that created it (its parameters and result keys are its own)")
        return record

    def unfinished(self) -> list[_TaskRecord]:
        return [r for r in self.tasks.values() if r.running]


def _environments(envs: ImageEnvironments) -> int:
    """The registry's environment mask: the fields that name the code."""
    named = ((Environment.CPU, envs.cpu), (Environment.NVIDIA, envs.nvidia), (Environment.AMD, envs.amd))
    return sum(env.value for env, where in named if where)


def _published_address(registry: _Registry, receipt: Any) -> str:
    for entry in receipt["logs"]:
        if to_checksum_address(entry["address"]) != registry.address:
            continue
        try:
            event = registry.contract.events.SourcePublished().process_log(entry)
        except Exception:  # noqa: BLE001 (another event of the registry)
            continue
        return str(event["args"]["source"])
    raise ChainError("registerSource was mined without a SourcePublished event")


def _wait_for_unfinished() -> None:
    """ogpu's scripts publish and exit; here a task needs its creator until it ends: wait for it."""
    for runtime in list(_Runtime._instances.values()):
        pending = runtime.unfinished()
        if not pending:
            continue
        until = max(r.expiry for r in pending) + 60
        log.warning("waiting for %d unfinished task(s) until they end (at most until %d): this process seals "
                    "their parameters to their nodes; Ctrl-C leaves them to expire and be refunded",
                    len(pending), until)
        with contextlib.suppress(Exception, KeyboardInterrupt):
            runtime.run(_all_done(pending), timeout=max(until - time.time(), 1))


async def _all_done(records: list[_TaskRecord]) -> None:
    for record in records:
        await record.done.wait()


# Before the interpreter's thread pools refuse new work (``concurrent.futures`` shuts them at
# threading's exit hooks, which run before ``atexit``'s, in reverse order of registration: this
# one, registered later, runs first). Without the hook (another Python), plain ``atexit``.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_wait_for_unfinished)
else:  # pragma: no cover
    atexit.register(_wait_for_unfinished)


# ---------------------------------------------------------------- ogpu's objects


class _Addressed:
    """A handle known by its address (ogpu's objects): equal to one of its kind with the same
    address, hashed and printed as the address."""

    address: str

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.address == self.address  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.address)

    def __str__(self) -> str:
        return self.address

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"


class Source(_Addressed):
    """A published source, by address."""

    def __init__(self, address: str, private_key: str | None = None) -> None:
        self.address = to_checksum_address(address)
        self._key = private_key

    def _runtime(self) -> _Runtime:
        return _Runtime.get(self._key)

    def get_params(self) -> SourceParams:
        rt = self._runtime()
        return rt.run(rt.registry.source(self.address))

    def get_status(self) -> SourceStatus:
        return self.get_params().status

    def get_client(self) -> str:
        return self.get_params().client

    def get_metadata(self) -> dict[str, Any]:
        """The bundle's manifest: each exposed function's schemas and timeout."""
        rt = self._runtime()
        return rt.run(rt.manifest(self.get_params().bundleHash.removeprefix("0x")))

    def serving(self) -> int:
        """How many nodes announce this source now (gridtask's: a source's tasks wait for one)."""
        rt = self._runtime()
        return rt.run(rt.client.serving([source_model(self.address)]))

    def wait_until_served(self, timeout: float = 60, nodes: int = 1) -> int:
        """Block until ``nodes`` nodes serve the source (they load it after it is published)."""
        deadline = time.monotonic() + timeout
        while (count := self.serving()) < nodes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {nodes} node(s) serve source {self.address} after {timeout} s: are nodes "
                                   f"running with `--sources all` (the devnet's do, where bubblewrap works)?")
            time.sleep(0.5)
        return count

    def update(self, info: SourceInfo) -> None:
        rt = self._runtime()
        rt.run(rt.update_source(self.address, info))

    def inactivate(self) -> None:
        rt = self._runtime()
        rt.run(rt.inactivate_source(self.address))

    def snapshot(self) -> SourceParams:
        return self.get_params()



class Response(_Addressed):
    """One node's answer to a task (its key on chain is its address)."""

    def __init__(self, record: _ResponseRecord, task: Task) -> None:
        self.address = record.key
        self.task = task
        self.provider = record.node
        self._record = record

    def fetch_data(self) -> dict[str, Any]:
        """The function's output, as the node returned it (checked against its score on chain)."""
        return dict(self._record.output)

    def get_status(self) -> ResponseStatus:
        confirmed = self.task._record().confirmed == self.address
        return ResponseStatus.CONFIRMED if confirmed else ResponseStatus.SUBMITTED

    def is_confirmed(self) -> bool:
        return self.get_status() == ResponseStatus.CONFIRMED

    def get_timestamp(self) -> int:
        return self._record.at

    def confirm(self) -> str:
        """Confirm this response (MANUAL_CONFIRMATION): recorded on chain, the task FINALIZED."""
        rt = self.task._runtime
        rt.run(rt.confirm(self.task._record(), self.address))
        return self.address



class Task(_Addressed):
    """A task this process published (its address is its key on chain)."""

    def __init__(self, address: str, private_key: str | None = None) -> None:
        self.address = address
        self._runtime = _Runtime.get(private_key)

    def _record(self) -> _TaskRecord:
        return self._runtime.record(self.address)

    def get_source(self) -> Source:
        return Source(self._record().source)

    def get_status(self) -> TaskStatus:
        record = self._record()
        if record.status in (TaskStatus.NEW, TaskStatus.ATTEMPTED) and time.time() > record.expiry and \
                not record.responses:
            return TaskStatus.EXPIRED  # past its expiry: the SDK is aborting it (a refund)
        return record.status

    def get_payment(self) -> int:
        return self._record().payment

    def get_expiry_time(self) -> int:
        return self._record().expiry

    def get_delivery_method(self) -> DeliveryMethod:
        return self._record().delivery

    def get_attempt_count(self) -> int:
        return len(self._record().attempts)

    def get_attempters(self) -> list[str]:
        return list(self._record().attempts.values())

    def get_error(self) -> str | None:
        """Why the task ended without a response (the node's task error, or the abort's reason)."""
        return self._record().error

    def get_refunded(self) -> int:
        """Wei of this task's payment returned to the creator's balance on chain (``gridtask withdraw``)."""
        return self._record().refunded

    def get_responses(self) -> list[Response]:
        return [Response(r, self) for r in self._record().responses]

    def get_confirmed_response(self) -> Response | None:
        record = self._record()
        return next((Response(r, self) for r in record.responses if r.key == record.confirmed), None)

    def get_winning_provider(self) -> str | None:
        response = self.get_confirmed_response()
        return response.provider if response else None

    def wait(self, timeout: float | None = None) -> TaskStatus:
        """Block until the task ends (every response in, expired, failed or canceled)."""
        record = self._record()
        self._runtime.run(record.done.wait(), timeout=timeout)
        return self.get_status()

    async def wait_async(self, timeout: float | None = None) -> TaskStatus:
        record = self._record()
        future = asyncio.run_coroutine_threadsafe(record.done.wait(), self._runtime.loop)
        await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        return self.get_status()

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait, then the confirmed response's data (FIRST_RESPONSE: the response), or the typed error."""
        status = self.wait(timeout)
        record = self._record()
        if status == TaskStatus.EXPIRED:
            raise TaskExpiredError(self.address, record.expiry, refunded=record.refunded)
        if status in (TaskStatus.FAILED, TaskStatus.CANCELED):
            raise TaskFailedError(f"task {self.address} ended {status.name}: {record.error}; its payment was "
                                  f"refunded", task_id=self.address, code=record.error_code)
        responses = self.get_responses()
        response = self.get_confirmed_response() or (responses[0] if responses else None)
        if response is None:
            raise TaskFailedError(f"task {self.address} has no response", task_id=self.address)
        return response.fetch_data()

    def cancel(self) -> None:
        """Cancel a task no node took yet: aborted on chain, its payment refunded."""
        self._runtime.run(self._runtime.cancel(self._record()))

    def snapshot(self) -> TaskSnapshot:
        record = self._record()
        return TaskSnapshot(self.address, record.source, self.get_status(), record.payment, record.expiry,
                            record.delivery, len(record.attempts), self.get_winning_provider(), record.error)


# ---------------------------------------------------------------- module-level functions


def publish_source(source_info: SourceInfo, private_key: str | None = None, **_ignored: Any) -> Source:
    """Pack the source's code into a bundle (with its manifest), store it on the relay, register
    it on chain, and return the ``Source`` (its address derived from the owner and a nonce)."""
    rt = _Runtime.get(private_key)
    return Source(rt.run(rt.publish_source(source_info)), private_key)


def update_source(source: str | Source, new_info: SourceInfo, private_key: str | None = None, **_: Any) -> None:
    Source(str(source), private_key).update(new_info)


def inactivate_source(source: str | Source, private_key: str | None = None, **_: Any) -> None:
    Source(str(source), private_key).inactivate()


def publish_task(task_info: TaskInfo, private_key: str | None = None, *, receipt_timeout: float = 120,
                 **_ignored: Any) -> Task:
    """Check the call against the source (status, minimum payment, longest expiry, the function and
    its input schema, the account's balance), then publish it; nothing is sent unless all pass.
    The returned ``Task`` is followed by this process until it ends."""
    rt = _Runtime.get(private_key)
    record = rt.run(rt.publish_task(task_info, receipt_timeout))
    return Task(record.address, private_key)


async def publish_task_async(task_info: TaskInfo, private_key: str | None = None, *,
                             receipt_timeout: float = 120) -> Task:
    """``publish_task`` for async code (the work runs on the SDK's own loop)."""
    rt = await asyncio.to_thread(_Runtime.get, private_key)
    future = asyncio.run_coroutine_threadsafe(rt.publish_task(task_info, receipt_timeout), rt.loop)
    record = await asyncio.wrap_future(future)
    return Task(record.address, private_key)


def confirm_response(response_address: str, private_key: str | None = None, **_: Any) -> str:
    """Confirm a MANUAL_CONFIRMATION task's response (by its address) of this process's tasks."""
    rt = _Runtime.get(private_key)
    for record in rt.tasks.values():
        if any(r.key == response_address for r in record.responses):
            rt.run(rt.confirm(record, response_address))
            return response_address
    raise TaskNotFoundError(f"no delivered response {response_address} among this process's tasks")


def cancel_task(task: str | Task, private_key: str | None = None, **_: Any) -> None:
    Task(str(task), private_key).cancel()


def get_task_responses(task_address: str) -> list[Response]:
    return Task(task_address).get_responses()


def __getattr__(name: str) -> Any:
    """The watchers live in ``gridtask.sdk.opengpu.events`` (as ogpu's in ``ogpu.events``); reached
    here too, for code that calls them ``ogpu.client.watch_*``."""
    from gridtask.sdk.opengpu import events

    if name in events.__all__:
        return getattr(events, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ChainConfig", "ChainId", "DeliveryMethod", "Environment", "ImageEnvironments", "Response", "ResponseStatus",
    "Source", "SourceInfo", "SourceParams", "SourceStatus", "Task", "TaskInfo", "TaskInput", "TaskSnapshot",
    "TaskStatus", "cancel_task", "check_call", "confirm_response", "get_task_responses", "inactivate_source",
    "pack_source", "publish_source", "publish_task", "publish_task_async", "read_manifest", "update_source",
]
