"""``Golem``: batch jobs split into fragments that run on many nodes at once (yapapi's API).

    async with Golem(budget=1.0) as golem:
        async for task in golem.execute_tasks(worker, [Task(data=x) for x in chunks], payload=package):
            print(task.result)

How it maps onto gridtask: each script a worker yields is one fragment, one gridtask task of
``TaskType.SCRIPT`` on model ``vm``, created by the core ``Client`` with its fee taken from the
budget (``Budget``: escrowed plus spent never pass it). The network picks each fragment's node.
A fragment that fails (aborted, errored, outvoted, not delivered) is sent again as a new task
that excludes the nodes it failed on, up to ``max_fragment_tries``; a node that hangs is
abandoned at its stage deadline (the core client aborts the task on chain, refunding the fee)
and the fragment goes elsewhere, while the other workers go on. ``max_workers`` workers run at
once, each one fragment at a time; a task a worker rejects with ``retry=True``, or holds when it
fails, goes back to the queue for any worker, up to ``max_task_tries``.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from gridtask.exceptions import (
    GridtaskError,
    ValidationError,
)
from gridtask.limits import check_positive
from gridtask.sdk._client import DEFAULT_FEE, Client
from gridtask.sdk.golem import events
from gridtask.sdk.golem._job import Job
from gridtask.sdk.golem.budget import ETHER, Budget
from gridtask.sdk.golem.ctx import WorkContext
from gridtask.sdk.golem.script import Script
from gridtask.sdk.golem.task import Task
from gridtask.sdk.golem.vm import VmPayload

log = logging.getLogger("gridtask.sdk.golem")

Worker = Callable[[WorkContext, AsyncIterator[Task[Any, Any]]], AsyncGenerator[Script, Any]]
EventConsumer = Callable[[events.Event], None]

DEFAULT_FRAGMENT_TRIES = 3
DEFAULT_TASK_TRIES = 3


def _wei(budget: float | Decimal | int) -> int:
    """yapapi's budget is in GLM; gridtask's in ether, the chain's own currency."""
    if isinstance(budget, bool) or not isinstance(budget, int | float | Decimal) or not budget > 0:
        raise ValidationError(f"budget: a positive amount of ether (got {budget!r})")
    return int(Decimal(str(budget)) * ETHER)


