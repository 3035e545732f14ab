"""Dria's data types on gridtask: ``Model`` (names nodes announce, and groups of them),
``Task`` (a workflow and the models that may run it) and ``TaskResult``.

A Dria task lists its models as *alternatives*: any node serving one of them may run it.
``Dria.execute`` sends such a task as one any-of task on chain (the contract gives it to an
idle node serving at least one of them, see ``gridtask.sdk.dria.client``), and the result
says which model produced it. A core task that needs *all* of its models is the other kind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from gridtask.chain.client import to_bytes32
from gridtask.exceptions import ValidationError
from gridtask.workflows import WorkflowError, as_json


class Model(StrEnum):
    """Model names as nodes announce them (each one's model ID on chain is ``model_id``),
    plus groups (``SMALL``, ``OLLAMA``, ...) that stand for their members.

    Dria's names longer than 32 bytes (``NOUS_THETA``, ``PHI3_MEDIUM_128K`` and seven
    OpenRouter names) are left out: a model ID on chain is at most 32 bytes. Any other
    model name may be given as a plain string.
    """

    # gridtask's local models (the devnet's nodes serve these)
    TINY_LLM = "tiny-llm"
    MINILM = "all-minilm-l6-v2"
    ECHO = "echo"

    # Ollama models
    PHI3_MEDIUM = "phi3:14b-medium-4k-instruct-q4_1"
    PHI3_5_MINI_OL = "phi3.5:3.8b"
    PHI3_5_MINI_FP16 = "phi3.5:3.8b-mini-instruct-fp16"
    GEMMA2_9B_OL = "gemma2:9b-instruct-q8_0"
    GEMMA2_9B_FP16 = "gemma2:9b-instruct-fp16"
    LLAMA3_1 = "llama3.1:latest"
    LLAMA3_1_8BQ8 = "llama3.1:8b-instruct-q8_0"
    LLAMA3_1_8B_FP16 = "llama3.1:8b-instruct-fp16"
    LLAMA3_1_70B_OL = "llama3.1:70b-instruct-q4_0"
    LLAMA3_1_70BQ8 = "llama3.1:70b-instruct-q8_0"
    LLAMA3_2_1B = "llama3.2:1b"
    LLAMA3_2_3B = "llama3.2:3b"
    LLAMA3_3_70B = "llama3.3:70b"
    QWEN_QWQ_OL = "qwq"
    QWEN2_5_7B_OL = "qwen2.5:7b-instruct-q5_0"
    QWEN2_5_7B_FP16 = "qwen2.5:7b-instruct-fp16"
    QWEN2_5_32B_FP16 = "qwen2.5:32b-instruct-fp16"
    QWEN2_5_CODER_1_5B = "qwen2.5-coder:1.5b"
    QWEN2_5_CODER_7B_OL = "qwen2.5-coder:7b"
    QWEN2_5_CODER_7B_Q8 = "qwen2.5-coder:7b-instruct-q8_0"
    QWEN2_5_CODER_7B_FP16 = "qwen2.5-coder:7b-instruct-fp16"
    DEEPSEEK_CODER_6_7B = "deepseek-coder:6.7b"
    MIXTRAL_8_7B = "mixtral:8x7b"
    TINY_AGENT_0_5B = "driaforall/tiny-agent-a:0.5b"
    TINY_AGENT_1_5B = "driaforall/tiny-agent-a:1.5b"
    TINY_AGENT_3B = "driaforall/tiny-agent-a:3b"
    DEEPSEEK_R1_1_5B = "deepseek-r1:1.5b"
    DEEPSEEK_R1_7B = "deepseek-r1:7b"
    DEEPSEEK_R1_8B = "deepseek-r1:8b"
    DEEPSEEK_R1_14B = "deepseek-r1:14b"
    DEEPSEEK_R1_32B = "deepseek-r1:32b"
    DEEPSEEK_R1_70B = "deepseek-r1:70b"
    DEEPSEEK_R1 = "deepseek-r1"

    # OpenRouter models
    DEEPSEEK_CHAT_OR = "deepseek/deepseek-chat"
    LLAMA_3_1_8B_OR = "meta-llama/llama-3.1-8b-instruct"
    QWEN_QWQ_OR = "qwen/qwq-32b-preview"
    QWEN2_5_72B_OR = "qwen/qwen-2.5-72b-instruct"
    QWEN2_5_7B_OR = "qwen/qwen-2.5-7b-instruct"
    QWEN2_5_CODER_32B_OR = "qwen/qwen-2.5-coder-32b-instruct"  # exactly 32 bytes
    QWEN2_5_EVA_32B_OR = "eva-unit-01/eva-qwen-2.5-32b"
    ANTHROPIC_SONNET_3_5_OR = "anthropic/claude-3.5-sonnet:beta"
    DEEPSEEK_R1_OR = "deepseek/deepseek-r1"
    DEEPSEEK_2_5_OR = "deepseek/deepseek-chat"  # Dria's second name for DEEPSEEK_CHAT_OR (an alias)

    # Gemini models
    GEMINI_15_PRO = "gemini-1.5-pro"
    GEMINI_15_FLASH = "gemini-1.5-flash"
    GEMINI_20_FLASH = "gemini-2.0-flash"
    GEMINI_10_PRO = "gemini-1.0-pro"
    GEMMA_2_2B_IT = "gemma-2-2b-it"
    GEMMA_2_9B_IT = "gemma-2-9b-it"
    GEMMA_2_27B_IT = "gemma-2-27b-it"

    # OpenAI models
    GPT4_TURBO = "gpt-4-turbo"
    GPT4O = "gpt-4o"
    GPT4O_MINI = "gpt-4o-mini"
    O1_MINI = "o1-mini"
    O1_PREVIEW = "o1-preview"

    # Groups: each stands for its members (``Model.members``), never sent to the chain
    LOCAL = "local"
    SMALL = "small"
    MID = "mid"
    LARGE = "large"
    EMBEDDING = "embedding"
    CODER = "coder"
    REASONING = "reasoning"
    OLLAMA = "ollama"
    OPENAI = "openai"
    GEMINI = "gemini"
    OPENROUTER = "openrouter"

    @property
    def is_group(self) -> bool:
        return self in _GROUPS

    @property
    def model_id(self) -> bytes:
        """The model's ID on chain (what a node serving it registered)."""
        if self.is_group:
            raise ValidationError(f"Model.{self.name} is a group of models, not one model: "
                                  "use Model.expand to list its members")
        return to_bytes32(self.value)

    def members(self) -> list[Model]:
        """The models a group stands for (a model stands for itself)."""
        return list(_GROUPS.get(self, (self,)))

    @classmethod
    def default(cls) -> Model:
        return cls.TINY_LLM

    @classmethod
    def expand(cls, models: Model | str | Iterable[Model | str]) -> list[str]:
        """Model names, groups replaced by their members, duplicates dropped, order kept.

        Any string that is not one of ours passes through as a model name (a node may serve
        a model this enum does not know), after checking that it fits on chain.
        """
        items = [models] if isinstance(models, str) else list(models)
        if not items:
            raise ValidationError("models: give at least one model (or a group such as Model.SMALL)")
        names: list[str] = []
        for item in items:
            if not isinstance(item, str):
                raise ValidationError(f"models: {item!r} is not a model name")
            model = cls._value2member_map_.get(item)
            members = model.members() if isinstance(model, Model) else [item]
            for name in (str(m.value) if isinstance(m, Model) else m for m in members):
                try:
                    to_bytes32(name)
                except ValueError as exc:
                    raise ValidationError(f"models: {exc}") from None
                if name not in names:
                    names.append(name)
        return names


