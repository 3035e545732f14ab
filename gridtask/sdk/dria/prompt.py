"""Dria's ``Prompt``: a dataset step written as one prompt instead of a singleton class.

``Prompt("Write a title for {{text}}", schema=Title)`` is one generation whose answer must be
JSON that fits ``schema`` (the node checks it and asks again, see ``gridtask.workflows``);
the ``{{variables}}`` come from each row's fields of the same name, or through ``input_map``
(``{"text": "body"}`` reads the row's ``body``). ``DatasetGenerator.generate`` takes it where
it takes a singleton, and ``DatasetGenerator.enrich`` adds its fields to every entry.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, create_model
from pydantic import ValidationError as PydanticValidationError

from gridtask.exceptions import ResultParseError, ValidationError
from gridtask.sdk.dria.factory._base import SingletonTemplate, json_in
from gridtask.sdk.dria.models import TaskResult
from gridtask.workflows import Edge, Operator, Workflow, WorkflowBuilder, Write

_VARIABLE = re.compile(r"\{\{(.*?)}}", re.DOTALL)


def find_vars(prompt: str) -> list[str]:
    """The ``{{name}}`` variables of a prompt, in order, each once."""
    names: list[str] = []
    for raw in _VARIABLE.findall(prompt):
        name = raw.strip()
        if name not in names:
            names.append(name)
    return names


class Prompt:
    """A prompt template and the pydantic ``schema`` its answer fills (Dria's ``Prompt``)."""

    description = "prompt"

    def __init__(self, prompt: str, schema: type[BaseModel], input_map: Mapping[str, str] | None = None,
                 max_tokens: int = 1000) -> None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValidationError("Prompt: prompt must be non-empty text")
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise ValidationError(f"Prompt: schema must be a pydantic model class (got {schema!r})")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValidationError(f"Prompt: max_tokens must be a positive integer (got {max_tokens!r})")
        self.prompt, self.schema, self.max_tokens = prompt, schema, max_tokens
        self.variables = find_vars(prompt)
        if not self.variables:
            raise ValidationError(f"Prompt: no variables in {prompt[:60]!r}: name the row's fields in double "
                                  "braces, such as {{text}}")
        bad = [v for v in self.variables if not v.isidentifier()]
        if bad:
            raise ValidationError(f"Prompt: variables must be plain names (got {bad})")
        self.input_map = dict(input_map or {})
        unknown = sorted(set(self.input_map) - set(self.variables))
        if unknown or not all(isinstance(v, str) for v in self.input_map.values()):
            raise ValidationError(f"Prompt: input_map maps the prompt's variables {self.variables} to row fields "
                                  f"(strings); {unknown or list(self.input_map.values())} do not fit")
        digest = hashlib.sha256(json.dumps([prompt, schema.model_json_schema()], sort_keys=True).encode())
        self.name = f"Prompt_{digest.hexdigest()[:10]}"
        """Names the step in the journal and the progress bar: another prompt is another step."""
        self._singleton: type[SingletonTemplate] | None = None

    def workflow(self, **inputs: Any) -> Workflow:
        """One generation step over the variables (each a memory value: text as it is, anything
        else as JSON); its answer is JSON valid against ``schema``."""
        missing = [v for v in self.variables if v not in inputs]
        if missing:
            raise ValidationError(f"Prompt: no value for {missing} (the prompt's variables are {self.variables})")
        memory = {v: inputs[v] if isinstance(inputs[v], str) else json.dumps(inputs[v]) for v in self.variables}
        builder = WorkflowBuilder(memory)
        builder.set_max_tokens(self.max_tokens)
        builder.generative_step(id="0", prompt=self.prompt, operator=Operator.GENERATION, schema=self.schema,
                                outputs=[Write.new("response")])
        builder.flow([Edge(source="0", target="_end")])
        builder.set_return_value("response")
        return builder.build()

    def parse(self, result: TaskResult) -> BaseModel:
        """A result read into ``schema`` (``ResultParseError`` if it does not fit)."""
        text = str(result.result).strip()
        value = json_in(text, dict, self._fits)
        if value is not None:
            return self.schema.model_validate(value)
        raise ResultParseError(f"{self.name}: the result of task {result.id} (model {result.model}) is not JSON "
                               f"that fits {self.schema.__name__}; it was {text[:120]!r}")

    def _fits(self, value: Any) -> bool:
        try:
            self.schema.model_validate(value)
        except PydanticValidationError:
            return False
        return True

    def callback(self, results: list[TaskResult]) -> list[BaseModel]:
        return [self.parse(r) for r in results]

    def singleton(self) -> type[SingletonTemplate]:
        """The prompt as a singleton class (inputs: its variables; ``OutputSchema``: ``schema``),
        which is how ``DatasetGenerator`` runs every step."""
        if self._singleton is None:
            prompt = self
            fields: dict[str, Any] = {v: (Any, ...) for v in self.variables}
            inputs: Any = create_model(f"{self.name}Inputs", __base__=SingletonTemplate, **fields)

            class Step(inputs):  # type: ignore[valid-type,misc]
                OutputSchema = prompt.schema

                def build(self) -> Workflow:
                    return prompt.workflow(**self.inputs())

                def parse(self, result: TaskResult) -> list[BaseModel]:
                    return [prompt.parse(result)]

            Step.__name__ = Step.__qualname__ = self.name
            self._singleton = Step
        return self._singleton
