"""Building workflows with ``dria-workflows``' names, giving the JSON its builder gives.

    builder = WorkflowBuilder(topic="the sea")
    builder.generative_step(prompt="Write a poem about {{topic}}.", operator=Operator.GENERATION,
                            outputs=[Write.new("poem")])
    builder.flow([Edge(source="0", target="_end")])
    builder.set_return_value("poem")
    workflow = builder.build()

As in Dria's builder: a placeholder of a prompt that names a memory entry or an earlier
output becomes an input by itself (``get_all`` for a list, else ``read``); task IDs default
to "0", "1", ...; ``build()`` adds the ``_end`` task and an edge from the last task to it.
Unlike Dria's, a ``schema`` (a pydantic class) is kept as its JSON schema, so the workflow
is JSON as it is, and the result is checked (``Workflow.check``) when built.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from gridtask.workflows.errors import WorkflowError
from gridtask.workflows.model import (
    PLACEHOLDER,
    RESULT,
    Condition,
    Config,
    CustomToolTemplate,
    Edge,
    Expression,
    Input,
    InputValue,
    InputValueType,
    MessageInput,
    Operator,
    Output,
    OutputType,
    Task,
    TaskOutput,
    Workflow,
    default_config,
)

TOOLS = ("browserless", "jina", "serper", "duckduckgo", "stock", "scraper")
"""Dria's built-in tool names (``set_tools``); gridtask nodes run none of them."""


class Read:
    @staticmethod
    def new(key: str, required: bool) -> Input:
        return Input(name=key, value=InputValue(type=InputValueType.READ, key=key), required=required)


class Pop:
    @staticmethod
    def new(key: str, required: bool) -> Input:
        return Input(name=key, value=InputValue(type=InputValueType.POP, key=key), required=required)


class Peek:
    @staticmethod
    def new(key: str, index: int, required: bool) -> Input:
        return Input(name=key, value=InputValue(type=InputValueType.PEEK, key=key, index=index),
                     required=required)


class GetAll:
    @staticmethod
    def new(key: str, required: bool) -> Input:
        return Input(name=key, value=InputValue(type=InputValueType.GET_ALL, key=key), required=required)


class Size:
    @staticmethod
    def new(key: str, required: bool) -> Input:
        return Input(name=key, value=InputValue(type=InputValueType.SIZE, key=key), required=required)


class String:
    """A literal: ``{{key}}`` is filled with ``value``."""

    @staticmethod
    def new(key: str, value: str, required: bool) -> Input:
        return Input(name=key, value=InputValue(type=InputValueType.STRING, key=value), required=required)


class Write:
    @staticmethod
    def new(key: str) -> Output:
        return Output(type=OutputType.WRITE, key=key, value=RESULT)


class Insert:
    @staticmethod
    def new(key: str) -> Output:
        return Output(type=OutputType.INSERT, key=key, value=RESULT)


class Push:
    @staticmethod
    def new(key: str) -> Output:
        return Output(type=OutputType.PUSH, key=key, value=RESULT)


class ConditionBuilder:
    @staticmethod
    def build(expected: str | int, expression: Expression, input: Input, target_if_not: str) -> Condition:
        return Condition(expected=str(expected), expression=expression, input=input.value,
                         target_if_not=target_if_not)