_M = Model
_OLLAMA = (_M.PHI3_MEDIUM, _M.PHI3_5_MINI_OL, _M.PHI3_5_MINI_FP16, _M.GEMMA2_9B_OL, _M.GEMMA2_9B_FP16,
           _M.LLAMA3_1, _M.LLAMA3_1_8BQ8, _M.LLAMA3_1_8B_FP16, _M.LLAMA3_1_70B_OL, _M.LLAMA3_1_70BQ8,
           _M.LLAMA3_2_1B, _M.LLAMA3_2_3B, _M.LLAMA3_3_70B, _M.QWEN_QWQ_OL, _M.QWEN2_5_7B_OL,
           _M.QWEN2_5_7B_FP16, _M.QWEN2_5_32B_FP16, _M.QWEN2_5_CODER_1_5B, _M.QWEN2_5_CODER_7B_OL,
           _M.QWEN2_5_CODER_7B_Q8, _M.QWEN2_5_CODER_7B_FP16, _M.DEEPSEEK_CODER_6_7B, _M.MIXTRAL_8_7B,
           _M.DEEPSEEK_R1_1_5B, _M.DEEPSEEK_R1_7B, _M.DEEPSEEK_R1_8B, _M.DEEPSEEK_R1_14B,
           _M.DEEPSEEK_R1_32B, _M.DEEPSEEK_R1_70B, _M.DEEPSEEK_R1)
