"""Synthetic datasets: ``DatasetGenerator(...).generate(instructions, singletons, models)``.

Each instruction (a dict of the first singleton's inputs) is a row. A list of singletons
is a pipeline: every output of a step becomes a row of the next step, whose inputs it
fills by name (``(Singleton, {"input": "output field"})`` renames). Rows go through the
pipeline on their own (a slow row holds no other), at most ``batch_size`` tasks at a time;
a row that fails is tried again on other nodes (the nodes it failed on are excluded from
its next start), up to ``retries`` more times, then listed with its error.

Every finished row is appended to a journal (``<dataset path>/journal.jsonl``, flushed to
disk) before anything else happens, so a job that is interrupted and run again with the
same instructions and singletons picks up where it stopped: finished rows are never run
or paid for twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gridtask.exceptions import (
    ChainError,
    GridtaskError,
    RelayError,
    ResultParseError,
    TaskFailed,
    ValidationError,
)
from gridtask.limits import check_positive
from gridtask.retry import Policy
from gridtask.sdk.dria.client import Dria
from gridtask.sdk.dria.factory._base import SingletonTemplate
from gridtask.sdk.dria.models import Model, Task

JOURNAL = "journal.jsonl"
DEFAULT_HOME = Path.home() / ".gridtask" / "datasets"
ROW_RETRY = Policy("dataset row", lambda exc: isinstance(exc, (TaskFailed, ChainError, RelayError, ResultParseError)),
                   first=0.5, cap=5.0, jitter=0.2)
"""A row that failed (on chain, at the relay, or with a result its parser cannot read) is
sent again as a new task; ``DatasetGenerator.retries`` bounds how many times."""

StepSpec = type[SingletonTemplate] | tuple[type[SingletonTemplate], Mapping[str, str]]


@dataclass(frozen=True)
class FailedRow:
    """A row that failed for good: its place (``"3"``, or ``"3/1"`` for the second output of
    row 3's first step), the step, the inputs it had, the last error and how many tries."""

    row: str
    step: int
    singleton: str
    inputs: dict[str, Any]
    error: str
    attempts: int


class DriaDataset:
    """A dataset on disk: its journal of finished rows, read back into entries.

    ``schema`` (optional): the pydantic model every entry must fit; ``generate`` refuses a
    pipeline whose last step's outputs lack one of its fields, before paying.
    """

    def __init__(self, name: str, description: str = "", schema: type[BaseModel] | None = None, *,
                 path: Path | str | None = None) -> None:
        if not name or not isinstance(name, str) or "/" in name or name.startswith("."):
            raise ValidationError(f"dataset name: must be a plain non-empty name (got {name!r})")
        self.name = name
        self.description = description
        self.schema = schema
        self.path = Path(path) if path is not None else DEFAULT_HOME / name
        self.failed: list[FailedRow] = []
        """Rows of the last ``generate`` that failed for good."""

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL

    def records(self) -> list[dict[str, Any]]:
        """The journal's records (a torn last line, from a kill mid-write, is skipped)."""
        if not self.journal.exists():
            return []
        out = []
        for line in self.journal.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def get_entries(self, data_only: bool = True) -> list[dict[str, Any]]:
        """The final step's outputs, in row order; ``data_only=False`` adds ``_row`` and ``_task``."""
        records = [r for r in self.records() if r.get("kind") == "done"]
        if not records:
            return []
        steps = self._steps()
        last = steps - 1 if steps else max(r["step"] for r in records)
        done = sorted((r for r in records if r["step"] == last), key=lambda r: _row_key(r["row"]))
        entries = []
        for record in done:
            for index, output in enumerate(record["outputs"]):
                entries.append(output if data_only else
                               {**output, "_row": f"{record['row']}/{index}", "_task": record["task"]})
        return entries

    def _steps(self) -> int | None:
        for record in self.records():
            if record.get("kind") == "job":
                return int(record["steps"])
        return None

    def __len__(self) -> int:
        return len(self.get_entries())

    def to_jsonl(self, filepath: Path | str) -> Path:
        """The entries as JSON lines (one object per line)."""
        path = Path(filepath)
        path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.get_entries()))
        return path

    def to_json(self, filepath: Path | str) -> Path:
        path = Path(filepath)
        path.write_text(json.dumps(self.get_entries(), ensure_ascii=False, indent=2))
        return path

    def to_pandas(self) -> Any:
        """The entries as a ``pandas.DataFrame`` (``pip install gridtask[dria]``)."""
        pandas = _optional("pandas")
        return pandas.DataFrame(self.get_entries())

    def to_hf_dataset(self) -> Any:
        """The entries as a Hugging Face ``datasets.Dataset`` (``pip install gridtask[dria]``)."""
        datasets = _optional("datasets")
        return datasets.Dataset.from_list(self.get_entries())

    to_hf = to_hf_dataset

    def reset(self) -> DriaDataset:
        """Forget every finished row (the next ``generate`` starts afresh)."""
        self.journal.unlink(missing_ok=True)
        return self