class HttpMethod(StrEnum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    DELETE = "DELETE"
    PATCH = "PATCH"


class CustomTool(BaseModel):
    """A tool the model may call: subclass it with ``name``, ``description`` and one field
    per parameter. A gridtask node never runs it: the task's answer is the call."""

    name: str
    description: str

    def get_parameters(self) -> dict[str, Any]:
        """The parameters as Dria sends them: a JSON-schema object of the other fields."""
        properties: dict[str, Any] = {}
        required = []
        for field_name, info in type(self).model_fields.items():
            if field_name in ("name", "description"):
                continue
            properties[field_name] = {"type": _json_type(info.annotation), "description": info.description or ""}
            if info.is_required():
                required.append(field_name)
        return {"type": "object", "properties": properties, "required": required}


class HttpRequestTool(BaseModel):
    """A tool Dria's nodes call over HTTP; a gridtask node only returns the call."""

    name: str
    description: str
    url: str
    method: HttpMethod
    headers: dict[str, str] | None = None
    body: dict[str, Any] | None = None


def _json_type(annotation: Any) -> str:
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _json_type(args[0]) if len(args) == 1 else "object"
    return {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object",
            list: "array"}.get(annotation, "string")


def _tool_template(tool: CustomTool | HttpRequestTool) -> CustomToolTemplate:
    if isinstance(tool, CustomTool):
        return CustomToolTemplate(name=tool.name, description=tool.description, mode="custom",
                                  parameters=tool.get_parameters())
    if isinstance(tool, HttpRequestTool):
        return CustomToolTemplate(name=tool.name, description=tool.description, mode="http_request",
                                  url=tool.url, method=tool.method.value, headers=tool.headers, body=tool.body)
    raise TypeError("Unsupported tool class type")


class WorkflowBuilder:
    """Dria's ``WorkflowBuilder``: memory from ``memory`` and keyword arguments (a string,
    or a list of strings / string-valued dicts: a stack)."""

    def __init__(self, memory: dict[str, Any] | None = None, **kwargs: Any) -> None:
        memory = dict(memory or {})
        memory.update(kwargs)
        for key, value in memory.items():
            ok = isinstance(value, str) or (isinstance(value, list) and all(
                isinstance(i, str) or (isinstance(i, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in i.items())) for i in value))
            if not ok:
                raise WorkflowError(f"Unsupported memory type for key {key}. Supported types are str, and List[str]",
                                    field="external_memory")
        self.memory = memory
        self.config: Config = default_config()
        self.tasks: list[Task] = []
        self.steps: list[Edge] = []
        self.return_value: TaskOutput | None = None
        self.map: dict[str, list[InputValueType]] = {}
        for key, value in memory.items():
            self._mmap(key, value)

    def _mmap(self, key: str, value: Any) -> None:
        if isinstance(value, list):
            self.map[key] = [InputValueType.GET_ALL, InputValueType.PEEK, InputValueType.POP, InputValueType.SIZE]
        else:
            self.map[key] = [InputValueType.READ]

    def _new_id(self, id: str | None) -> str:
        if id is None:
            return str(len(self.tasks))
        if any(task.id == id for task in self.tasks):
            raise WorkflowError(f"Task with id '{id}' already exists", task=f"task {id!r}", field="id")
        return id

    def _add(self, id: str, operator: Operator, prompt: str, messages: list[MessageInput],
             schema: Any, inputs: list[Input], outputs: list[Output]) -> None:
        auto: list[Input] = []
        names = list(dict.fromkeys(PLACEHOLDER.findall(prompt)))
        for name in names:
            if any(name == i.value.key for i in inputs) or name not in self.map:
                continue
            kind = InputValueType.GET_ALL if InputValueType.GET_ALL in self.map[name] else InputValueType.READ
            auto.append(Input(name=name, value=InputValue(type=kind, key=name), required=True))
        all_inputs = auto + list(inputs)
        missing = [n for n in names if not any(i.value.key == n for i in all_inputs)]
        if missing:
            raise WorkflowError(f"Missing required inputs: {', '.join(missing)}", task=f"task {id!r}",
                                field="messages")
        for output in outputs:
            if output.type == OutputType.PUSH:
                self._mmap(output.key, [" "])
            elif output.type == OutputType.WRITE:
                self._mmap(output.key, "")
        self.tasks.append(Task(id=id, messages=[*messages, MessageInput(role="user", content=prompt)],
                               json_schema=schema, inputs=all_inputs, operator=operator, outputs=list(outputs)))

    def generative_step(
        self,
        operator: Literal[Operator.GENERATION, Operator.FUNCTION_CALLING, Operator.FUNCTION_CALLING_RAW]
        = Operator.GENERATION,
        prompt: str | None = None,
        path: str | None = None,
        msg_history: list[MessageInput] | None = None,
        id: str | None = None,
        schema: type[BaseModel] | dict[str, Any] | None = None,
        inputs: list[Input] | None = None,
        outputs: list[Output] | None = None,
    ) -> None:
        """A step that asks the model: ``prompt`` (or the text of the ``.md`` file ``path``)
        after ``msg_history``; with ``schema``, the answer is JSON valid against it."""
        if prompt is None and path is None:
            raise WorkflowError("Either prompt or path for an .md file must be provided", field="prompt")
        if operator != Operator.GENERATION and schema is not None:
            raise WorkflowError("Schema is not supported for FUNCTION_CALLING operator", field="schema")
        if prompt is None:
            assert path is not None
            prompt = Path(path).read_text(encoding="utf-8")
        self._add(self._new_id(id), Operator(operator), prompt, list(msg_history or []), schema,
                  list(inputs or []), list(outputs or []))

    def search_step(self, search_query: str, search_type: Literal["search", "news", "scholar"] = "search",
                    lang: str | None = "en", n_results: int | None = 5, id: str | None = None,
                    inputs: list[Input] | None = None, outputs: list[Output] | None = None) -> None:
        """A web search (Dria's). Gridtask nodes have no search backend: they refuse it."""
        query = json.dumps({"query": search_query, "search_type": search_type, "lang": lang, "n_results": n_results})
        self._add(self._new_id(id), Operator.SEARCH, query, [], None, list(inputs or []), list(outputs or []))

    def add_custom_tool(self, tool: CustomTool | HttpRequestTool) -> None:
        self.config.custom_tools = [*(self.config.custom_tools or []), _tool_template(tool)]

    def flow(self, edges: list[Edge]) -> None:
        for edge in edges:
            if not any(task.id == edge.source for task in self.tasks):
                raise WorkflowError(f"Source task '{edge.source}' not found", field="steps")
            if edge.target != "_end" and not any(task.id == edge.target for task in self.tasks):
                raise WorkflowError(f"Target task '{edge.target}' not found", field="steps")
            self.steps.append(edge)

    def set_return_value(self, key: str | list[str]) -> None:
        keys = [key] if isinstance(key, str) else list(key)
        for k in keys:
            if not any(k in [o.key for o in task.outputs] for task in self.tasks):
                raise WorkflowError(f"The key '{key}' does not correspond to any output in the workflow tasks.",
                                    field="return_value")
        if len(keys) == 1:
            kind = self.map[keys[0]][0]
            self.return_value = TaskOutput(input=InputValue(type=kind, key=keys[0]),
                                           to_json=kind == InputValueType.GET_ALL)
        else:
            self.return_value = TaskOutput(input=[InputValue(type=self.map[k][0], key=k) for k in keys],
                                           to_json=True)

    def set_max_tokens(self, max_tokens: int) -> None:
        self.config.max_tokens = max_tokens

    def set_max_steps(self, max_steps: int) -> None:
        self.config.max_steps = max_steps

    def set_max_time(self, max_time: int) -> None:
        self.config.max_time = max_time

    def set_tools(self, tools: list[str]) -> None:
        for tool in tools:
            if str(tool) not in TOOLS:
                raise WorkflowError(f"Tool '{tool}' is not a valid tool. Choose from: {', '.join(TOOLS)}",
                                    field="config.tools")
        self.config.tools = list(tools)

    def build(self) -> Workflow:
        """The workflow, with the ``_end`` task and an edge from the last task to it; checked."""
        sources = {edge.source for edge in self.steps}
        without = [t.id for t in self.tasks if t.id not in sources]
        if without:
            raise WorkflowError(f"The following tasks have no outgoing edges: {', '.join(without)}", field="steps")
        steps = list(self.steps)
        if self.tasks and not any(e.source == self.tasks[-1].id and e.target == "_end" for e in steps):
            steps.append(Edge(source=self.tasks[-1].id, target="_end"))
        if self.return_value is None:
            raise WorkflowError("no return value: call set_return_value(key) with an output key first",
                                field="return_value")
        end = Task(id="_end", messages=[MessageInput(role="user", content="")], operator=Operator.END)
        workflow = Workflow(config=self.config.model_copy(deep=True), external_memory=dict(self.memory),
                            tasks=[*self.tasks, end], steps=steps, return_value=self.return_value)
        workflow.check()
        return workflow

    def build_to_dict(self) -> dict[str, Any]:
        """The built workflow as JSON-able data, as Dria's ``build_to_dict``."""
        return as_json(self.build())


def as_json(workflow: Workflow | Any) -> dict[str, Any]:
    """A workflow (gridtask's, the real ``dria_workflows``', or a dump of either) as the JSON
    data a task carries: what the SDK puts in a task's inputs (``{"workflow": ...}``)."""
    from gridtask.workflows.model import parse_workflow

    return parse_workflow(workflow).model_dump(mode="json", exclude_none=True)
