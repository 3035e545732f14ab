"""Runs a Dria workflow on a node, as Dria's executor (``ollama-workflows``) does.

The run starts at the source of the first edge. Each task reads its inputs from memory
(``read`` a value, ``pop``/``peek``/``get_all``/``size`` of a stack, a ``string``
literal), fills its messages, runs its operator and sends the answer to its outputs
(``write``, ``push``, ``insert``). Then the task's edge says where to go: its target, or
``condition.target_if_not`` when the condition does not hold, or ``fallback`` when the task
failed. ``_end`` ends the run, and ``return_value`` is read from memory.

What differs from Dria's executor, on purpose:

- Nothing leaves the node: ``function_calling`` answers with the call the model chose
  (``{"name": ..., "arguments": {...}}``, checked against the tool's parameters), and no
  tool is run; operators needing a backend the node lacks (``search``, ``sample``,
  built-in tools, ``HaveSimilar``) are refused before any model runs.
- A generation with a JSON schema is validated; an answer that does not match is asked
  again, with the error, up to ``SCHEMA_ATTEMPTS`` times, then the step fails.
- ``max_steps`` counts the tasks run; a run that needs one more fails. Numbers in a
  ``GreaterThan``-like condition that are not numbers fail the step (Dria's panics).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema

from gridtask.workflows.errors import LimitExceeded, SchemaViolation, UnsupportedOperator, WorkflowFailed
from gridtask.workflows.model import (
    END_IDS,
    PLACEHOLDER,
    RESULT,
    Edge,
    Expression,
    InputValue,
    InputValueType,
    Operator,
    OutputType,
    PostProcessType,
    Task,
    Workflow,
    parse_workflow,
)

OFFERED_OPERATORS = frozenset({Operator.GENERATION, Operator.FUNCTION_CALLING,
                               Operator.FUNCTION_CALLING_RAW, Operator.END})
"""What a gridtask node runs (``search`` and ``sample`` need backends it does not have)."""
SCHEMA_ATTEMPTS = 3
"""How many answers a generation with a JSON schema gets before the step fails."""

Message = dict[str, str]


class Generate(Protocol):
    """A model: chat ``messages`` in, at most ``max_tokens`` tokens of text out. ``schema``
    is a hint a backend may use for constrained decoding; the engine validates anyway."""

    def __call__(self, messages: list[Message], max_tokens: int,
                 schema: dict[str, Any] | None) -> Awaitable[str]: ...


class StepFailed(Exception):
    """A task failed: its edge's fallback runs, or the workflow fails with this message."""


# ------------------------------------------------------------------------------- memory


Entry = Any
"""A memory entry: a string, or a JSON value when the text parsed as JSON (as Dria's)."""


def entry_of(text: str) -> Entry:
    """Dria's ``Entry::try_value_or_str``: JSON if the text parses, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def text_of(entry: Entry) -> str:
    """An entry as text: a string as it is, JSON compact (as serde_json prints it)."""
    if isinstance(entry, str):
        return entry
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False)


def _texts(entries: list[Entry] | None) -> str:
    """Dria's display of several entries: each followed by `` \\n``."""
    return "".join(f"{text_of(e)} \n" for e in entries or [])


@dataclass
class Memory:
    """Values (``write``/``read``), stacks (``push``/``pop``/``peek``/``get_all``/``size``)
    and the inserted documents (``insert``)."""

    values: dict[str, Entry] = field(default_factory=dict)
    stacks: dict[str, list[Entry]] = field(default_factory=dict)
    files: list[Entry] = field(default_factory=list)

    @classmethod
    def of(cls, external: dict[str, Any] | None) -> Memory:
        memory = cls()
        for key, value in (external or {}).items():
            if isinstance(value, list):
                memory.stacks[key] = list(value)
            else:
                memory.values[key] = value
        return memory


@dataclass(frozen=True)
class Read:
    """What an input read: nothing (``None``), one entry, or a stack's entries."""

    entry: Entry | None = None
    entries: list[Entry] | None = None
    many: bool = False

    @property
    def empty(self) -> bool:
        return (self.entries is None) if self.many else (self.entry is None)

    def text(self) -> str:
        if self.many:
            return _texts(self.entries)
        return "" if self.entry is None else text_of(self.entry)