class _Journal:
    """Append-only, one JSON object per line, flushed and fsynced per record."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class _Step:
    singleton: type[SingletonTemplate]
    renames: Mapping[str, str]
    models: list[Model | str]

    def inputs(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The step's inputs from a row: its fields by name (or by the rename given)."""
        return {field: row[self.renames.get(field, field)] for field in self.singleton.input_names()
                if self.renames.get(field, field) in row}


class DatasetGenerator:
    """Runs instructions through singletons into a ``DriaDataset`` (see the module doc).

    ``dria_client``: the ``Dria`` to run tasks with (a new one from the config by default).
    ``timeout``: seconds one task may take; ``retries``: how many more times a failed row
    is tried; ``batch_size``: tasks in flight at once; ``progress``: show a rich bar.
    """

    def __init__(self, dataset: DriaDataset | None = None, dria_client: Dria | None = None, *,
                 batch_size: int = 16, retries: int = 2, timeout: float = 120, progress: bool = True) -> None:
        for name, value, least in (("batch_size", batch_size, 1), ("retries", retries, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValidationError(f"{name}: must be an integer of at least {least} (got {value!r})")
        check_positive("timeout", timeout, "seconds")
        self.dataset = dataset
        self.dria_client = dria_client
        self.batch_size, self.retries, self.timeout, self.progress = batch_size, retries, timeout, progress

    def set_dataset(self, dataset: DriaDataset) -> DatasetGenerator:
        self.dataset = dataset
        return self

    async def generate(self, instructions: Sequence[Mapping[str, Any]], singletons: StepSpec | Sequence[StepSpec],
                       models: Model | str | Sequence[Model | str] | Sequence[Sequence[Model | str]] = Model.LOCAL,
                       ) -> DriaDataset:
        """Run every instruction through the pipeline; return the dataset (its entries are
        the last step's outputs; ``dataset.failed`` lists rows that failed for good)."""
        if self.dataset is None:
            raise ValidationError("DatasetGenerator: set a dataset first (DatasetGenerator(DriaDataset(name)))")
        dataset = self.dataset
        steps = _steps(singletons, models)
        rows = _instructions(instructions, steps[0])
        _check_pipeline(steps, dataset.schema)
        fingerprint = _fingerprint(rows, steps)
        done: dict[tuple[int, str], dict[str, Any]] = {}
        for record in dataset.records():
            if record.get("kind") == "job" and record["fingerprint"] != fingerprint:
                raise ValidationError(f"dataset {dataset.name!r}: its journal {dataset.journal} belongs to another job "
                                      "(other instructions or singletons): use another dataset name or "
                                      "dataset.reset()")
            if record.get("kind") == "done":
                done[(record["step"], record["row"])] = record
        journal = _Journal(dataset.journal)
        if not dataset.journal.stat().st_size:
            journal.write({"kind": "job", "fingerprint": fingerprint, "steps": len(steps),
                           "singletons": [s.singleton.__name__ for s in steps]})
        dria = self.dria_client or Dria()
        slots = asyncio.Semaphore(self.batch_size)
        failed: list[FailedRow] = []
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[note]}"), TimeElapsedColumn(), disable=not self.progress)
        bars = [bar.add_task(f"step {i + 1} {s.singleton.__name__}", total=len(rows) if i == 0 else 0, note="")
                for i, s in enumerate(steps)]

        async def run_row(step: int, row: str, values: dict[str, Any]) -> None:
            record = done.get((step, row))
            if record is None:
                record = await self._attempt(dria, slots, steps[step], step, row, values, failed,
                                             lambda n: bar.update(bars[step], note=f"{n} retried"))
                if record is None:
                    bar.advance(bars[step])
                    return
                journal.write(record)
            bar.advance(bars[step])
            if step + 1 < len(steps):
                outputs = record["outputs"]
                bar.update(bars[step + 1], total=(bar.tasks[step + 1].total or 0) + len(outputs))
                await asyncio.gather(*(run_row(step + 1, f"{row}/{i}", {**values, **out})
                                       for i, out in enumerate(outputs)))

        try:
            async with dria:
                with bar:
                    await asyncio.gather(*(run_row(0, str(i), row) for i, row in enumerate(rows)))
        finally:
            journal.close()
        dataset.failed = failed
        return dataset

    async def _attempt(self, dria: Dria, slots: asyncio.Semaphore, step: _Step, index: int, row: str,
                       values: dict[str, Any], failed: list[FailedRow], retried: Callable[[int], None]
                       ) -> dict[str, Any] | None:
        """Run one row of one step to its parsed outputs, retrying (ROW_RETRY) up to
        ``retries`` more times; ``None`` (and a ``FailedRow``) when every try failed."""
        inputs = step.inputs(values)
        tries = 0
        avoid: list[str] = []  # nodes this row failed on: its retries go elsewhere

        def more(exc: BaseException) -> bool:
            return tries <= self.retries and ROW_RETRY.retry_if(exc)

        policy = dataclasses.replace(ROW_RETRY, retry_if=more)

        async def once() -> dict[str, Any]:
            nonlocal tries
            tries += 1
            if tries > 1:
                retried(tries - 1)
            singleton = step.singleton(**inputs)
            async with slots:
                result = await dria.execute([Task(workflow=singleton.workflow(), models=step.models,
                                                  step_name=step.singleton.__name__)],
                                            timeout=self.timeout, exclude=avoid[-2:])
            if result.failures:
                failure = result.failures[0]
                if failure.node:
                    avoid.append(failure.node)
                raise failure.error
            try:
                outputs = singleton.callback(list(result))
            except ResultParseError:
                if result[0].node:
                    avoid.append(result[0].node)  # another node may answer otherwise
                raise
            return {"kind": "done", "step": index, "row": row, "task": result[0].id, "model": result[0].model,
                    "outputs": [o.model_dump(mode="json", by_alias=True) for o in outputs]}

        try:
            return await policy.call(once)
        except GridtaskError as exc:
            failed.append(FailedRow(row, index, step.singleton.__name__, inputs, f"{type(exc).__name__}: {exc}", tries))
            return None


def _steps(singletons: StepSpec | Sequence[StepSpec], models: Any) -> list[_Step]:
    pipeline = isinstance(singletons, (list, tuple)) and not _is_spec_pair(singletons)
    specs: list[Any] = list(singletons) if pipeline else [singletons]  # type: ignore[arg-type]
    if not specs:
        raise ValidationError("singletons: give at least one singleton class")
    if isinstance(models, (list, tuple)) and models and all(isinstance(m, (list, tuple)) for m in models):
        if len(models) != len(specs):
            raise ValidationError(f"models: one list per singleton ({len(specs)}), got {len(models)}")
        per_step = [list(m) for m in models]
    else:
        per_step = [[models] if isinstance(models, str) else list(models)] * len(specs)
    steps = []
    for spec, step_models in zip(specs, per_step, strict=True):
        singleton, renames = spec if isinstance(spec, tuple) else (spec, {})
        if not (isinstance(singleton, type) and issubclass(singleton, SingletonTemplate)):
            raise ValidationError(f"singletons: {singleton!r} is not a singleton class (such as Simple)")
        Model.expand(step_models)  # every name checked before anything is paid
        steps.append(_Step(singleton, dict(renames), step_models))
    return steps


def _is_spec_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping)