class Golem:
    """The job runner (yapapi's ``Golem``): ``async with Golem(budget=...) as golem``.

    ``budget``: ether the session may spend in all (escrowed fees count until refunded);
    ``fee``: wei per fragment; ``fragment_timeout``: seconds a fragment may take per stage on its
    node (a script's own ``timeout`` wins; default: the network's stage timeout);
    ``event_consumer``: called with every ``events.Event``; ``progress``: a terminal progress
    bar (done, running, failed, spent; default: when stderr is a terminal); ``stream_output``:
    print each command's output (stdout, stderr) when its script comes back.
    ``subnet_tag``, ``payment_driver`` and ``payment_network`` are accepted for yapapi's
    examples and mean nothing here: one chain is both the market and the payment."""

    def __init__(
        self,
        *,
        budget: float | Decimal | int,
        event_consumer: EventConsumer | None = None,
        fee: int = DEFAULT_FEE,
        fragment_timeout: float | None = None,
        max_fragment_tries: int = DEFAULT_FRAGMENT_TRIES,
        max_task_tries: int = DEFAULT_TASK_TRIES,
        progress: bool | None = None,
        client: Client | None = None,
        config_path: Path | str | None = None,
        subnet_tag: str | None = None,
        payment_driver: str | None = None,
        payment_network: str | None = None,
        stream_output: bool = False,
    ) -> None:
        self.budget = Budget(_wei(budget))
        if isinstance(fee, bool) or not isinstance(fee, int) or fee <= 0:
            raise ValidationError(f"fee: a positive number of wei (got {fee!r})")
        if fragment_timeout is not None:
            check_positive("fragment_timeout", fragment_timeout, "seconds")
        for name, value in (("max_fragment_tries", max_fragment_tries), ("max_task_tries", max_task_tries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name}: an integer of at least 1 (got {value!r})")
        self.fee = fee
        self.fragment_timeout = fragment_timeout
        self.max_fragment_tries = max_fragment_tries
        self.max_task_tries = max_task_tries
        self._own_client = client is None
        self._client = client if client is not None else Client(config_path=config_path)
        self._consumers: list[tuple[EventConsumer, tuple[type[events.Event], ...] | None]] = []
        if event_consumer is not None:
            self.add_event_consumer(event_consumer)
        if stream_output:
            self.add_event_consumer(_print_output, [events.CommandExecuted])
        if progress if progress is not None else sys.stderr.isatty():
            from gridtask.sdk.golem.progress import ProgressBar

            self.add_event_consumer(ProgressBar(self.budget))
        self._job_ids = itertools.count(1)
        self.operative = False

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Golem:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._client.open()
        self.operative = True

    async def stop(self) -> None:
        self.operative = False
        if self._own_client:
            await self._client.aclose()

    @property
    def client(self) -> Client:
        return self._client

    async def publish_image(self, directory: Path | str) -> str:
        """Pack ``directory`` into a bundle (deterministic: the same files give the same hash) and
        upload it to the relay; returns the hash for ``vm.repo(image_hash=...)``. The same as
        ``gridtask bundle publish DIR``."""
        from gridtask.bundles import pack_dir

        folder = Path(directory)
        if not folder.is_dir():
            raise ValidationError(f"image: {folder} is not a directory")
        return str(await self._client.relay.put_bundle(pack_dir(folder)))

    # ------------------------------------------------------------ events

    def add_event_consumer(self, consumer: EventConsumer,
                           event_classes_or_names: Iterable[type[events.Event] | str] | None = None) -> None:
        """Call ``consumer(event)`` for every event, or only those of the classes named."""
        classes: tuple[type[events.Event], ...] | None = None
        if event_classes_or_names is not None:
            found = []
            for c in event_classes_or_names:
                cls = getattr(events, c, None) if isinstance(c, str) else c
                if not (isinstance(cls, type) and issubclass(cls, events.Event)):
                    raise ValidationError(f"event_classes_or_names: {c!r} is not an event of gridtask.sdk.golem.events")
                found.append(cls)
            classes = tuple(found)
        self._consumers.append((consumer, classes))

    def _emit(self, event: events.Event) -> None:
        for consumer, classes in self._consumers:
            if classes is None or isinstance(event, classes):
                try:
                    consumer(event)
                except Exception:  # a consumer's bug must not stop the job
                    log.exception("event consumer %r failed on %s", consumer, type(event).__name__)

    # ------------------------------------------------------------ jobs

    async def execute_tasks(
        self,
        worker: Worker,
        data: Iterable[Task[Any, Any]] | AsyncIterable[Task[Any, Any]],
        payload: VmPayload,
        max_workers: int | None = None,
        timeout: timedelta | float | None = None,
        job_id: str | None = None,
        implicit_init: bool = True,
    ) -> AsyncIterator[Task[Any, Any]]:
        """Run ``worker`` over the tasks on the network's ``vm`` nodes; yield each task as it is
        accepted. ``timeout``: the whole job's (``TaskTimeout`` when it passes)."""
        if not isinstance(payload, VmPayload):
            raise ValidationError("payload: use `await vm.repo(image_hash=...)` from gridtask.sdk.golem")
        if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                                        or max_workers < 1):
            raise ValidationError(f"max_workers: an integer of at least 1 (got {max_workers!r})")
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if seconds is not None:
            check_positive("timeout", seconds, "seconds")
        if not self.operative:
            raise GridtaskError("Golem is not started: use `async with Golem(...) as golem`")
        job = Job(self, job_id or str(next(self._job_ids)), worker, data, payload)
        await job.prepare(max_workers)
        async for task in job.run(seconds):
            yield task


def _print_output(event: events.Event) -> None:
    """``Golem(stream_output=True)``: each command's output, as its script comes back (yapapi
    streams it while the command runs; a gridtask script returns its output in one result)."""
    assert isinstance(event, events.CommandExecuted)
    if event.stdout:
        sys.stdout.write(event.stdout if event.stdout.endswith("\n") else event.stdout + "\n")
    if event.stderr:
        sys.stderr.write(event.stderr if event.stderr.endswith("\n") else event.stderr + "\n")
