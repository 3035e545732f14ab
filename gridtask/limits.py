"""What a node will run, written once: the SDK checks a task with it before it pays, and
the node's executors check the parameters they receive with the very same functions.

Why one module: a rule written twice drifts, and then a task that the SDK let through is
refused by a node after its fee was paid and its transactions mined. Every check raises
``ValidationError`` with a message that names the limit, as ``texts: at most 256 per task
(got 8000)``; the node's executors turn it into a task error (``InvalidTaskParameters``).

Which task type a model runs is decided by its name, because that is all the chain keeps
of a model (a ``bytes32``) and all a node can announce: ``echo`` and ``all-minilm-l6-v2``
are the fixed names of the echo and embedding executors, and every other name is a
language model that an operator serves with ``llm:NAME=DIR`` or ``openai:NAME=URL``
(``gridtask node --help``). ``task_type_of`` is that rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from gridtask.exceptions import ValidationError
from gridtask.relay.app import DEFAULT_MAX_PARAMS_BYTES
from gridtask.types import TaskType
from gridtask.workflows import Workflow, WorkflowError, parse_workflow

T = TypeVar("T")
_MISSING: Any = object()

ECHO_MODEL = "echo"
EMBED_MODEL = "all-minilm-l6-v2"
VM_MODEL = "vm"
"""What a node that runs Golem-style scripts in its sandbox announces (``TaskType.SCRIPT``)."""
SOURCE_MODEL_PREFIX = "src:"
"""A published source's model name: this prefix and the first 28 hex digits of its address
(``TaskType.SOURCE``); a node that serves the source announces it."""
FIXED_MODELS: dict[str, TaskType] = {
    ECHO_MODEL: TaskType.ECHO, EMBED_MODEL: TaskType.EMBED, VM_MODEL: TaskType.SCRIPT,
}
"""Models with a fixed name and task type; any other model name is a language model (or a
source, by its prefix)."""

MAX_PARAMS_BYTES = DEFAULT_MAX_PARAMS_BYTES
"""The most encrypted parameter bytes the relay stores for one task (its default limit)."""
SEAL_OVERHEAD_BYTES = 48
"""What sealing adds to the parameters: an ephemeral X25519 key (32) and a MAC (16)."""

VALIDATE_MODES = ("sampled", "always")
"""``validate="sampled"``: a task is validated by a group of three when the network samples it
(``validation_rate_bps``); ``"always"``: every task runs as a group of three, paying three fees."""

MAX_TEXTS = 256
MAX_ECHO_DATA_CHARS = 1_000_000
MAX_PROMPT_CHARS = 100_000
DEFAULT_MAX_TOKENS = 32
MAX_TOKENS_LIMIT = 128
"""The ``max_tokens`` a node allows by default; an operator may configure a lower one."""


def task_type_of(model: str) -> TaskType:
    """The task type ``model`` runs: fixed for echo, MiniLM and the script VM, a source's by
    its prefix, text generation otherwise."""
    if model.startswith(SOURCE_MODEL_PREFIX):
        return TaskType.SOURCE
    return FIXED_MODELS.get(model, TaskType.LLM)


def source_model(address: str) -> str:
    """The model name a source's nodes announce: ``src:`` and 28 hex digits of its address."""
    digits = address.lower().removeprefix("0x")
    if len(digits) != 40 or any(c not in "0123456789abcdef" for c in digits):
        raise ValidationError(f"source: not an address {address!r} (0x and 40 hex digits)")
    return SOURCE_MODEL_PREFIX + digits[:28]


def check_model_name(model: str) -> None:
    """A model ID is a ``bytes32`` on chain (``to_bytes32``)."""
    from gridtask.chain.client import to_bytes32

    if not isinstance(model, str):
        raise ValidationError(f"model: must be str (got {type(model).__name__})")
    try:
        to_bytes32(model)
    except ValueError as exc:
        raise ValidationError(f"model: {exc}") from None