def read(value: InputValue, memory: Memory) -> Read:
    """One input, as Dria's ``handle_input``; ``pop`` removes the top entry."""
    kind, key = value.type, value.key
    stack = memory.stacks.get(key)
    if kind == InputValueType.READ:
        return Read(memory.values.get(key))
    if kind == InputValueType.PEEK:
        index = value.index or 0
        return Read(stack[index] if stack is not None and index < len(stack) else None)
    if kind == InputValueType.GET_ALL:
        return Read(entries=None if stack is None else list(stack), many=True)
    if kind == InputValueType.POP:
        return Read(stack.pop() if stack else None)
    if kind == InputValueType.STRING:
        return Read(entry_of(key))
    if kind == InputValueType.SIZE:
        return Read(len(stack or []))
    return Read(None)  # INPUT: a node runs workflows without a run input


# ------------------------------------------------------------------------------ the run


@dataclass
class WorkflowResult:
    """What a run gives: the return value as Dria's nodes give it (text; JSON text when
    ``to_json``), the memory at the end, and the IDs of the tasks run, in order."""

    text: str
    memory: Memory
    trace: list[str]

    def as_result(self) -> dict[str, Any]:
        """The task result a node delivers: ``text``, ``memory`` (values as text),
        ``stacks`` (entries as text), ``trace``."""
        return {
            "text": self.text,
            "memory": {k: text_of(v) for k, v in self.memory.values.items()},
            "stacks": {k: [text_of(e) for e in v] for k, v in self.memory.stacks.items()},
            "trace": self.trace,
        }


def check_offered(workflow: Workflow, operators: Collection[Operator] = OFFERED_OPERATORS) -> None:
    """Refuse, before any model runs, a workflow that needs what this node does not offer."""
    tools = workflow.config.custom_tools or []
    for task in workflow.tasks:
        where = f"task {task.id!r}"
        if task.operator not in operators:
            need = {Operator.SEARCH: " (web search: this node has no search backend)",
                    Operator.SAMPLE: " (sampling from stacks)"}.get(task.operator, "")
            raise UnsupportedOperator(f"operator {task.operator.value!r} is not offered by this node{need}",
                                      task=where, field="operator")
        if task.operator in (Operator.FUNCTION_CALLING, Operator.FUNCTION_CALLING_RAW) and not tools:
            builtin = ", ".join(workflow.config.tools) or "none"
            raise UnsupportedOperator(
                f"function calling needs the workflow's custom tools (config.custom_tools); this node runs "
                f"no built-in tools (config.tools: {builtin})", task=where, field="operator")
    for index, edge in enumerate(workflow.steps):
        if edge.condition is not None and edge.condition.expression == Expression.HAVE_SIMILAR:
            raise UnsupportedOperator("expression 'HaveSimilar' needs a vector store this node does not have",
                                      task=f"step {index}", field="condition.expression")


async def run_workflow(
    workflow: Workflow | dict[str, Any],
    generate: Generate,
    *,
    max_tokens: int,
    max_tokens_limit: int | None = None,
    operators: Collection[Operator] = OFFERED_OPERATORS,
    clock: Callable[[], float] = time.monotonic,
) -> WorkflowResult:
    """Run ``workflow`` with ``generate``.

    ``max_tokens``: per generation when the workflow's ``config.max_tokens`` is unset;
    ``max_tokens_limit``: the node's ceiling, which ``config.max_tokens`` never exceeds.
    Raises ``WorkflowError`` (malformed), ``UnsupportedOperator`` (before any model runs) or
    ``WorkflowFailed`` (a step failed with no fallback, or a limit was reached).
    """
    workflow = parse_workflow(workflow)
    check_offered(workflow, operators)
    config = workflow.config
    tokens = config.max_tokens or max_tokens
    if max_tokens_limit is not None:
        tokens = min(tokens, max_tokens_limit)
    run = _Run(workflow, generate, tokens, clock)
    await run.steps()
    return WorkflowResult(run.return_value(), run.memory, run.trace)


