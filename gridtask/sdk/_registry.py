"""The network's nodes as an application needs them: who could run a task, and each node's
encryption key. Read from the contract's own logs (``NodeJoined`` carries a node's GPU,
VRAM, models and public key; ``NodeModelsChanged`` adds and drops models of a joined node;
``NodeQuit`` takes it out of selection), incrementally and at
most every ``REGISTRY_TTL_S``, so that the look-up costs no request per task and none per
node: the one place that answers "is this model served" (``NodeRegistry.serving``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gridtask.chain.client import ChainClient, to_bytes32
from gridtask.exceptions import ValidationError

#: How stale the registry may be before a look-up reads the new logs (two requests).
REGISTRY_TTL_S = 10.0
#: The logs that say which nodes serve what (``NodeModelsChanged`` where the contract has it).
NODE_EVENTS = ("NodeJoined", "NodeModelsChanged", "NodeQuit")


@dataclass(frozen=True)
class NodeEntry:
    """One node as its newest ``NodeJoined`` describes it; ``leaving`` once it quit."""

    address: str
    gpu: bytes
    vram: int
    models: frozenset[bytes]
    public_key: bytes
    leaving: bool = False

    def can_run(self, models: Sequence[bytes], min_vram: int, gpu: bytes, any_model: bool = False) -> bool:
        """The contract's match, less idleness: every model (any one of them for an any-of
        task), enough VRAM, the GPU asked for."""
        served = not self.models.isdisjoint(models) if any_model else set(models) <= self.models
        return not self.leaving and self.vram >= min_vram and (gpu == bytes(32) or self.gpu == gpu) and served


class NodeRegistry:
    """The nodes of one network, kept by one client."""

    def __init__(self, chain: ChainClient, ttl: float = REGISTRY_TTL_S) -> None:
        self.chain = chain
        self.ttl = ttl
        self.nodes: dict[str, NodeEntry] = {}
        self._next_block: int | None = None
        self._read_at = -float("inf")

    async def refresh(self, *, force: bool = False) -> None:
        """Read the node logs since the last refresh (all of them the first time)."""
        if not force and time.monotonic() - self._read_at < self.ttl:
            return
        known: list[bytes] = []
        for name in NODE_EVENTS:
            with contextlib.suppress(KeyError):  # an event this contract does not have
                known.append(self.chain.events.topic(name))
        topics = [known]
        head = await self.chain.block_number()
        events = await self.chain.find_logs(topics, from_block=self._next_block, to_block=head)
        for event in events:  # oldest first: the newest event of a node decides
            if not event.removed:
                self._apply(event.name, event.args)
        self._next_block = head + 1
        self._read_at = time.monotonic()

    def _apply(self, name: str, args: dict[str, Any]) -> None:
        address = str(args["node"])
        if name in ("NodeQuit", "NodeModelsChanged"):
            entry = self.nodes.get(address)
            if entry is None:
                return
            if name == "NodeQuit":
                self.nodes[address] = dataclasses.replace(entry, leaving=True)
            else:
                models = (entry.models | {bytes(m) for m in args["added"]}) - {bytes(m) for m in args["removed"]}
                self.nodes[address] = dataclasses.replace(entry, models=frozenset(models))
            return
        self.nodes[address] = NodeEntry(
            address=address, gpu=bytes(args["gpu"]), vram=int(args["vram"]),
            models=frozenset(bytes(m) for m in args["models"]), public_key=bytes(args["public_key"]),
        )

    async def serving(self, models: Sequence[str | bytes], *, min_vram: int = 0, gpu: str | bytes = "",
                      any_model: bool = False) -> int:
        """How many registered nodes that have not quit could run a task needing every one of
        ``models`` (any one of them when ``any_model``) with at least ``min_vram`` and the GPU
        ``gpu`` ("" for any)."""
        try:
            wanted = [m if isinstance(m, bytes) else to_bytes32(m) for m in models]
            gpu_id = gpu if isinstance(gpu, bytes) else (to_bytes32(gpu) if gpu else bytes(32))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if not wanted:
            raise ValidationError("models: name at least one model")
        await self.refresh()
        return sum(node.can_run(wanted, min_vram, gpu_id, any_model) for node in self.nodes.values())

    async def first_served(self, address: str, models: Sequence[bytes]) -> bytes | None:
        """The first of ``models`` that node serves (an any-of task's model once its node is
        known), read afresh once if none: the node may have added it since the last read."""
        for force in (False, True):
            if force:
                await self.refresh(force=True)
            entry = self._find(address)
            found = next((m for m in models if entry is not None and m in entry.models), None)
            if found is not None:
                return found
        return None

    async def public_key(self, address: str) -> bytes | None:
        """The node's encryption key from its ``NodeJoined`` (read afresh once if unknown)."""
        entry = self._find(address)
        if entry is None:
            await self.refresh(force=True)
            entry = self._find(address)
        return entry.public_key if entry is not None else None

    def _find(self, address: str) -> NodeEntry | None:
        entry = self.nodes.get(address)
        if entry is None:
            entry = next((n for a, n in self.nodes.items() if a.lower() == address.lower()), None)
        return entry
