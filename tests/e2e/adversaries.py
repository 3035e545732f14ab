"""Dishonest nodes for the adversarial test: the real node daemon with one step replaced.

Each cheater is the product's ``NodeDaemon`` and ``TaskWorker``, running in the test's
process on the devnet's chain and relay, with the one step a cheater would change swapped
out here. gridtask itself has no hook for it: a node operator can run any executor, and
anyone can run a modified worker, which is exactly the threat.

- ``WRONG``, a consistent liar: its executor answers something else, and the real worker
  scores, encrypts and commits that wrong answer. Its delivery fits its score, so neither
  the relay nor the creator's check can tell; only a group of three outvotes it.
- ``COPIER``: does not run the task. It commits the score of another task it saw in a
  recent ``TaskScoreReady`` for the same model (whatever it can find; it waits for one if
  there is none yet), with the hash of a made-up result that it encrypts under the task's
  result key, so that it has something to deliver and be paid for.
- ``SILENT``: takes the task and never does anything with it: no score, no abort.

Honest nodes are the devnet's own ``gridtask node`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from gridtask.chain.client import ChainClient
from gridtask.chain.models import TaskInfo, same_address
from gridtask.crypto import encrypt_result, keccak, unseal
from gridtask.devnet import Devnet
from gridtask.keys import Identity
from gridtask.node.daemon import NodeDaemon
from gridtask.node.executors.base import ExecutorSet
from gridtask.node.executors.echo import EchoExecutor
from gridtask.node.settings import NodeSettings
from gridtask.node.worker import TaskSpec, TaskWorker, abort_at
from gridtask.params import TaskParams
from gridtask.scoring import canonical_json
from gridtask.types import TaskState

from .conftest import funded_account

LOOKBACK_BLOCKS = 256
"""How far back a copier looks for a score to copy."""
CHEATER_TICK_S = 0.5
COPY_MARGIN_S = 2.0
"""A copier with nothing to copy yet waits until this long before its node would give up."""


class Behaviour(Enum):
    HONEST = "honest"
    WRONG = "wrong answer"
    COPIER = "copier"
    SILENT = "silent"


def forged(value: Any) -> Any:
    """What the liar answers instead of ``value``: plausible, and never equal to it."""
    return ["forged", value]


class LyingEcho(EchoExecutor):
    """The echo executor, answering a forgery: the step a consistent liar replaces."""

    async def run(self, model: str, inputs: dict) -> dict:
        honest = await super().run(model, inputs)
        return {"echo": forged(honest["echo"])}


class CopyingWorker(TaskWorker):
    """The node's worker, except that a started task is never run: its score is copied."""

    MADE_UP = canonical_json({"echo": "copied"})
    """The result the copier encrypts and delivers: it has no real one."""

    async def advance(self, task: TaskInfo) -> None:
        if task.state == TaskState.STARTED and self._saved(task.commitment) is None:
            await self._commit_copied_score(task)
        else:  # a saved copy is committed again, delivered, claimed... as the real node would
            await super().advance(task)

    async def _commit_copied_score(self, task: TaskInfo) -> None:
        spec = await self.spec(task.commitment)
        sealed = await self._fetch_params(task)  # the node's own fetch (and its own giving up)
        if sealed is None:
            return
        params = TaskParams.decode(unseal(sealed, self.chain.identity.encryption_private_key))
        copied = await self._score_to_copy(task, spec)
        cipher = encrypt_result(params.result_key_bytes, self.MADE_UP)
        self._save(task.commitment, cipher, copied)  # so it delivers these bytes once validated
        await self.chain.submit_score(task.commitment, copied, keccak(cipher))

    async def _score_to_copy(self, task: TaskInfo, spec: TaskSpec) -> bytes:
        """The newest score of the same model, waiting for one to appear while there is time;
        with none at all, any 32 bytes (it never computes one: that would be a liar's answer)."""
        while time.time() < abort_at(task) - COPY_MARGIN_S:
            copied = await self._recent_score(spec, task.commitment)
            if copied is not None:
                return copied
            await asyncio.sleep(CHEATER_TICK_S)
        return os.urandom(32)

    async def _recent_score(self, spec: TaskSpec, own: bytes) -> bytes | None:
        """The newest score another node committed for a task that shares a model with this one."""
        head = await self.chain.block_number()
        topic = self.chain.events.topic("TaskScoreReady")
        events = await self.chain.find_logs([topic], from_block=max(0, head - LOOKBACK_BLOCKS))
        for event in reversed(events):
            if event.commitment == own or same_address(event.args.get("node"), self.chain.identity.address):
                continue
            other = await self.spec(event.commitment or b"")
            if set(other.models) & set(spec.models):
                return bytes(event.args["score"])
        return None


class SilentWorker(TaskWorker):
    """The node's worker, except that a started task is left alone for ever."""

    async def advance(self, task: TaskInfo) -> None:
        if task.state != TaskState.STARTED:
            await super().advance(task)


WORKERS: dict[Behaviour, type[TaskWorker]] = {Behaviour.COPIER: CopyingWorker, Behaviour.SILENT: SilentWorker}
"""The worker step each cheater replaces (the others keep the node's own)."""
EXECUTORS: dict[Behaviour, type[EchoExecutor]] = {Behaviour.WRONG: LyingEcho}
"""The executor each cheater replaces (the others keep the real echo executor)."""


@dataclass
class Cheater:
    """One dishonest echo node running in this process."""

    behaviour: Behaviour
    identity: Identity
    daemon: NodeDaemon
    serving: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return self.identity.address

    def start(self) -> None:
        self.serving = asyncio.create_task(self.daemon.serve(), name=f"cheater-{self.behaviour.name}")

    async def stop(self) -> None:
        self.daemon.shutdown()
        if self.serving is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.serving, 30)


def make_cheater(net: Devnet, behaviour: Behaviour, state_dir: Path) -> Cheater:
    """A funded echo node with ``behaviour``: the real daemon, its one step replaced."""
    identity, network = funded_account(net)
    settings = NodeSettings(network=network, models=["echo"], state_dir=state_dir, tick_s=CHEATER_TICK_S)
    daemon = NodeDaemon(settings, ExecutorSet([EXECUTORS.get(behaviour, EchoExecutor)()]))
    if behaviour in WORKERS:
        daemon.worker = WORKERS[behaviour](daemon.chain, daemon.relay, daemon.executors, daemon.worker.results_dir,
                                           stop=daemon.should_exit)
    return Cheater(behaviour, identity, daemon)


async def wait_joined(net: Devnet, cheaters: list[Cheater], timeout: float = 120) -> None:
    """Until every cheater has joined on chain; a cheater whose daemon failed raises its error."""
    assert net.config is not None
    async with ChainClient(net.config.rpc_url, net.config.contract, Identity.generate()) as chain:
        deadline = time.monotonic() + timeout
        pending = list(cheaters)
        while pending:
            for cheater in pending:
                if cheater.serving is not None and cheater.serving.done():
                    cheater.serving.result()
                    raise AssertionError(f"the {cheater.behaviour.value} node stopped before it joined")
            pending = [c for c in pending if await chain.get_node(c.address) is None]
            if time.monotonic() > deadline:
                raise AssertionError(f"{[c.behaviour.value for c in pending]} did not join in {timeout} s")
            await asyncio.sleep(0.2)
