"""Workflows in Dria's own JSON format (``dria-workflows`` 0.3.5), as pydantic models.

A workflow is ``config`` (limits and tools), ``external_memory`` (its inputs), ``tasks``
(each a list of chat ``messages`` with ``{{name}}`` placeholders, the ``inputs`` that fill
them from memory, an ``operator`` and the ``outputs`` its answer goes to), ``steps`` (edges
between tasks, each with an optional ``condition`` and ``fallback``) and ``return_value``.
It is plain data: ``model_dump()`` is JSON, so it travels inside a task's encrypted
parameters, and a workflow built with the real ``dria-workflows`` package parses as it is.

``Workflow.check()`` finds what would make a run fail for sure (an edge to a task that does
not exist, a placeholder no input fills, a read of a name nothing ever writes) before any
model runs; the SDK runs it before paying, a node before running. Its errors name the task
or step and the field.

The first format of gridtask (``Workflow(steps=[Step(prompt, output)], return_value=...,
memory=...)``) is still accepted and converted: one generation task per step, in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from gridtask.workflows.errors import WorkflowError

END_IDS = frozenset({"_end", "__end"})
"""Edge targets that end the run (the builder's ``_end``; ``__end`` in Dria's executor)."""
RESULT = "__result"
"""An output's ``value`` that means "the task's answer" (any other value is written as is)."""
PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
MAX_STEPS = 8
"""The most steps of the first (list of steps) format."""
NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"


class InputValueType(StrEnum):
    INPUT = "input"
    READ = "read"
    POP = "pop"
    PEEK = "peek"
    GET_ALL = "get_all"
    SIZE = "size"
    STRING = "string"


class OutputType(StrEnum):
    WRITE = "write"
    INSERT = "insert"
    PUSH = "push"


class Operator(StrEnum):
    GENERATION = "generation"
    FUNCTION_CALLING = "function_calling"
    FUNCTION_CALLING_RAW = "function_calling_raw"
    SEARCH = "search"
    SAMPLE = "sample"
    END = "end"


class Expression(StrEnum):
    EQUAL = "Equal"
    NOT_EQUAL = "NotEqual"
    CONTAINS = "Contains"
    NOT_CONTAINS = "NotContains"
    GREATER_THAN = "GreaterThan"
    LESS_THAN = "LessThan"
    GREATER_THAN_OR_EQUAL = "GreaterThanOrEqual"
    LESS_THAN_OR_EQUAL = "LessThanOrEqual"
    HAVE_SIMILAR = "HaveSimilar"


class PostProcessType(StrEnum):
    REPLACE = "replace"
    APPEND = "append"
    PREPEND = "prepend"
    TRIM = "trim"
    TRIM_START = "trim_start"
    TRIM_END = "trim_end"
    TO_LOWER = "to_lower"
    TO_UPPER = "to_upper"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)


class CustomToolTemplate(_Model):
    """A tool the workflow defines. A node never runs it: a function call's answer is the call."""

    name: str = Field(min_length=1)
    description: str
    mode: Literal["custom", "http_request"]
    parameters: dict[str, Any] | None = None
    url: str | None = None
    method: str | None = None
    headers: dict[str, str] | None = None
    body: dict[str, Any] | None = None


class Config(_Model):
    """Limits: ``max_steps`` tasks run, ``max_time`` seconds, ``max_tokens`` per generation."""

    max_steps: int = Field(ge=1)
    max_time: int = Field(ge=1)
    tools: list[str] = Field(default_factory=list)
    custom_tools: list[CustomToolTemplate] | None = None
    max_tokens: int | None = Field(default=None, ge=1)


class SearchQuery(_Model):
    value_type: InputValueType
    key: str


class InputValue(_Model):
    """Where an input comes from: ``type`` says how ``key`` is read from memory."""

    type: InputValueType
    index: int | None = Field(default=None, ge=0)
    search_query: SearchQuery | None = None
    key: str


class Input(_Model):
    """``{{name}}`` in the task's messages is filled with ``value``; ``required``: non-empty."""

    name: str
    value: InputValue
    required: bool


class Output(_Model):
    """Where the answer goes: ``write`` (a value), ``push`` (a stack), ``insert`` (a file list)."""

    type: OutputType
    key: str
    value: str


class MessageInput(_Model):
    role: str
    content: str


