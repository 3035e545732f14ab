"""The network's nodes as an application needs them: who could run a task, and each node's
encryption key. Read from the contract's own logs (``NodeJoined`` carries a node's GPU,
VRAM, models and public key; ``NodeQuit`` takes it out of selection), incrementally and at
most every ``REGISTRY_TTL_S``, so that the look-up costs no request per task and none per
node: the one place that answers "is this model served" (``NodeRegistry.serving``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gridtask.chain.client import ChainClient, to_bytes32
from gridtask.exceptions import ValidationError

#: How stale the registry may be before a look-up reads the new logs (two requests).
REGISTRY_TTL_S = 10.0


@dataclass(frozen=True)
class NodeEntry:
    """One node as its newest ``NodeJoined`` describes it; ``leaving`` once it quit."""

    address: str
    gpu: bytes
    vram: int
    models: frozenset[bytes]
    public_key: bytes
    leaving: bool = False

    def can_run(self, models: Sequence[bytes], min_vram: int, gpu: bytes) -> bool:
        """The contract's match, less idleness: every model, enough VRAM, the GPU asked for."""
        return (not self.leaving and self.vram >= min_vram and (gpu == bytes(32) or self.gpu == gpu)
                and set(models) <= self.models)


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
        topics = [[self.chain.events.topic("NodeJoined"), self.chain.events.topic("NodeQuit")]]
        head = await self.chain.block_number()
        events = await self.chain.find_logs(topics, from_block=self._next_block, to_block=head)
        for event in events:  # oldest first: the newest event of a node decides
            if not event.removed:
                self._apply(event.name, event.args)
        self._next_block = head + 1
        self._read_at = time.monotonic()

    def _apply(self, name: str, args: dict[str, Any]) -> None:
        address = str(args["node"])
        if name == "NodeQuit":
            if address in self.nodes:
                entry = self.nodes[address]
                self.nodes[address] = NodeEntry(entry.address, entry.gpu, entry.vram, entry.models,
                                                entry.public_key, leaving=True)
            return
        self.nodes[address] = NodeEntry(
            address=address, gpu=bytes(args["gpu"]), vram=int(args["vram"]),
            models=frozenset(bytes(m) for m in args["models"]), public_key=bytes(args["public_key"]),
        )

    async def serving(self, models: Sequence[str | bytes], *, min_vram: int = 0, gpu: str | bytes = "") -> int:
        """How many registered nodes that have not quit could run a task needing every one of
        ``models`` with at least ``min_vram`` and the GPU ``gpu`` ("" for any)."""
        try:
            wanted = [m if isinstance(m, bytes) else to_bytes32(m) for m in models]
            gpu_id = gpu if isinstance(gpu, bytes) else (to_bytes32(gpu) if gpu else bytes(32))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if not wanted:
            raise ValidationError("models: name at least one model")
        await self.refresh()
        return sum(node.can_run(wanted, min_vram, gpu_id) for node in self.nodes.values())

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