_GROUPS: dict[Model, tuple[Model, ...]] = {
    _M.LOCAL: (_M.TINY_LLM,),
    _M.SMALL: (_M.TINY_LLM, _M.PHI3_MEDIUM, _M.PHI3_5_MINI_OL, _M.PHI3_5_MINI_FP16, _M.GEMMA2_9B_OL,
               _M.GEMMA2_9B_FP16, _M.LLAMA3_1, _M.LLAMA3_1_8BQ8, _M.LLAMA3_1_8B_FP16, _M.LLAMA3_2_1B,
               _M.LLAMA3_2_3B, _M.QWEN2_5_7B_OL, _M.QWEN2_5_7B_FP16, _M.DEEPSEEK_CHAT_OR,
               _M.LLAMA_3_1_8B_OR, _M.QWEN2_5_7B_OR, _M.GEMMA_2_2B_IT, _M.GEMMA_2_9B_IT, _M.GEMMA_2_27B_IT),
    _M.MID: (_M.LLAMA3_1_70B_OL, _M.LLAMA3_1_70BQ8, _M.QWEN2_5_32B_FP16, _M.MIXTRAL_8_7B,
             _M.LLAMA3_3_70B, _M.QWEN2_5_72B_OR, _M.QWEN2_5_EVA_32B_OR, _M.GEMINI_15_FLASH,
             _M.GEMINI_20_FLASH, _M.GEMINI_10_PRO, _M.GPT4O_MINI),
    _M.LARGE: (_M.QWEN_QWQ_OL, _M.QWEN_QWQ_OR, _M.ANTHROPIC_SONNET_3_5_OR, _M.GEMINI_15_PRO,
               _M.GPT4_TURBO, _M.GPT4O),
    _M.EMBEDDING: (_M.MINILM,),
    _M.CODER: (_M.QWEN2_5_CODER_1_5B, _M.QWEN2_5_CODER_7B_OL, _M.QWEN2_5_CODER_7B_Q8,
               _M.QWEN2_5_CODER_7B_FP16, _M.DEEPSEEK_CODER_6_7B, _M.QWEN2_5_CODER_32B_OR),
    _M.REASONING: (_M.DEEPSEEK_R1_1_5B, _M.DEEPSEEK_R1_7B, _M.DEEPSEEK_R1_8B, _M.DEEPSEEK_R1_14B,
                   _M.DEEPSEEK_R1_32B, _M.DEEPSEEK_R1_70B, _M.DEEPSEEK_R1, _M.DEEPSEEK_R1_OR,
                   _M.O1_MINI, _M.O1_PREVIEW),
    _M.OLLAMA: _OLLAMA,
    _M.OPENAI: (_M.GPT4_TURBO, _M.GPT4O, _M.GPT4O_MINI, _M.O1_MINI, _M.O1_PREVIEW),
    _M.GEMINI: (_M.GEMINI_15_PRO, _M.GEMINI_15_FLASH, _M.GEMINI_20_FLASH, _M.GEMINI_10_PRO,
                _M.GEMMA_2_2B_IT, _M.GEMMA_2_9B_IT, _M.GEMMA_2_27B_IT),
    _M.OPENROUTER: (_M.DEEPSEEK_CHAT_OR, _M.LLAMA_3_1_8B_OR, _M.QWEN_QWQ_OR, _M.QWEN2_5_72B_OR,
                    _M.QWEN2_5_7B_OR, _M.QWEN2_5_CODER_32B_OR, _M.QWEN2_5_EVA_32B_OR,
                    _M.ANTHROPIC_SONNET_3_5_OR, _M.DEEPSEEK_R1_OR),
}