class Task(_Model):
    """One step's work: fill the messages from ``inputs``, run ``operator``, store ``outputs``."""

    id: str = Field(min_length=1)
    name: str = "Task"
    description: str = "Task Description"
    messages: list[MessageInput] = Field(default_factory=list)
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    """A generation's answer must be JSON valid against this JSON schema."""
    inputs: list[Input] = Field(default_factory=list)
    operator: Operator
    outputs: list[Output] = Field(default_factory=list)

    @field_validator("json_schema", mode="before")
    @classmethod
    def _schema_as_dict(cls, value: Any) -> Any:
        return schema_dict(value)

    def placeholders(self) -> list[tuple[int, str]]:
        """(message index, name) of each ``{{name}}`` in the messages, in order."""
        return [(i, name) for i, m in enumerate(self.messages) for name in PLACEHOLDER.findall(m.content)]


class TaskPostProcess(_Model):
    process_type: PostProcessType
    lhs: str | None = None
    rhs: str | None = None


class TaskOutput(_Model):
    """The workflow's result: one memory read, or several (always JSON then)."""

    input: InputValue | list[InputValue]
    to_json: bool | None = None
    post_process: list[TaskPostProcess] | None = None


class Condition(_Model):
    """After the source task: go to the edge's target if ``input expression expected``
    holds, else to ``target_if_not``."""

    input: InputValue
    expected: str
    expression: Expression
    target_if_not: str


class Edge(_Model):
    """From ``source`` to ``target`` (or ``condition.target_if_not``); to ``fallback`` if
    ``source`` failed."""

    source: str
    target: str
    condition: Condition | None = None
    fallback: str | None = None


class Step(BaseModel):
    """A step of gridtask's first format: fill ``prompt`` from memory, keep the answer as ``output``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1)
    output: str = Field(pattern=f"^{NAME_PATTERN}$")

    @property
    def placeholders(self) -> list[str]:
        """The memory names the prompt reads, in order of appearance."""
        return PLACEHOLDER.findall(self.prompt)


MemoryValue = str | dict[str, Any] | list[str | dict[str, Any]]


def default_config() -> Config:
    """Dria's defaults (``dria_workflows.Workflow.default_config``)."""
    return Config(max_steps=50, max_time=200, tools=["ALL"], custom_tools=None, max_tokens=None)


class Workflow(_Model):
    """A Dria workflow. ``Workflow(steps=[Step(...)], return_value="x", memory={...})``, the
    first format, is converted on the way in."""

    config: Config = Field(default_factory=default_config)
    external_memory: dict[str, MemoryValue] | None = None
    tasks: list[Task] = Field(default_factory=list)
    steps: list[Edge] = Field(default_factory=list)
    return_value: TaskOutput

    @model_validator(mode="before")
    @classmethod
    def _from_first_format(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and ("memory" in data or isinstance(data.get("return_value"), str)):
            return _convert_steps(data)
        return data

    def task(self, task_id: str) -> Task | None:
        return next((t for t in self.tasks if t.id == task_id), None)

    def edge_from(self, task_id: str) -> Edge | None:
        """The edge taken after ``task_id`` (the first whose source it is), as Dria's executor."""
        return next((e for e in self.steps if e.source == task_id), None)

    def check(self, names: Iterable[str] = ()) -> None:
        """Raise ``WorkflowError`` for anything that makes a run fail for sure.

        ``names`` are memory entries that exist before the first task besides
        ``external_memory`` (kept for the first format's callers).
        """
        _check_graph(self)
        _check_tasks(self, set(names))


def schema_dict(value: Any) -> dict[str, Any] | None:
    """A JSON schema as a dict, from a dict, its JSON text or a pydantic model class."""
    if value is None or isinstance(value, dict):
        schema = value
    elif isinstance(value, type) and issubclass(value, BaseModel):
        schema = value.model_json_schema()
    elif isinstance(value, str):
        try:
            schema = json.loads(value)
        except ValueError:
            raise ValueError("not JSON: give a JSON schema, its JSON text or a pydantic model class "
                             "(Dria's base64 regex form for Ollama is not supported)") from None
    else:
        raise ValueError(f"must be a JSON schema (got {type(value).__name__})")
    if schema is not None:
        if not isinstance(schema, dict):
            raise ValueError("a JSON schema is an object")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from None
    return schema


def _convert_steps(data: Mapping[str, Any]) -> dict[str, Any]:
    """The first format (steps of prompt + output) as a Dria workflow: step i is task
    ``step{i}``, reading each placeholder, writing its output, then the next step."""
    unknown = set(data) - {"steps", "return_value", "memory"}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} in a workflow of steps")
    steps = [s if isinstance(s, Step) else Step.model_validate(s) for s in data.get("steps") or []]
    if not 1 <= len(steps) <= MAX_STEPS:
        raise ValueError(f"steps: 1 to {MAX_STEPS} steps (got {len(steps)})")
    memory = data.get("memory") or {}
    if not isinstance(memory, Mapping) or not all(isinstance(v, str) for v in memory.values()):
        raise ValueError("memory: names and values must be strings")
    return_value = data.get("return_value")
    if not isinstance(return_value, str) or not re.fullmatch(NAME_PATTERN, return_value):
        raise ValueError(f"return_value: a name (got {return_value!r})")
    ids = [f"step{i}" for i in range(len(steps))] + ["_end"]
    tasks: list[dict[str, Any]] = [
        {
            "id": ids[i],
            "messages": [{"role": "user", "content": step.prompt}],
            "inputs": [{"name": n, "value": {"type": "read", "key": n}, "required": True}
                       for n in dict.fromkeys(step.placeholders)],
            "operator": "generation",
            "outputs": [{"type": "write", "key": step.output, "value": RESULT}],
        }
        for i, step in enumerate(steps)
    ]
    tasks.append({"id": "_end", "messages": [{"role": "user", "content": ""}], "operator": "end"})
    return {
        "config": {"max_steps": 50, "max_time": 200, "tools": []},
        "external_memory": dict(memory),
        "tasks": tasks,
        "steps": [{"source": ids[i], "target": ids[i + 1]} for i in range(len(steps))],
        "return_value": {"input": {"type": "read", "key": return_value}, "to_json": False},
    }