class _Run:
    def __init__(self, workflow: Workflow, generate: Generate, max_tokens: int,
                 clock: Callable[[], float]) -> None:
        self.workflow = workflow
        self.generate = generate
        self.max_tokens = max_tokens
        self.clock = clock
        self.deadline = clock() + workflow.config.max_time
        self.memory = Memory.of(workflow.external_memory)
        self.trace: list[str] = []

    async def steps(self) -> None:
        config = self.workflow.config
        edge: Edge | None = self.workflow.steps[0]
        while edge is not None and edge.source not in END_IDS:
            task = self.workflow.task(edge.source)
            assert task is not None  # Workflow.check: every source is a task
            if len(self.trace) >= config.max_steps:
                raise LimitExceeded(f"max_steps of {config.max_steps} reached; {task.id!r} would be step "
                                    f"{len(self.trace) + 1} (ran {' -> '.join(self.trace)})", field="config.max_steps")
            self._check_time(task.id)
            self.trace.append(task.id)
            failure: WorkflowFailed | None = None
            try:
                await self.task(task)
            except StepFailed as exc:
                failure = WorkflowFailed(str(exc), task=f"task {task.id!r}")
            except SchemaViolation as exc:  # a failed generation, as Dria's: the fallback runs
                failure = exc
            if failure is not None:
                if edge.fallback is None:
                    raise failure
                target = edge.fallback
            elif edge.condition is not None:
                condition = edge.condition
                value = read(condition.input, self.memory).text()
                holds = _evaluate(condition.expression, value, condition.expected, task.id)
                target = edge.target if holds else condition.target_if_not
            else:
                target = edge.target
            edge = None if target in END_IDS else self.workflow.edge_from(target)

    def _check_time(self, task_id: str) -> None:
        if self.clock() >= self.deadline:
            raise LimitExceeded(f"max_time of {self.workflow.config.max_time} s reached before {task_id!r} "
                                f"(ran {' -> '.join(self.trace) or 'nothing'})", field="config.max_time")

    async def task(self, task: Task) -> None:
        if task.operator == Operator.END:
            return
        filled: dict[str, str] = {}
        for item in task.inputs:
            got = read(item.value, self.memory)
            if item.required and got.empty:
                raise StepFailed(f"required input {item.name!r} ({item.value.type} {item.value.key!r}) is empty")
            filled[item.name] = got.text()
        messages = [{"role": m.role, "content": _fill(m.content, filled)} for m in task.messages]
        if task.operator == Operator.GENERATION:
            answer = await self._answer(task, messages, task.json_schema)
        else:  # function calling: the call is the answer, never run
            answer = await self._answer(task, _with_tools(messages, self.workflow), _call_schema(self.workflow))
        for output in task.outputs:
            data = answer if output.value == RESULT else entry_of(output.value)
            if output.type == OutputType.WRITE:
                self.memory.values[output.key] = data
            elif output.type == OutputType.PUSH:
                self.memory.stacks.setdefault(output.key, []).append(data)
            else:
                self.memory.files.append(data)

    async def _answer(self, task: Task, messages: list[Message], schema: dict[str, Any] | None) -> Entry:
        """The model's answer as an entry; with a schema, JSON valid against it (retried)."""
        if schema is None:
            return entry_of(await self._generate(task, messages, None))
        validator = jsonschema.Draft202012Validator(schema)
        error = ""
        for _ in range(SCHEMA_ATTEMPTS):
            text = await self._generate(task, messages, schema)
            value, error = _validated(text, validator)
            if not error:
                return value
            messages = [*messages, {"role": "assistant", "content": text}, {"role": "user", "content": (
                f"That answer is not valid: {error}. Answer again with only a JSON value that matches "
                f"this JSON schema: {json.dumps(schema, separators=(',', ':'))}")}]
        raise SchemaViolation(f"the answer did not match the task's JSON schema in {SCHEMA_ATTEMPTS} attempts "
                              f"(last: {error})", task=f"task {task.id!r}", field="schema")

    async def _generate(self, task: Task, messages: list[Message], schema: dict[str, Any] | None) -> str:
        self._check_time(task.id)
        remaining = self.deadline - self.clock()
        try:
            return await asyncio.wait_for(self.generate(messages, self.max_tokens, schema), remaining)
        except TimeoutError:
            raise LimitExceeded(f"max_time of {self.workflow.config.max_time} s reached while {task.id!r} "
                                "was generating", field="config.max_time") from None

    def return_value(self) -> str:
        output = self.workflow.return_value
        reads = [read(v, self.memory) for v in output.input] if isinstance(output.input, list) else None
        single = read(output.input, self.memory) if not isinstance(output.input, list) else None
        if output.to_json:
            if reads is not None:
                return json.dumps([r.text() for r in reads], ensure_ascii=False, separators=(",", ":"))
            assert single is not None
            if single.many and single.entries is not None:
                return json.dumps([text_of(e) for e in single.entries], ensure_ascii=False, separators=(",", ":"))
        text = "".join(f"{r.text()} \n" for r in reads) if reads is not None else single.text() if single else ""
        for process in output.post_process or []:
            text = _post_process(text, process.process_type, process.lhs, process.rhs)
        return text