def check_model_type(task_type: TaskType, model: str) -> None:
    """Refuse a model that runs another task type (``--model echo`` for a prompt)."""
    check_model_name(model)
    served = task_type_of(model)
    if served != task_type:
        what = {TaskType.ECHO: "echo", TaskType.EMBED: "embedding", TaskType.LLM: "text-generation",
                TaskType.SOURCE: "source-function", TaskType.SCRIPT: "script"}
        fits = [m for m, t in FIXED_MODELS.items() if t == task_type] or ["tiny-llm or any language model"]
        raise ValidationError(
            f"model: {model!r} runs {what[served]} tasks, not {what[task_type]} tasks "
            f"(use {', '.join(fits)})"
        )


def check_positive(name: str, value: object, unit: str) -> None:
    """A fee, a wait or a stage timeout of zero or less can only lose the fee: refuse it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValidationError(f"{name}: must be a positive number of {unit} (got {value!r})")


def check_validate_mode(mode: object) -> str:
    """``validate=`` is one of ``VALIDATE_MODES``."""
    if mode not in VALIDATE_MODES:
        raise ValidationError(f"validate: one of {', '.join(map(repr, VALIDATE_MODES))} (got {mode!r})")
    return str(mode)


DEFAULT_STAGE_TIMEOUT_S = 60


def stage_timeout_fits(stage_timeout: int, validation_window: int) -> bool:
    """Whether a group member that stalls (queued for a whole stage, then started and silent
    for another) is over, and can be aborted, before a member that scored at once may claim
    its fee unvalidated: two stages within the network's validation window."""
    return 2 * stage_timeout <= validation_window