def _task_label(task_id: str) -> str:
    return f"task {task_id!r}"


def _check_graph(workflow: Workflow) -> None:
    ids: set[str] = set()
    for index, task in enumerate(workflow.tasks):
        if task.id in ids:
            raise WorkflowError(f"two tasks have the ID {task.id!r}", task=f"tasks[{index}]", field="id")
        ids.add(task.id)
    if not workflow.steps:
        raise WorkflowError("no edges: a workflow starts at the source of its first step", field="steps")
    targets = ids | END_IDS
    for index, edge in enumerate(workflow.steps):
        where = f"step {index} ({edge.source} -> {edge.target})"
        if edge.source not in ids:
            raise WorkflowError(f"source {edge.source!r} is not a task", task=where, field="source")
        fields = [("target", edge.target), ("fallback", edge.fallback)]
        if edge.condition is not None:
            fields.append(("condition.target_if_not", edge.condition.target_if_not))
        for field, target in fields:
            if target is not None and target not in targets:
                raise WorkflowError(f"{target!r} is not a task (nor _end)", task=where, field=field)
    # every task a run can reach must have an edge out, or Dria's executor would stop before it
    sources = {edge.source for edge in workflow.steps}
    reached = {workflow.steps[0].source}
    for edge in workflow.steps:
        reached.update(t for t in (edge.target, edge.fallback,
                                   edge.condition.target_if_not if edge.condition else None) if t)
    for task in workflow.tasks:
        if task.id in reached and task.id not in sources and task.operator != Operator.END \
                and task.id not in END_IDS:
            raise WorkflowError("no step leaves this task, so it would never run", task=_task_label(task.id),
                                field="steps")


def _written(workflow: Workflow) -> tuple[set[str], set[str]]:
    """(names some value is written to, names some stack is pushed to), memory included."""
    values: set[str] = set()
    stacks: set[str] = set()
    for name, value in (workflow.external_memory or {}).items():
        (stacks if isinstance(value, list) else values).add(name)
    for task in workflow.tasks:
        for output in task.outputs:
            if output.type == OutputType.WRITE:
                values.add(output.key)
            elif output.type == OutputType.PUSH:
                stacks.add(output.key)
    return values, stacks


_STACK_READS = {InputValueType.POP, InputValueType.PEEK, InputValueType.GET_ALL}


