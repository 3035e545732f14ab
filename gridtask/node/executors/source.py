"""OpenGPU-style source functions (``TaskType.SOURCE``), run in the node's sandbox.

A source is registered in the ``SourceRegistry`` contract with the sha256 of its code bundle
(``gridtask.sdk.opengpu``). A node chooses the sources it serves (``gridtask node --sources
all`` or addresses): for each, it fetches the bundle from the relay, verifies its hash,
unpacks it read-only, checks that it loads in the sandbox (its manifest is read there), and
announces the model ``limits.source_model(address)``, so the contract gives it that source's
tasks. With ``all`` it follows ``SourcePublished`` and ``SourceUpdated`` and adds sources
while it runs (``ChainClient.add_models``); an inactivated source's tasks are refused.

A call runs as one sandboxed process (``service.py call``: import the source, ``@init``,
validate the data with the input model, call, print the output), so a call that crashes,
loops or fills its disk ends that process only, and the next call starts clean. Its exit
status says whose fault a failure is: no such function (``UNKNOWN_FUNCTION``), data the input
model refuses (``INVALID_PARAMETERS``), the function raised or returned the wrong model
(``PAYLOAD_FAILED``), a timeout or a sandbox limit (``SANDBOX_*``): each a task error that the
node reports on chain, refunding the creator, while the node goes on serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from eth_utils import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3

from gridtask.chain import artifact
from gridtask.config import NetworkConfig
from gridtask.exceptions import ChainUnreachable, RelayError, ValidationError
from gridtask.limits import check_source_call, source_model
from gridtask.node.executors.base import InvalidTaskParameters, task_fault
from gridtask.relay.client import RelayClient

if TYPE_CHECKING:
    from gridtask.bundles import BundleCache
from gridtask.sdk.opengpu import service
from gridtask.sdk.opengpu.registry import REGISTRY, SourceStatus, is_registered, source_record
from gridtask.types import TaskErrorCode, TaskType

log = logging.getLogger("gridtask.node.source")

ALL = "all"
FOLLOW_POLL_S = 2.0
"""How often a node serving ``all`` looks for newly published or updated sources."""
CALL_WALL_S = 60.0
"""The longest a call runs when its function names no timeout (and the most any may ask)."""
SOURCE_MOUNT = "/source"
_EXIT_CODES = {
    service.EXIT_UNKNOWN_FUNCTION: TaskErrorCode.UNKNOWN_FUNCTION,
    service.EXIT_INVALID_DATA: TaskErrorCode.INVALID_PARAMETERS,
    service.EXIT_FAILED: TaskErrorCode.PAYLOAD_FAILED,
    service.EXIT_TIMEOUT: TaskErrorCode.SANDBOX_TIME,
}

_SOURCE_EVENTS = ("SourcePublished(address,address,bytes32,uint8)", "SourceUpdated(address,address,bytes32)",
                  "SourceInactivated(address,address)")
"""The registry's events that change what a node serves (one log query for all three)."""

ServeModels = Callable[[list[str]], Awaitable[None]]


def parse_sources(values: list[str]) -> list[str] | None:
    """``--sources`` values: ``["all"]`` -> None (every source), else checksum addresses."""
    if not values:
        return []
    if values == [ALL]:
        return None
    out = []
    for value in values:
        try:
            source_model(value)
        except ValidationError:
            raise ValueError(f"--sources: {value!r} is neither 'all' nor a source address (0x and 40 hex digits)") \
                from None
        out.append(str(to_checksum_address(value)))
    return out


@dataclass
class ServedSource:
    """A source this node runs: its bundle unpacked here, and its manifest."""

    address: str
    bundle_hash: str
    path: Path
    manifest: dict[str, Any]
    active: bool = True


