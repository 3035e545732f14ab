"""The language-model task: a prompt, or a workflow of prompts, answered by a model.

Two backends behind the same inputs and results:

- ``LocalLLMExecutor`` runs a Hugging Face causal LM from a local directory, greedily and
  with fixed seeds, so two honest nodes with the same weights give the same text.
- ``OpenAICompatibleExecutor`` asks an OpenAI-compatible server (Ollama, llama.cpp's
  server, vLLM) that the operator runs next to the node.

Inputs: ``{"prompt": str, "max_tokens": int}`` or ``{"workflow": <a Dria workflow>,
"max_tokens": int}`` (``max_tokens`` optional, per generation; a workflow's
``config.max_tokens`` wins, up to the node's limit). Results: ``{"text": str}``, and for a
workflow also ``memory``, ``stacks`` and ``trace`` (``WorkflowResult.as_result``). The text
is never empty: an empty answer could not be told apart from a node that did nothing.

A workflow (``gridtask.workflows``) runs on the same model, one chat per generation step;
what makes it fail is the task's fault and is reported with its own task-error code
(malformed: ``INVALID_PARAMETERS``; needs what the node lacks: ``UNSUPPORTED_OPERATOR``;
a step failed or a limit was reached: ``WORKFLOW_FAILED``).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx

from gridtask.limits import DEFAULT_MAX_TOKENS, MAX_PROMPT_CHARS, MAX_TOKENS_LIMIT, check_llm, check_prompt
from gridtask.node.executors.base import (
    ExecutorFailure,
    InvalidTaskParameters,
    check_model,
    task_fault,
)
from gridtask.types import TaskErrorCode, TaskType
from gridtask.workflows import UnsupportedOperator, WorkflowError, WorkflowFailed, run_workflow

Message = dict[str, str]

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS_LIMIT", "DEFAULT_MAX_TOKENS", "MAX_PROMPT_CHARS", "LocalLLMExecutor",
    "OpenAICompatibleExecutor",
]

DEFAULT_MAX_NEW_TOKENS_LIMIT = MAX_TOKENS_LIMIT
EMPTY_ANSWER = "<empty>"
REPLACEMENT_CHARACTER = "\ufffd"  # what a lossy UTF-8 decoder puts for bytes that are not UTF-8
DEFAULT_SEED = 0
DEFAULT_HTTP_TIMEOUT = 120.0


class _LLMExecutor:
    """Parses LLM inputs and runs prompts or workflows; subclasses only ``generate``."""

    task_type = TaskType.LLM

    def __init__(self, model_id: str, *, max_new_tokens_limit: int) -> None:
        self.models = [model_id]
        self.max_new_tokens_limit = max_new_tokens_limit

    async def run(self, model: str, inputs: dict) -> dict:
        check_model(self, model)
        with task_fault():
            checked = check_llm(inputs, max_tokens_limit=self.max_new_tokens_limit)
        if checked.prompt is not None:
            return {"text": await self.generate(checked.prompt, checked.max_tokens)}
        assert checked.workflow is not None
        try:
            result = await run_workflow(checked.workflow, self._checked_chat, max_tokens=checked.max_tokens,
                                        max_tokens_limit=self.max_new_tokens_limit)
        except UnsupportedOperator as exc:
            raise InvalidTaskParameters(f"workflow: {exc}", code=TaskErrorCode.UNSUPPORTED_OPERATOR) from None
        except WorkflowFailed as exc:
            raise InvalidTaskParameters(f"workflow: {exc}", code=TaskErrorCode.WORKFLOW_FAILED) from None
        except WorkflowError as exc:
            raise InvalidTaskParameters(f"workflow: {exc}") from None
        output = result.as_result()
        if not output["text"].strip():
            output["text"] = EMPTY_ANSWER
        return output

    async def _checked_chat(self, messages: list[Message], max_tokens: int, schema: dict[str, Any] | None) -> str:
        with task_fault():  # a workflow's prompt is known only once its placeholders are filled
            for message in messages:
                check_prompt(message["content"])
        return await self.chat(messages, max_tokens, schema)

    async def generate(self, prompt: str, max_tokens: int) -> str:
        """The model's non-empty answer to one prompt."""
        with task_fault():
            check_prompt(prompt)
        return await self.chat([{"role": "user", "content": prompt}], max_tokens, None)

    async def chat(self, messages: list[Message], max_tokens: int, schema: dict[str, Any] | None) -> str:
        """The model's non-empty answer to a conversation; ``schema``: the JSON schema the
        answer should match, for a backend that can constrain its decoding (the workflow
        engine validates the answer in any case)."""
        raise NotImplementedError