def _fill(content: str, filled: dict[str, str]) -> str:
    """Fill ``{{name}}`` placeholders in one pass (a filled value's braces stay as they are)."""
    return PLACEHOLDER.sub(lambda m: filled.get(m.group(1), m.group(0)), content)


def _evaluate(expression: Expression, value: str, expected: str, task_id: str) -> bool:
    if expression == Expression.EQUAL:
        return value == expected
    if expression == Expression.NOT_EQUAL:
        return value != expected
    if expression == Expression.CONTAINS:
        return expected in value
    if expression == Expression.NOT_CONTAINS:
        return expected not in value
    try:
        left, right = float(value), float(expected)
    except ValueError:
        raise WorkflowFailed(f"condition {expression.value} compares numbers; got {value!r} and {expected!r}",
                             task=f"task {task_id!r}", field="condition") from None
    return {
        Expression.GREATER_THAN: left > right,
        Expression.LESS_THAN: left < right,
        Expression.GREATER_THAN_OR_EQUAL: left >= right,
        Expression.LESS_THAN_OR_EQUAL: left <= right,
    }[expression]


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _validated(text: str, validator: jsonschema.Draft202012Validator) -> tuple[Any, str]:
    """(the JSON value, "") if ``text`` is JSON valid against the schema, else (None, why)."""
    fenced = _FENCE.match(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at character {exc.pos})"
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path)
        return None, f"{error.message}" + (f" at /{path}" if path else "")
    return value, ""


def _call_schema(workflow: Workflow) -> dict[str, Any]:
    """A function call is JSON: one of the custom tools' names and arguments for it."""
    return {"oneOf": [
        {"type": "object", "required": ["name", "arguments"], "additionalProperties": False,
         "properties": {"name": {"const": tool.name},
                        "arguments": tool.parameters if tool.parameters is not None else {"type": "object"}}}
        for tool in workflow.config.custom_tools or []
    ]}


def _with_tools(messages: list[Message], workflow: Workflow) -> list[Message]:
    """The task's messages, after a first one that lists the tools and the answer's form."""
    tools = [{"name": t.name, "description": t.description,
              "parameters": t.parameters if t.parameters is not None else {"type": "object"}}
             for t in workflow.config.custom_tools or []]
    intro = ("You can call one of these tools. Answer with only a JSON object "
             '{"name": <tool name>, "arguments": {<arguments>}} for the call to make.\n'
             f"Tools: {json.dumps(tools, ensure_ascii=False)}")
    return [{"role": "user", "content": intro}, *messages]


def _post_process(text: str, kind: PostProcessType, lhs: str | None, rhs: str | None) -> str:
    if kind == PostProcessType.REPLACE:
        return text.replace(lhs, rhs) if lhs is not None and rhs is not None else text
    if kind == PostProcessType.APPEND:
        return text + rhs if rhs is not None else text
    if kind == PostProcessType.PREPEND:
        return lhs + text if lhs is not None else text
    simple: dict[PostProcessType, Callable[[str], str]] = {
        PostProcessType.TRIM: str.strip, PostProcessType.TRIM_START: str.lstrip,
        PostProcessType.TRIM_END: str.rstrip, PostProcessType.TO_LOWER: str.lower,
        PostProcessType.TO_UPPER: str.upper,
    }
    return simple[kind](text)