class SourceExecutor:
    """Runs the functions of the sources it serves (``models``: their ``src:`` names)."""

    task_type = TaskType.SOURCE

    def __init__(self, network: NetworkConfig, sources: list[str] | None) -> None:
        if not network.source_registry:
            raise ValueError("--sources: this network has no SourceRegistry (GRIDTASK_SOURCE_REGISTRY)")
        self.network = network
        self.wanted = sources  # None: every source
        self.models: list[str] = []
        self.served: dict[str, ServedSource] = {}  # by model name
        self._cache: BundleCache | None = None
        self._w3 = AsyncWeb3(AsyncHTTPProvider(network.rpc_url))
        self._registry = self._w3.eth.contract(address=to_checksum_address(network.source_registry),
                                               abi=artifact.abi(REGISTRY))
        self._next_block = network.deploy_block or 0

    async def aclose(self) -> None:
        """Close the registry reader's HTTP session (the node calls it when it stops)."""
        await self._w3.provider.disconnect()

    # ------------------------------------------------------------ which sources

    def bind(self, relay: RelayClient, state_dir: Path) -> None:
        """The node's relay (bundles come from there) and its state directory (they are kept in
        its ``bundles`` folder, which the script executor's cache shares: ``BundleCache``)."""
        from gridtask.bundles import BundleCache

        self._cache = BundleCache(state_dir / "bundles", relay)

    async def prepare(self) -> None:
        """Before the node joins: load every source it serves that exists now, so it joins announcing them."""
        await self._catch_up()

    async def follow(self, serve: ServeModels) -> None:
        """While the node runs: sources published or updated later (``serve`` announces new models)."""
        while True:
            await asyncio.sleep(FOLLOW_POLL_S)
            try:
                added = await self._catch_up()
                if added:
                    await serve(added)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the follower outlives any one failure: the next poll tries again
                log.warning("sources: following the registry failed (%r); trying again", exc)

    async def _catch_up(self) -> list[str]:
        """Read the registry's events since the last look; load each new source (or new bundle).
        A chain that does not answer is ``ChainUnreachable``: the node's start-up waits for it."""
        try:
            return await self._read_registry()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ChainUnreachable(f"chain unreachable at {self.network.rpc_url} (source registry): {exc!r}") from exc

    async def _read_registry(self) -> list[str]:
        head = int(await self._w3.eth.block_number)
        if head < self._next_block:
            return []
        topics = [self._w3.keccak(text=signature).hex() for signature in _SOURCE_EVENTS]
        logs = await self._w3.eth.get_logs({"address": self._registry.address, "fromBlock": self._next_block,
                                            "toBlock": head, "topics": [["0x" + t.removeprefix("0x") for t in topics]]})
        # Every one of these events has the source as its first indexed argument.
        changed = [str(to_checksum_address(bytes(entry["topics"][1])[12:])) for entry in logs]
        if self.wanted is not None and self._next_block == (self.network.deploy_block or 0):
            changed += self.wanted  # named sources: loaded at start whatever their age
        self._next_block = head + 1
        added = []
        for address in dict.fromkeys(changed):
            if self.wanted is not None and address not in self.wanted:
                continue
            model = await self._load(address)
            if model and model not in self.models:
                self.models.append(model)
                added.append(model)
        return added

    async def _load(self, address: str) -> str | None:
        """Fetch, verify, unpack and check one source; its model name, or None when it cannot run."""
        record = await self._record(address)
        if not is_registered(record):
            log.warning("source %s: not in the registry", address)
            return None
        model, bundle_hash = source_model(address), bytes(record["bundleHash"]).hex()
        active = record["status"] == SourceStatus.ACTIVE
        known = self.served.get(model)
        if known is not None and known.bundle_hash == bundle_hash:
            known.active = active
            return model
        if not active:
            return None
        try:
            path = await self._unpacked(bundle_hash)
            manifest = await self._checked_manifest(path)
        except (RelayError, ValidationError, InvalidTaskParameters, OSError, ValueError) as exc:
            log.warning("source %s: bundle %s cannot be served: %s", address, bundle_hash[:12], exc)
            return None
        self.served[model] = ServedSource(address, bundle_hash, path, manifest, active)
        log.info("source %s: serving %s (bundle %s)", address, sorted(manifest["functions"]), bundle_hash[:12])
        return model

    async def _record(self, address: str) -> dict[str, Any]:
        """The registry's record of ``address`` now (``struct Source`` by field name)."""
        return source_record(await self._registry.functions.sources(address).call())

    async def _unpacked(self, bundle_hash: str) -> Path:
        """The bundle, fetched once from the relay, verified by its hash and unpacked read-only."""
        assert self._cache is not None, "the node binds its relay first"
        return await self._cache.path(bundle_hash)

    async def _checked_manifest(self, path: Path) -> dict[str, Any]:
        """The manifest as the bundle's own code reports it in the sandbox (it loads there)."""
        root = _source_root(path)
        result = await self._sandboxed(["manifest", SOURCE_MOUNT, service.source_entry(root)], root, None, CALL_WALL_S)
        if result.exit_code != 0:
            raise ValueError(f"it does not load in the sandbox: {result.stderr.decode(errors='replace')[-400:]}")
        return dict(json.loads(result.stdout.decode().strip().splitlines()[-1]))

    # ------------------------------------------------------------ a call

    async def admit(self, model: str, fee: int) -> None:
        """Refuse a task whose fee is below the source's ``minPayment`` as the registry holds it
        now (a task error, refunded): the SDK checks it before paying, but a client need not."""
        served = self.served.get(model)
        if served is None:
            return  # ``run`` refuses it with its own code
        minimum = int((await self._record(served.address))["minPayment"])
        if fee < minimum:
            raise InvalidTaskParameters(f"source {served.address}: the task pays {fee} wei, under the source's "
                                        f"minPayment of {minimum} wei", code=TaskErrorCode.INVALID_PARAMETERS)

    async def run(self, model: str, inputs: dict) -> dict:
        served = self.served.get(model)
        if served is None:
            raise InvalidTaskParameters(f"this node does not serve {model!r}", code=TaskErrorCode.UNKNOWN_MODEL)
        with task_fault():
            source, function, data = check_source_call(inputs)
        if source_model(source) != model:
            raise InvalidTaskParameters(f"the call names source {source}, the task {model}",
                                        code=TaskErrorCode.UNKNOWN_MODEL)
        if not served.active:
            raise InvalidTaskParameters(f"source {source} was inactivated by its owner",
                                        code=TaskErrorCode.UNKNOWN_FUNCTION)
        spec = served.manifest["functions"].get(function)
        if spec is None:
            raise InvalidTaskParameters(f"source {source} exposes no function {function!r}",
                                        code=TaskErrorCode.UNKNOWN_FUNCTION)
        wall = min(float(spec.get("timeout") or CALL_WALL_S) + 5.0, CALL_WALL_S)
        root = _source_root(served.path)
        result = await self._sandboxed(["call", SOURCE_MOUNT, service.source_entry(root)], root,
                                       json.dumps({"function": function, "data": data}).encode(), wall)
        payload = _result_payload(result.stdout)
        if result.exit_code != service.EXIT_OK:
            code = _EXIT_CODES.get(result.exit_code, TaskErrorCode.PAYLOAD_FAILED)
            why = (payload or {}).get("error") or result.stderr.decode(errors="replace")[-300:]
            raise InvalidTaskParameters(f"source {source}.{function}: {why}", code=code)
        if payload is None or "output" not in payload:
            raise InvalidTaskParameters(f"source {source}.{function} printed no result",
                                        code=TaskErrorCode.PAYLOAD_FAILED)
        return {"output": payload["output"]}

    async def _sandboxed(self, args: list[str], root: Path, stdin: bytes | None, wall: float) -> Any:
        from gridtask.node.sandbox import SANDBOX_LIB, SANDBOX_PYTHON, SandboxLimits, run_sandboxed

        host = f"{SANDBOX_LIB}/gridtask/sdk/opengpu/service.py"
        with tempfile.TemporaryDirectory(prefix="gridtask-call-") as work:
            return await run_sandboxed([SANDBOX_PYTHON, host, *args], workdir=Path(work),
                                       limits=SandboxLimits(wall_s=wall), stdin=stdin,
                                       ro_binds=[(root, SOURCE_MOUNT)])


def _source_root(path: Path) -> Path:
    """Where the manifest is in an unpacked bundle (its top, or the one folder it holds)."""
    if (path / service.MANIFEST).is_file():
        return path
    inner = [p for p in path.iterdir() if p.is_dir()]
    if len(inner) == 1 and (inner[0] / service.MANIFEST).is_file():
        return inner[0]
    raise ValueError(f"the bundle has no {service.MANIFEST}: not a source")


def _result_payload(stdout: bytes) -> dict[str, Any] | None:
    for line in reversed(stdout.decode(errors="replace").splitlines()):
        if line.startswith(service.RESULT_MARK):
            return dict(json.loads(line.removeprefix(service.RESULT_MARK)))
    return None
