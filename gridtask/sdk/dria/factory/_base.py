"""What every singleton shares: inputs, building the workflow in either of Dria's styles,
and turning results into its output schema.

Two styles, as Dria users wrote them::

    simple = Simple()                               # older dria: inputs at workflow()
    task = Task(workflow=simple.workflow(prompt="Hi").model_dump(), models=[...])
    text = simple.parse_result(results)

    simple = Simple(prompt="Hi")                    # current dria: inputs at construction
    task = Task(workflow=simple.workflow(), models=[...])
    outputs = simple.callback(results)              # list of Simple.OutputSchema
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from gridtask.exceptions import ResultParseError, ValidationError
from gridtask.sdk.dria.models import TaskResult
from gridtask.workflows import Workflow


class SingletonTemplate(BaseModel):
    """A Dria template: pydantic inputs (the fields), ``OutputSchema``, ``workflow()`` and
    a parser (``callback`` / ``parse_result``). Subclasses write ``build`` and ``parse``."""

    model_config = ConfigDict(extra="forbid")
    OutputSchema: ClassVar[type[BaseModel]]

    def __init__(self, **inputs: Any) -> None:
        if not inputs:  # the older style: inputs come with workflow(...)
            empty = type(self).model_construct()
            for name in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"):
                object.__setattr__(self, name, getattr(empty, name))
            return
        try:
            super().__init__(**inputs)
        except PydanticValidationError as exc:
            raise ValidationError(f"{type(self).__name__}: {_describe(exc)}") from None

    @classmethod
    def create(cls, **inputs: Any) -> SingletonTemplate:
        return cls(**inputs)

    @classmethod
    def input_names(cls) -> list[str]:
        return list(cls.model_fields)

    @classmethod
    def required_inputs(cls) -> list[str]:
        return [name for name, field in cls.model_fields.items() if field.is_required()]

    def inputs(self) -> dict[str, Any]:
        """The inputs given so far."""
        return {name: getattr(self, name) for name in type(self).model_fields if name in self.__dict__}

    def workflow(self, **inputs: Any) -> Workflow:
        """The workflow for these inputs (given now, at construction, or both)."""
        if inputs or set(self.required_inputs()) - set(self.__dict__):
            merged = {**self.inputs(), **inputs}
            if not merged:
                raise ValidationError(f"{type(self).__name__}: no inputs given; it needs {self.required_inputs()} "
                                      f"(as {type(self).__name__}(...) or .workflow(...) keywords)")
            bound = type(self)(**merged)
            for name in ("__dict__", "__pydantic_fields_set__"):
                object.__setattr__(self, name, getattr(bound, name))
        return self.build()

    def build(self) -> Workflow:
        raise NotImplementedError

    def parse(self, result: TaskResult) -> Sequence[BaseModel]:
        """One result read into ``OutputSchema`` objects (``ResultParseError`` if it cannot be)."""
        raise NotImplementedError

    def callback(self, results: list[TaskResult]) -> list[Any]:
        """Every result read into ``OutputSchema`` objects (Dria's current style)."""
        if not results:
            raise ValidationError(f"{type(self).__name__}: no results to parse")
        return [output for result in results for output in self.parse(result)]

    def parse_result(self, results: list[TaskResult]) -> Any:
        """Dria's older style: the outputs as plain dicts."""
        return [output.model_dump(by_alias=True) for output in self.callback(results)]

    def fail(self, result: TaskResult, wanted: str) -> ResultParseError:
        """The error for a result that does not hold what the parser looks for."""
        return ResultParseError(f"{type(self).__name__}: the result of task {result.id} (model {result.model}) "
                                f"holds no {wanted}; it was {str(result.result)[:120]!r}")


def _describe(exc: PydanticValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())


def text(result: TaskResult) -> str:
    """A result's text, stripped."""
    return str(result.result).strip()


def tag(body: str, name: str) -> str | None:
    """The text inside ``<name>...</name>``, or None."""
    match = re.search(rf"<{re.escape(name)}>(.*?)</{re.escape(name)}>", body, re.DOTALL)
    return match.group(1).strip() if match else None


_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\[\d+\])\s+(.+?)\s*$")


def items(body: str) -> list[str]:
    """A list in a result: a JSON array of plain values (possibly in a code fence), else
    bulleted or numbered lines. Empty when there is none."""
    values = json_in(body, list, lambda v: bool(v) and all(isinstance(x, (str, int, float)) for x in v))
    if values is not None:
        return [str(v).strip() for v in values]
    return [m.group(1) for line in body.splitlines() if (m := _ITEM.match(line))]


def _bracketed(body: str, brackets: str = "[]") -> str:
    start, end = body.find(brackets[0]), body.rfind(brackets[1])
    return body[start:end + 1] if 0 <= start < end else ""


def json_in(body: str, kind: type[list[Any]] | type[dict[str, Any]],
            accept: Callable[[Any], bool] = lambda value: True) -> Any:
    """The JSON array (``list``) or object (``dict``) in a result that ``accept`` takes: in a
    code fence, the whole text, or its outermost brackets; None when there is none. Models
    wrap JSON in prose and fences, so each is tried."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", body, re.DOTALL)
    brackets = "[]" if kind is list else "{}"
    candidates = ([fenced.group(1), _bracketed(fenced.group(1), brackets)] if fenced else []) + [
        body, _bracketed(body, brackets)]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (ValueError, TypeError):
            continue
        if isinstance(value, kind) and accept(value):
            return value
    return None


def after(singleton: SingletonTemplate, result: TaskResult, marker: str, wanted: str) -> str:
    """The answer's text after its last ``marker`` (all of it when there is none), which must
    not be empty (``ResultParseError`` naming ``wanted``)."""
    found = text(result).split(marker)[-1].strip()
    if not found:
        raise singleton.fail(result, wanted)
    return found


def strings(value: Any, *keys: str) -> dict[str, str] | None:
    """``value[key]`` for each key, stripped, when ``value`` is a JSON object whose values
    under those keys are all non-empty text; else None (a model's JSON may be anything)."""
    if not isinstance(value, dict):
        return None
    found = {key: value.get(key) for key in keys}
    if not all(isinstance(v, str) and v.strip() for v in found.values()):
        return None
    return {key: str(v).strip() for key, v in found.items()}


def numbered(values: list[str]) -> str:
    """A list as the prompt shows it: ``[1] first`` lines."""
    return "\n".join(f"[{i}] {v}" for i, v in enumerate(values, 1))