class Task(BaseModel):
    """A workflow and the models that may run it, as alternatives (groups expand).

    ``workflow``: a workflow (gridtask's, or one built with the real ``dria_workflows``
    package) or its ``model_dump()``; it is checked here and sent as JSON.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    workflow: Any
    models: list[Model | str] = Field(min_length=1)
    id: str | None = None
    """The task's key on chain, once ``Dria.execute`` created it."""
    step_name: str = ""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'task'}: {e['msg']}" for e in exc.errors())
            raise ValidationError(f"Task: {errors}") from None

    @field_validator("workflow", mode="before")
    @classmethod
    def _workflow_json(cls, value: Any) -> dict[str, Any]:
        """The workflow as JSON-able data, checked (gridtask's or dria_workflows' object, or a dump)."""
        try:
            return as_json(value)
        except WorkflowError as exc:
            raise ValueError(str(exc)) from None

    @property
    def model_names(self) -> list[str]:
        """The alternatives, groups expanded."""
        return Model.expand(self.models)


class FunctionCall(BaseModel):
    """A call a model asked for (``TaskResult.parse``): the node does not run tools."""

    name: str
    arguments: dict[str, Any]


class TaskResult(BaseModel):
    """One task's outcome, as Dria's ``TaskResult``: ``result`` is the workflow's return
    value and ``model`` the model that produced it."""

    id: str
    task_input: Any
    step_name: str = ""
    result: Any
    model: str
    node: str = ""
    fee: int = 0
    group: str = ""
    """How its validation group ended (``GroupResult.describe()``), empty for a lone task."""
    memory: dict[str, Any] = Field(default_factory=dict)
    """The workflow's memory at its end, as the node returned it."""

    def parse(self) -> list[FunctionCall]:
        """The function calls in a ``function_calling`` result, whatever the model's format:
        JSON (``{"name", "arguments"}``, a list of them, OpenAI's ``tool_calls``), Llama's
        ``<function=name>{...}</function>`` or Hermes' ``<tool_call>{...}</tool_call>``.

        Dria 0.0.124 looks the parser up by model and fails for any model outside its table;
        here the format is read from the text itself. ``ValidationError`` when the result
        holds no call.
        """
        calls = _calls(self.result)
        if not calls:
            raise ValidationError(f"task {self.id}: the result holds no function call "
                                  f"(got {str(self.result)[:80]!r})")
        return calls


_LLAMA_CALL = re.compile(r"<function=([\w.-]+)>(.*?)</function>", re.DOTALL)
_NOUS_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def _calls(value: Any) -> list[FunctionCall]:
    if isinstance(value, str):
        text = value.strip()
        tagged = [(m.group(1), m.group(2)) for m in _LLAMA_CALL.finditer(text)]
        if tagged:
            return [FunctionCall(name=name, arguments=_json_object(args.replace("{{", "{").replace("}}", "}")))
                    for name, args in tagged]
        nous = _NOUS_CALL.findall(text)
        if nous:
            return [c for body in nous for c in _calls(_json_any(body))]
        try:
            value = json.loads(text)
        except ValueError:
            return []
    if isinstance(value, list):
        return [c for item in value for c in _calls(item)]
    if isinstance(value, Mapping):
        if "tool_calls" in value:
            return _calls(value["tool_calls"])
        if "function" in value and isinstance(value["function"], Mapping):
            return _calls(value["function"])
        if isinstance(value.get("name"), str) and "arguments" in value:
            args = value["arguments"]
            return [FunctionCall(name=value["name"], arguments=_json_object(args) if isinstance(args, str) else args)]
    return []


def _json_any(text: str) -> Any:
    try:
        return json.loads(text.strip())
    except ValueError as exc:
        raise ValidationError(f"a function call's JSON is malformed: {exc}") from None


def _json_object(text: str) -> dict[str, Any]:
    value = _json_any(text)
    if not isinstance(value, dict):
        raise ValidationError(f"a function call's arguments must be a JSON object (got {text[:80]!r})")
    return value
