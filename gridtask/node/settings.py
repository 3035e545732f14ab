"""A node's settings, and the executors its model specs name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gridtask.config import NetworkConfig
from gridtask.node.executors.base import Executor, ExecutorSet

ETHER = 10**18
NODE_VERSION = 1


@dataclass
class NodeSettings:
    """Everything a node daemon needs; filled by the CLI from flags, config and GRIDTASK_*."""

    network: NetworkConfig
    models: list[str] = field(default_factory=lambda: ["echo"])
    gpu: str = "cpu"
    vram: int = 0
    stake: int = ETHER
    state_dir: Path = Path(".gridtask/node")
    withdraw_interval_s: float = 30.0
    tick_s: float = 1.0
    version: int = NODE_VERSION


def build_executors(specs: list[str]) -> ExecutorSet:
    """Executors from model specs, as operators write them on the command line:

    - ``echo``                         the trivial task
    - ``all-minilm-l6-v2``             sentence embeddings (MiniLM, shipped in a package)
    - ``llm:NAME=/path/to/model_dir``  a Hugging Face causal LM from a local directory
    - ``openai:NAME=http://host:port`` an OpenAI-compatible server (Ollama, llama.cpp, vLLM);
                                       ``openai:NAME=URL#remote-name`` names its model there
    - ``vm``                           Golem-style scripts over published bundles, in the sandbox
                                       (needs bubblewrap: ``gridtask.node.sandbox``)
    """
    from gridtask.limits import VM_MODEL
    from gridtask.node.executors.echo import ECHO, EchoExecutor
    from gridtask.node.executors.embed import MINILM, EmbedExecutor
    from gridtask.node.executors.llm import LocalLLMExecutor, OpenAICompatibleExecutor

    executors = ExecutorSet()
    for spec in specs:
        kind, _, rest = spec.partition(":")
        if spec == ECHO:
            executors.add(EchoExecutor())
        elif spec == MINILM:
            executors.add(EmbedExecutor())
        elif spec == VM_MODEL:
            executors.add(_script_executor())
        elif kind == "llm" and "=" in rest:
            name, _, path = rest.partition("=")
            _check_llm_name(spec, name)
            executors.add(LocalLLMExecutor(name, Path(path)))
        elif kind == "openai" and "=" in rest:
            name, _, url = rest.partition("=")
            _check_llm_name(spec, name)
            url, _, remote = url.partition("#")
            executors.add(OpenAICompatibleExecutor(name, url, remote_model=remote or None))
        else:
            raise ValueError(
                f"unknown model spec {spec!r}: use echo, {MINILM}, {VM_MODEL}, llm:NAME=DIR or openai:NAME=URL"
            )
    return executors


def _script_executor() -> Executor:
    """The ``vm`` executor, where its sandbox works: a node that announced ``vm`` without one
    would take script tasks and fail every one."""
    from gridtask.node.executors.script import ScriptExecutor
    from gridtask.node.sandbox import sandbox_available

    if not sandbox_available():
        raise ValueError("model spec 'vm': the sandbox does not work here (install bubblewrap: "
                         "`apt-get install bubblewrap`; it also needs user namespaces)")
    return ScriptExecutor()


def source_executor(network: NetworkConfig, sources: list[str]) -> Executor:
    """The OpenGPU source executor for ``--sources all`` (every published source, followed while
    the node runs) or ``--sources ADDRESS ...``, where its sandbox works."""
    from gridtask.node.executors.source import SourceExecutor, parse_sources
    from gridtask.node.sandbox import sandbox_available

    if not sandbox_available():
        raise ValueError("--sources: the sandbox does not work here (install bubblewrap: "
                         "`apt-get install bubblewrap`; it also needs user namespaces)")
    return SourceExecutor(network, parse_sources(sources))


def _check_llm_name(spec: str, name: str) -> None:
    """Applications tell a model's task type by its name (``limits.task_type_of``): a language
    model may not take a name that means another type."""
    from gridtask.limits import task_type_of
    from gridtask.types import TaskType

    if task_type_of(name) != TaskType.LLM:
        raise ValueError(f"model spec {spec!r}: {name!r} names the {task_type_of(name).name.lower()} "
                         f"model; give the language model another name")