def _instructions(instructions: Sequence[Mapping[str, Any]], first: _Step) -> list[dict[str, Any]]:
    if not isinstance(instructions, Sequence) or not instructions:
        raise ValidationError("instructions: give a non-empty list of dicts")
    rows = []
    for i, row in enumerate(instructions):
        if not isinstance(row, Mapping):
            raise ValidationError(f"instruction {i}: must be a dict of {first.singleton.__name__}'s inputs")
        try:
            first.singleton(**first.inputs(row))
        except ValidationError as exc:
            raise ValidationError(f"instruction {i}: {exc}") from None
        rows.append(dict(row))
    return rows


def _check_pipeline(steps: list[_Step], schema: type[BaseModel] | None) -> None:
    """Each step's required inputs come from the step before (its outputs or what it was given)."""
    available = set(steps[0].singleton.input_names())
    for before, step in zip(steps, steps[1:], strict=False):
        available |= set(before.singleton.OutputSchema.model_fields)
        missing = [f for f in step.singleton.required_inputs() if step.renames.get(f, f) not in available]
        if missing:
            raise ValidationError(f"pipeline: {step.singleton.__name__} needs {missing}, which "
                                  f"{before.singleton.__name__} does not output: rename with "
                                  f"({step.singleton.__name__}, {{'{missing[0]}': '<output field>'}})")
    if schema is not None:
        last = steps[-1].singleton.OutputSchema
        missing = [f for f in schema.model_fields if f not in last.model_fields]
        if missing:
            raise ValidationError(f"dataset schema: fields {missing} are not outputs of {steps[-1].singleton.__name__}")


def _fingerprint(rows: list[dict[str, Any]], steps: list[_Step]) -> str:
    job = {"rows": rows, "steps": [[s.singleton.__name__, sorted(s.renames.items())] for s in steps]}
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()


def _row_key(row: str) -> list[int]:
    return [int(part) for part in row.split("/")]


def _optional(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise GridtaskError(f"this needs the {module!r} package: pip install 'gridtask[dria]'") from None
