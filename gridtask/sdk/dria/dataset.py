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

A journal holds the dataset's jobs in order, and its entries are the last job's: a
``generate``, then any ``enrich`` (a ``Prompt`` over every entry, adding its fields), or an
import (``DriaDataset.from_json`` / ``from_csv`` / ``from_huggingface``) to start from.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import json
import logging
import os
import random
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
from gridtask.sdk.dria.prompt import Prompt

log = logging.getLogger(__name__)
JOURNAL = "journal.jsonl"
DEFAULT_HOME = Path.home() / ".gridtask" / "datasets"
ROW_RETRY = Policy("dataset row", lambda exc: isinstance(exc, (TaskFailed, ChainError, RelayError, ResultParseError)),
                   first=0.5, cap=5.0, jitter=0.2)
"""A row that failed (on chain, at the relay, or with a result its parser cannot read) is
sent again as a new task; ``DatasetGenerator.retries`` bounds how many times."""

StepSpec = type[SingletonTemplate] | tuple[type[SingletonTemplate], Mapping[str, str]] | Prompt


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
        """Rows of the last ``generate`` or ``enrich`` that failed for good."""
        self.skipped: list[tuple[int, str]] = []
        """Rows an import left out (their place in the file and why): they did not fit ``schema``."""

    @classmethod
    def from_json(cls, name: str, description: str, schema: type[BaseModel], json_path: Path | str, *,
                  path: Path | str | None = None) -> DriaDataset:
        """A dataset of the entries in a JSON file (a list of objects, or one object)."""
        try:
            data = json.loads(Path(json_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValidationError(f"from_json: cannot read {json_path}: {exc}") from None
        return cls(name, description, schema, path=path)._imported([data] if isinstance(data, dict) else data,
                                                                    str(json_path))

    @classmethod
    def from_csv(cls, name: str, description: str, schema: type[BaseModel], csv_path: Path | str,
                 delimiter: str = ",", has_header: bool = True, *, path: Path | str | None = None) -> DriaDataset:
        """A dataset of a CSV file's rows (without a header, the columns are ``schema``'s fields in order)."""
        try:
            with open(csv_path, encoding="utf-8", newline="") as f:
                if has_header:
                    rows: list[Any] = list(csv.DictReader(f, delimiter=delimiter))
                else:
                    rows = [dict(zip(schema.model_fields, r, strict=False)) for r in csv.reader(f, delimiter=delimiter)]
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            raise ValidationError(f"from_csv: cannot read {csv_path}: {exc}") from None
        return cls(name, description, schema, path=path)._imported(rows, str(csv_path))

    @classmethod
    def from_huggingface(cls, name: str, description: str, dataset_id: Any, schema: type[BaseModel],
                         mapping: Mapping[str, str] | None = None, split: str = "train", *,
                         path: Path | str | None = None) -> DriaDataset:
        """A dataset of a Hugging Face dataset's split: ``dataset_id`` is what ``datasets.load_dataset``
        takes (a hub name, or a local directory of data files), or a ``datasets.Dataset``;
        ``mapping`` names, for each of ``schema``'s fields, the column it comes from."""
        if hasattr(dataset_id, "column_names"):
            rows = list(dataset_id)
        else:
            datasets = _optional("datasets")
            try:
                rows = list(datasets.load_dataset(dataset_id, split=split))
            except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "could not load"
                raise ValidationError(f"from_huggingface: cannot load {dataset_id!r} (split {split!r}): "
                                      f"{type(exc).__name__}: {exc}") from None
        if mapping:
            rows = [{field: row.get(column) for field, column in mapping.items()} for row in rows]
        return cls(name, description, schema, path=path)._imported(rows, str(dataset_id))

    def _imported(self, rows: Sequence[Any], origin: str) -> DriaDataset:
        """Start the journal with these rows (those that fit ``schema``) as its first job. The
        same rows imported again keep the journal (a rerun of a script that imports, then
        enriches, resumes its enrichment); other rows start it afresh."""
        if not (isinstance(self.schema, type) and issubclass(self.schema, BaseModel)):
            raise ValidationError(f"dataset {self.name!r}: an import needs schema, a pydantic model class its rows "
                                  f"must fit (got {self.schema!r})")
        entries: list[dict[str, Any]] = []
        for index, row in enumerate(rows):
            try:
                if not isinstance(row, Mapping):
                    raise ValidationError(f"not an object but {type(row).__name__}")
                entries.append(self.schema(**row).model_dump(mode="json"))
            except (ValidationError, ValueError, TypeError) as exc:
                self.skipped.append((index, str(exc).splitlines()[0]))
        if self.skipped:
            log.warning("dataset %s: %d of %d rows of %s do not fit %s and were left out (dataset.skipped)",
                        self.name, len(self.skipped), len(rows), origin, self.schema.__name__)
        fingerprint = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
        jobs = self.jobs()
        if jobs and jobs[0].header.get("import") and jobs[0].header["fingerprint"] == fingerprint:
            return self
        self.reset()
        journal = _Journal(self.journal)
        try:
            journal.write({"kind": "job", "job": 0, "fingerprint": fingerprint, "steps": 0, "import": origin})
            journal.write({"kind": "rows", "job": 0, "entries": entries})
        finally:
            journal.close()
        return self

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

    def jobs(self) -> list[_Job]:
        """The journal's jobs, in the order they ran."""
        jobs: list[_Job] = []
        for record in self.records():
            kind = record.get("kind")
            if kind == "job":
                jobs.append(_Job(record))
            elif kind in ("done", "rows") and jobs:
                # records before jobs were numbered belong to the first job
                job = jobs[min(int(record.get("job", 0)), len(jobs) - 1)]
                if kind == "rows":
                    job.rows.extend(record["entries"])
                else:
                    job.done[(record["step"], record["row"])] = record
        return jobs

    def get_entries(self, data_only: bool = True) -> list[dict[str, Any]]:
        """The last job's entries: an import's rows, or its final step's outputs in row order;
        ``data_only=False`` adds ``_row`` and ``_task``."""
        jobs = self.jobs()
        return _entries(jobs[-1], data_only) if jobs else []

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


@dataclass
class _Job:
    """One job of a journal: its header, and what it finished (or, for an import, its rows)."""

    header: dict[str, Any]
    done: dict[tuple[int, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _entries(job: _Job, data_only: bool = True) -> list[dict[str, Any]]:
    """A job's entries (see ``DriaDataset.get_entries``)."""
    if job.header.get("import"):
        return [dict(e) if data_only else {**e, "_row": str(i), "_task": None} for i, e in enumerate(job.rows)]
    last = int(job.header["steps"]) - 1
    done = sorted((r for (step, _), r in job.done.items() if step == last), key=lambda r: _row_key(r["row"]))
    entries = []
    for record in done:
        for index, output in enumerate(record["outputs"]):
            entries.append(output if data_only else
                           {**output, "_row": f"{record['row']}/{index}", "_task": record["task"]})
    return entries


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

    def _target(self) -> DriaDataset:
        if self.dataset is None:
            raise ValidationError("DatasetGenerator: set a dataset first (DatasetGenerator(DriaDataset(name)))")
        return self.dataset

    async def generate(self, instructions: Sequence[Mapping[str, Any]] | DriaDataset,
                       singletons: StepSpec | Sequence[StepSpec],
                       models: Model | str | Sequence[Model | str] | Sequence[Sequence[Model | str]] = Model.LOCAL,
                       sampling_ratio: float = 1.0) -> DriaDataset:
        """Run every instruction (or another dataset's entries) through the pipeline; return the
        dataset (its entries are the last step's outputs; ``dataset.failed`` lists rows that
        failed for good). ``sampling_ratio`` < 1 runs that share of the instructions, the same
        ones on every run (chosen from their content), so a rerun still resumes."""
        dataset = self._target()
        if isinstance(instructions, DriaDataset):
            instructions = instructions.get_entries()
        steps = _steps(singletons, models)
        rows = _sample(_instructions(instructions, steps[0]), sampling_ratio)
        _check_pipeline(steps, dataset.schema)
        return await self._run(dataset, rows, steps, {"fingerprint": _fingerprint(rows, steps)})

    async def enrich(self, prompt: Prompt, models: Model | str | Sequence[Model | str] = Model.LOCAL) -> DriaDataset:
        """Run ``prompt`` over every entry of the dataset and add the fields of its answer to the
        entry (a new job in the journal, which becomes the dataset's entries; rows that fail
        for good are left out and listed in ``dataset.failed``; run it again to retry them)."""
        dataset = self._target()
        if not isinstance(prompt, Prompt):
            raise ValidationError(f"enrich: give a Prompt (got {prompt!r})")
        steps = _steps(prompt, models)
        jobs = dataset.jobs()
        base = len(jobs) - 1
        name = steps[0].singleton.__name__
        if jobs and jobs[-1].header.get("enrich") and jobs[-1].header.get("singletons") == [name]:
            base = int(jobs[-1].header["base"])  # this enrichment again: resume it over the same entries
        entries = _entries(jobs[base]) if jobs else []
        if not entries:
            raise ValidationError(f"enrich: dataset {dataset.name!r} has no entries yet (generate or import first)")
        rows = _instructions(entries, steps[0])
        header = {"fingerprint": _fingerprint(rows, steps, "enrich"), "enrich": True, "base": base}
        return await self._run(dataset, rows, steps, header)

    async def _run(self, dataset: DriaDataset, rows: list[dict[str, Any]], steps: list[_Step],
                   header: dict[str, Any]) -> DriaDataset:
        """The job ``header`` names: resumed where the journal has it, else appended (only an
        enrichment may follow another job)."""
        jobs = dataset.jobs()
        index = next((i for i, job in enumerate(jobs) if job.header["fingerprint"] == header["fingerprint"]), None)
        if index is None and jobs and not header.get("enrich"):
            raise ValidationError(f"dataset {dataset.name!r}: its journal {dataset.journal} belongs to another job "
                                  "(other instructions or singletons): use another dataset name or "
                                  "dataset.reset()")
        done = dict(jobs[index].done) if index is not None else {}
        merge = bool(header.get("enrich"))
        journal = _Journal(dataset.journal)
        if index is None:
            index = len(jobs)
            names = [s.singleton.__name__ for s in steps]
            journal.write({"kind": "job", "job": index, **header, "steps": len(steps), "singletons": names})
            if merge:  # rows an earlier run of this enrichment finished (over other entries) are not paid again
                for i, record in enumerate(_enriched_before(jobs, names, rows)):
                    if record is not None:
                        done[(0, str(i))] = {**record, "row": str(i), "job": index}
                        journal.write(done[(0, str(i))])
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
                                             lambda n: bar.update(bars[step], note=f"{n} retried"), merge)
                if record is None:
                    bar.advance(bars[step])
                    return
                journal.write({**record, "job": index})
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
                       values: dict[str, Any], failed: list[FailedRow], retried: Callable[[int], None],
                       merge: bool = False) -> dict[str, Any] | None:
        """Run one row of one step to its parsed outputs (with ``merge``, the row's fields and
        the outputs' together), retrying (ROW_RETRY) up to ``retries`` more times; ``None``
        (and a ``FailedRow``) when every try failed."""
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
            dumped = [o.model_dump(mode="json", by_alias=True) for o in outputs]
            record = {"kind": "done", "step": index, "row": row, "task": result[0].id, "model": result[0].model,
                      "outputs": [{**values, **o} for o in dumped] if merge else dumped}
            return {**record, "input": values} if merge else record

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
        if isinstance(spec, Prompt):
            spec = (spec.singleton(), spec.input_map)
        singleton, renames = spec if isinstance(spec, tuple) else (spec, {})
        if not (isinstance(singleton, type) and issubclass(singleton, SingletonTemplate)):
            raise ValidationError(f"singletons: {singleton!r} is not a singleton class (such as Simple) or a Prompt")
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


def _enriched_before(jobs: list[_Job], names: list[str], rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """For each row, a finished record of an earlier enrichment by the same prompt over the same
    row (by content), if there is one."""
    def key(row: Mapping[str, Any]) -> str:
        return json.dumps(row, sort_keys=True, default=str)

    finished = {key(r["input"]): r for job in jobs if job.header.get("enrich") and job.header.get("singletons") == names
                for r in job.done.values() if "input" in r}
    return [finished.get(key(row)) for row in rows]


def _sample(rows: list[dict[str, Any]], ratio: float) -> list[dict[str, Any]]:
    """``ratio`` of the rows (at least one), in their order, chosen by a generator seeded with
    their content: the same rows on every run of the same job."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
        raise ValidationError(f"sampling_ratio: a number above 0 and at most 1 (got {ratio!r})")
    if ratio == 1:
        return rows
    seed = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).digest()
    keep = random.Random(seed).sample(range(len(rows)), max(1, int(len(rows) * ratio)))
    return [rows[i] for i in sorted(keep)]


def _fingerprint(rows: list[dict[str, Any]], steps: list[_Step], kind: str = "generate") -> str:
    job: dict[str, Any] = {"rows": rows, "steps": [[s.singleton.__name__, sorted(s.renames.items())] for s in steps]}
    if kind != "generate":  # a generate job's fingerprint is what journals written before enrich hold
        job["kind"] = kind
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()


def _row_key(row: str) -> list[int]:
    return [int(part) for part in row.split("/")]


def _optional(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise GridtaskError(f"this needs the {module!r} package: pip install 'gridtask[dria]'") from None