def default_stage_timeout(validation_window: int, min_timeout: int) -> int:
    """The SDK's stage timeout on a network: 60 s, or less where the validation window is
    short (the devnet's 60 s gives 30 s), never under the contract's minimum."""
    return max(min_timeout, min(DEFAULT_STAGE_TIMEOUT_S, validation_window // 2))


def check_fee(fee: int, size: int, min_fee_per_unit: int) -> None:
    """The contract refuses a fee under ``min_fee_per_unit * task_size`` (spam must cost
    something); refuse it here first, before any transaction is sent."""
    least = min_fee_per_unit * size
    if fee < least:
        raise ValidationError(
            f"fee: at least {least} wei for a task of size {size}, the network's minimum of "
            f"{min_fee_per_unit} wei per unit (got {fee})"
        )


def input_field(inputs: object, name: str, kind: type[T], *, default: T = _MISSING) -> T:
    """``inputs[name]`` if it is a ``kind``; ``bool`` never passes for ``int``."""
    if not isinstance(inputs, dict):
        raise ValidationError(f"inputs: must be an object (got {type(inputs).__name__})")
    if name not in inputs:
        if default is _MISSING:
            raise ValidationError(f"{name}: missing from the inputs")
        return default
    value = inputs[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise ValidationError(f"{name}: must be {kind.__name__} (got {type(value).__name__})")
    return value


def check_echo(inputs: object) -> Any:
    """``{"data": <JSON value>}``, at most ``MAX_ECHO_DATA_CHARS`` of JSON; returns the data."""
    data = input_field(inputs, "data", object)
    try:
        size = len(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"data: not JSON ({exc})") from None
    if size > MAX_ECHO_DATA_CHARS:
        raise ValidationError(f"data: at most {MAX_ECHO_DATA_CHARS} characters of JSON (got {size})")
    return data


def check_embed(inputs: object) -> list[str]:
    """``{"texts": [str, ...]}`` with 1 to ``MAX_TEXTS`` texts; returns the texts."""
    texts = input_field(inputs, "texts", list)
    if not texts:
        raise ValidationError("texts: at least 1 per task (got 0)")
    if len(texts) > MAX_TEXTS:
        raise ValidationError(f"texts: at most {MAX_TEXTS} per task (got {len(texts)})")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValidationError(f"texts[{index}]: must be str (got {type(text).__name__})")
    return texts


def check_prompt(prompt: str) -> str:
    """One prompt as the model will read it (a workflow's after its placeholders are filled)."""
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(f"prompt: at most {MAX_PROMPT_CHARS} characters (got {len(prompt)})")
    return prompt


@dataclass(frozen=True)
class LLMInputs:
    """A text-generation task's inputs once checked: a prompt or a workflow, and ``max_tokens``."""

    max_tokens: int
    prompt: str | None = None
    workflow: Workflow | None = None


def check_llm(inputs: object, *, max_tokens_limit: int = MAX_TOKENS_LIMIT) -> LLMInputs:
    """``{"prompt": str}`` or ``{"workflow": Workflow}``, and ``max_tokens`` (1 to the limit)."""
    max_tokens = input_field(inputs, "max_tokens", int, default=DEFAULT_MAX_TOKENS)
    if max_tokens < 1:
        raise ValidationError(f"max_tokens: at least 1 (got {max_tokens})")
    if max_tokens > max_tokens_limit:
        raise ValidationError(f"max_tokens: at most {max_tokens_limit} (got {max_tokens})")
    assert isinstance(inputs, dict)  # input_field checked it
    if ("prompt" in inputs) == ("workflow" in inputs):
        raise ValidationError("inputs: give exactly one of 'prompt' and 'workflow'")
    if "prompt" in inputs:
        return LLMInputs(max_tokens, prompt=check_prompt(input_field(inputs, "prompt", str)))
    try:
        workflow = parse_workflow(input_field(inputs, "workflow", dict))
        workflow.check()
    except WorkflowError as exc:
        raise ValidationError(f"workflow: {exc}") from None
    return LLMInputs(max_tokens, workflow=workflow)


def check_source_call(inputs: object) -> tuple[str, str, dict[str, Any]]:
    """A source task's inputs: ``{"source": address, "function": name, "data": {...}}``, at most
    ``MAX_ECHO_DATA_CHARS`` of JSON data; returns them. (Whether the data fits the function's
    input model is the source's own rule: its bundle's manifest, checked by ``gridtask.sdk.opengpu``
    before paying and by the node's sandboxed call.)"""
    source = input_field(inputs, "source", str)
    source_model(source)  # an address, or a ValidationError naming it
    function = input_field(inputs, "function", str)
    if not function.isidentifier():
        raise ValidationError(f"function: not a Python function name ({function!r})")
    data = input_field(inputs, "data", dict)
    check_echo({"data": data})
    return source, function, data


def check_inputs(task_type: TaskType, inputs: object) -> None:
    """Everything a node checks in a task's inputs before it runs them."""
    if task_type == TaskType.ECHO:
        check_echo(inputs)
    elif task_type == TaskType.EMBED:
        check_embed(inputs)
    elif task_type == TaskType.SOURCE:
        check_source_call(inputs)
    elif task_type == TaskType.SCRIPT:
        from gridtask.scripts import check_script

        check_script(inputs)
    else:
        check_llm(inputs)


def check_params_size(params: bytes) -> None:
    """Parameters the relay would refuse to store (HTTP 413) can never reach a node."""
    size = len(params) + SEAL_OVERHEAD_BYTES
    if size > MAX_PARAMS_BYTES:
        raise ValidationError(
            f"parameters: at most {MAX_PARAMS_BYTES} bytes encrypted, as the relay stores (got {size})"
        )


def check_task(task_type: TaskType, model: str, inputs: object) -> None:
    """What the SDK checks before it pays: the model's task type and the inputs' limits."""
    check_model_type(task_type, model)
    check_inputs(task_type, inputs)


def explain_task_error(code: int, params: bytes | None = None) -> str:
    """A task error in words: the limit the task's own parameters break, if the creator still
    holds them (``params``) and they break one, else the documented meaning of the code."""
    from gridtask.params import TaskParams
    from gridtask.types import TaskErrorCode

    try:
        known = TaskErrorCode(code)
    except ValueError:
        return f"the node reported task error code {code}, which this version does not know"
    if params is not None and known in (TaskErrorCode.INVALID_PARAMETERS, TaskErrorCode.UNKNOWN_MODEL):
        try:
            decoded = TaskParams.decode(params)
            check_task(decoded.task_type, decoded.model, decoded.inputs)
        except ValueError as exc:  # ValidationError, or parameters that do not even parse
            return str(exc)
    return known.explanation