def _unreadable(value: InputValue, values: set[str], stacks: set[str]) -> str | None:
    """Why reading ``value`` can only give nothing, or ``None`` if it may give something."""
    if value.type == InputValueType.READ and value.key not in values:
        if value.key in stacks:
            return f"reads {value.key!r} with 'read', but it is a stack (use get_all, pop or peek)"
        return f"reads {value.key!r}, which nothing writes (no task output, not in external_memory)"
    if value.type in _STACK_READS and value.key not in stacks:
        return f"reads stack {value.key!r} ({value.type}), which nothing pushes (no task output, " \
               "not a list in external_memory)"
    if value.type == InputValueType.INPUT:
        return "reads the run's input ('input'), which gridtask nodes never have: use external_memory"
    return None


def _check_tasks(workflow: Workflow, names: set[str]) -> None:
    values, stacks = _written(workflow)
    values |= names
    for task in workflow.tasks:
        where = _task_label(task.id)
        if task.operator == Operator.END or task.id in END_IDS:
            continue
        if not task.messages:
            raise WorkflowError("at least one message", task=where, field="messages")
        input_names = {i.name for i in task.inputs}
        for message_index, name in task.placeholders():
            if name not in input_names:
                raise WorkflowError(
                    f"reads unknown placeholder {{{{{name}}}}}: no input of the task is named {name!r}",
                    task=where, field=f"messages[{message_index}].content")
        for index, item in enumerate(task.inputs):
            why = _unreadable(item.value, values, stacks) if item.required else None
            if why:
                raise WorkflowError(f"required input {item.name!r} {why}", task=where, field=f"inputs[{index}]")
        if task.json_schema is not None and task.operator != Operator.GENERATION:
            raise WorkflowError(f"a JSON schema is for generation tasks, not {task.operator}",
                                task=where, field="schema")
    rv = workflow.return_value.input
    for index, value in enumerate(rv if isinstance(rv, list) else [rv]):
        why = _unreadable(value, values, stacks)
        if why:
            raise WorkflowError(f"return value {why}", field=f"return_value.input[{index}]"
                                if isinstance(rv, list) else "return_value.input")
    tools = [t.name for t in workflow.config.custom_tools or []]
    if len(set(tools)) != len(tools):
        raise WorkflowError(f"two custom tools share a name ({tools})", field="config.custom_tools")


def parse_workflow(workflow: Any) -> Workflow:
    """A checked ``Workflow`` from itself, its ``model_dump()``, its JSON text, or a workflow of
    the real ``dria_workflows`` package; ``WorkflowError`` naming the task and field if not."""
    if isinstance(workflow, str):
        try:
            workflow = json.loads(workflow)
        except ValueError as exc:
            raise WorkflowError(f"malformed workflow: not JSON ({exc})") from None
    if not isinstance(workflow, Workflow):
        if isinstance(workflow, BaseModel):  # e.g. dria_workflows.Workflow: its fields, schema classes kept
            workflow = {name: getattr(workflow, name) for name in type(workflow).model_fields}
            workflow = _plain(workflow)
        try:
            workflow = Workflow.model_validate(workflow)
        except PydanticValidationError as exc:
            raise WorkflowError(_describe(exc, workflow)) from None
    workflow.check()
    return workflow


def _plain(value: Any) -> Any:
    """Pydantic models (of any package) as dicts, keeping classes (a task's schema) as they are."""
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _describe(exc: PydanticValidationError, raw: Any) -> str:
    """Pydantic's errors with each location told as a task ID or step: ``task 'b': operator: ...``."""
    parts = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = []
        if len(loc) >= 2 and loc[0] in ("tasks", "steps") and isinstance(loc[1], int):
            item = _item(raw, loc[0], loc[1])
            if loc[0] == "tasks":
                task_id = item.get("id") if isinstance(item, Mapping) else None
                where.append(_task_label(task_id) if isinstance(task_id, str) else f"tasks[{loc[1]}]")
            else:
                where.append(f"step {loc[1]}")
            loc = loc[2:]
        field = ".".join(str(p) for p in loc if p not in ("function-after[_from_first_format()]",))
        if field:
            where.append(field)
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{': '.join(where) or 'workflow'}: {message}")
    return "malformed workflow: " + "; ".join(parts)


def _item(raw: Any, field: str, index: int) -> Any:
    items = raw.get(field) if isinstance(raw, Mapping) else None
    if isinstance(items, list) and 0 <= index < len(items):
        return items[index]
    return None
