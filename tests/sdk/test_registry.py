"""The SDK's node registry, one module under test (``gridtask.sdk._registry``): which nodes
serve what, from the nodes' own logs (``NodeJoined``, ``NodeModelsChanged``, ``NodeQuit``)
as a stand-in chain returns them, read incrementally."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gridtask.chain.client import ChainEvent, to_bytes32
from gridtask.sdk._registry import NodeRegistry

A, B, C = (to_bytes32(m) for m in ("model-a", "model-b", "model-c"))
NODE = "0x" + "ab" * 20


@dataclass
class LogChain:
    """``find_logs`` over the logs added so far, by block; ``topic(name)`` is the name."""

    logs: list[ChainEvent] = field(default_factory=list)
    head: int = 0

    def add(self, name: str, **args: Any) -> None:
        self.head += 1
        self.logs.append(ChainEvent(name=name, args=args, block_number=self.head, transaction_hash=bytes(32),
                                    log_index=0))

    async def block_number(self) -> int:
        return self.head

    async def find_logs(self, topics: list[Any], *, from_block: int | None = None, to_block: int | None = None,
                        **_: Any) -> list[ChainEvent]:
        return [e for e in self.logs if e.name in topics[0] and (from_block or 0) <= e.block_number <= (to_block or 0)]

    @property
    def events(self) -> Any:
        class Topics:
            @staticmethod
            def topic(name: str) -> str:
                return name
        return Topics()


def joined(chain: LogChain, models: list[bytes], address: str = NODE) -> None:
    chain.add("NodeJoined", node=address, gpu=to_bytes32("cpu"), vram=0, models=models, public_key=b"k" * 32)


async def test_a_joined_node_that_adds_and_drops_models_is_followed() -> None:
    chain = LogChain()
    joined(chain, [A])
    registry = NodeRegistry(chain, ttl=0)  # type: ignore[arg-type]
    assert await registry.serving([A]) == 1 and await registry.serving([B]) == 0
    chain.add("NodeModelsChanged", node=NODE, added=[B, C], removed=[A])
    assert await registry.serving([A]) == 0 and await registry.serving([B, C]) == 1
    assert await registry.first_served(NODE.upper().replace("0X", "0x"), [A, C, B]) == C
    chain.add("NodeQuit", node=NODE)
    assert await registry.serving([B]) == 0


async def test_an_any_of_task_is_served_by_a_node_with_one_of_its_models_and_all_of_by_one_with_all() -> None:
    chain = LogChain()
    joined(chain, [A], "0x" + "01" * 20)
    joined(chain, [B], "0x" + "02" * 20)
    registry = NodeRegistry(chain, ttl=0)  # type: ignore[arg-type]
    assert await registry.serving([A, B]) == 0
    assert await registry.serving([A, B], any_model=True) == 2
    assert await registry.serving([A, C], any_model=True) == 1


async def test_a_model_a_node_added_since_the_last_read_is_found_by_reading_again() -> None:
    chain = LogChain()
    joined(chain, [A])
    registry = NodeRegistry(chain)  # the default staleness: a plain look-up would not read again
    assert await registry.first_served(NODE, [B]) is None
    chain.add("NodeModelsChanged", node=NODE, added=[B], removed=[])
    assert await registry.first_served(NODE, [C, B]) == B
