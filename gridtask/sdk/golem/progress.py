"""A terminal progress bar for a Golem job (an event consumer): done, running, failed, spent.

``Golem(progress=True)`` adds it (the default when stderr is a terminal); it is an ordinary
event consumer, so ``golem.add_event_consumer(ProgressBar(golem.budget))`` works as well.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from gridtask.sdk.golem import events
from gridtask.sdk.golem.budget import ETHER, Budget


class ProgressBar:
    """One bar per job: tasks accepted of all, and a line of running, failed and ether spent."""

    def __init__(self, budget: Budget, *, transient: bool = False, console: Console | None = None) -> None:
        self.budget = budget
        self.running = 0
        self.failed = 0
        self.done = 0
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), transient=transient,
                                  console=console)
        self._bar: TaskID | None = None

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.JobStarted):
            self._progress.start()
            self._bar = self._progress.add_task(f"job {event.job_id}", total=event.tasks, status="")
        elif isinstance(event, events.TaskStarted):
            self.running += 1
        elif isinstance(event, events.TaskFinished):
            self.running -= 1
        elif isinstance(event, events.TaskAccepted):
            self.done += 1
        elif isinstance(event, events.TaskRejected) and not event.retry:
            self.failed += 1
        if self._bar is not None:
            self._progress.update(self._bar, completed=self.done, status=self.status())
        if isinstance(event, events.JobFinished):
            self._progress.stop()
            self._bar = None

    def status(self) -> str:
        """``running 3 · failed 0 · spent 0.004 ETH (0.002 held)``"""
        return (f"running {self.running} · failed {self.failed} · spent {self.budget.spent / ETHER:.6g} ETH "
                f"({self.budget.escrowed / ETHER:.6g} held)")