class LocalLLMExecutor(_LLMExecutor):
    """A Hugging Face causal LM loaded from ``model_dir`` (never from a hub), run greedily."""

    def __init__(
        self,
        model_id: str,
        model_dir: Path,
        *,
        max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS_LIMIT,
        device: str = "cpu",
        seed: int = DEFAULT_SEED,
    ) -> None:
        super().__init__(model_id, max_new_tokens_limit=max_new_tokens_limit)
        self.model_dir = Path(model_dir)
        self.device = device
        self.seed = seed
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()  # one generation at a time; a thread lock, not a loop's

    async def chat(self, messages: list[Message], max_tokens: int, schema: dict[str, Any] | None) -> str:
        return await asyncio.to_thread(self._generate, messages, max_tokens)

    def load(self) -> None:
        """Load the tokenizer and weights now (idempotent); the first task does it otherwise."""
        with self._lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            # Process-wide, and it only warns where an op has no deterministic kernel.
            torch.use_deterministic_algorithms(True, warn_only=True)
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(self.model_dir, local_files_only=True)
            self._model = model.to(self.device).eval()  # type: ignore[arg-type]

    def _generate(self, messages: list[Message], max_tokens: int) -> str:
        import torch

        self.load()
        with self._lock:
            input_ids = self._encode(messages)
            limit = _max_positions(self._model.config)
            if limit is not None and input_ids.shape[1] + max_tokens > limit:
                raise InvalidTaskParameters(
                    f"prompt of {input_ids.shape[1]} tokens + {max_tokens} new tokens is over "
                    f"the model's {limit}"
                )
            torch.manual_seed(self.seed)
            with torch.inference_mode():
                output = self._model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    do_sample=False,
                    num_beams=1,
                    max_new_tokens=max_tokens,
                    min_new_tokens=1,  # the end-of-text token cannot come first
                    pad_token_id=self._pad_token_id(),
                )
            new_ids = output[0, input_ids.shape[1] :].tolist()
        text = without_invalid_bytes(self._tokenizer.decode(new_ids, skip_special_tokens=True))
        if not text.strip():  # only special or blank tokens: show them, deterministically
            text = " ".join(str(t) for t in self._tokenizer.convert_ids_to_tokens(new_ids))
        return text if text.strip() else EMPTY_ANSWER

    def _encode(self, messages: list[Message]) -> Any:
        """The conversation as token IDs: in the model's chat format if it has one, else the
        messages' texts one after the other (one message: its text, as a plain prompt)."""
        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):  # an instruct model: speak its format
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        else:
            prompt = "\n\n".join(message["content"] for message in messages)
            ids = tokenizer(prompt, return_tensors="pt").input_ids
        if ids.shape[1] == 0:  # an empty prompt on a tokenizer that adds no start token
            start = tokenizer.bos_token_id
            if start is None:
                start = tokenizer.eos_token_id
            if start is None:
                raise InvalidTaskParameters("empty prompt")
            ids = ids.new_tensor([[start]])
        return ids.to(self.device)

    def _pad_token_id(self) -> int | None:
        pad = self._tokenizer.pad_token_id
        return pad if pad is not None else self._tokenizer.eos_token_id


class OpenAICompatibleExecutor(_LLMExecutor):
    """Generation by ``POST {base_url}/v1/chat/completions``, temperature 0 and seed 0.

    A server that is down or answers badly is the node's problem (``ExecutorFailure``:
    the task is aborted), never the task's.
    """

    def __init__(
        self,
        model_id: str,
        base_url: str,
        *,
        api_key: str | None = None,
        remote_model: str | None = None,
        max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS_LIMIT,
        timeout: float = DEFAULT_HTTP_TIMEOUT,
    ) -> None:
        super().__init__(model_id, max_new_tokens_limit=max_new_tokens_limit)
        base = base_url.rstrip("/")
        base = base.removesuffix("/v1")  # accept both http://host:11434 and http://host:11434/v1
        self.url = f"{base}/v1/chat/completions"
        self.api_key = api_key
        self.remote_model = remote_model or model_id
        self.timeout = timeout

    async def chat(self, messages: list[Message], max_tokens: int, schema: dict[str, Any] | None) -> str:
        body: dict[str, Any] = {
            "model": self.remote_model,
            "messages": messages,
            "temperature": 0,
            "seed": DEFAULT_SEED,
            "max_tokens": max_tokens,
            "stream": False,
        }
        if schema is not None:  # servers that decode under a schema (vLLM, llama.cpp, Ollama) use it
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": schema}}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.url, json=body, headers=headers)
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
        except httpx.HTTPStatusError as exc:
            status, detail = exc.response.status_code, exc.response.text[:200]
            raise ExecutorFailure(f"{self.url} answered {status}: {detail}") from exc
        except httpx.HTTPError as exc:
            raise ExecutorFailure(f"cannot reach {self.url}: {exc!r}") from exc
        except (ValueError, LookupError, TypeError) as exc:
            raise ExecutorFailure(f"{self.url} gave no chat completion: {exc!r}") from exc
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ExecutorFailure(f"{self.url} gave a non-text completion")
        # A server decodes bytes as the local executor does (transformers serve puts U+FFFD
        # too): the same rule for both backends, so the same weights give the same text.
        content = without_invalid_bytes(content)
        return content if content.strip() else EMPTY_ANSWER


def without_invalid_bytes(text: str) -> str:
    """The answer without the bytes that are not UTF-8.

    A byte-level model picks bytes, not characters: it may stop half-way through a
    character or emit a byte that no character starts with, and the tokenizer decodes each
    such run to U+FFFD. Those runs are not text the model wrote; dropping them leaves
    exactly the characters it did write, the same on every node.
    """
    return text.replace(REPLACEMENT_CHARACTER, "")


def _max_positions(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None
