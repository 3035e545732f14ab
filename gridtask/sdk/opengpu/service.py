"""A source's side: ``@expose()`` typed functions, an ``@init()`` hook, ``start()`` (ogpu's names).

A source is a directory (or one ``.py`` file) whose functions are marked ``@expose()``: one
pydantic input, a pydantic output, an optional timeout. ``publish_source`` packs it into a
content-addressed bundle with a manifest (``gridtask-source.json``: each function's input
and output JSON schema and timeout), so an application checks its data against the input
schema before it pays, and a node that serves the source runs a call as::

    python service.py call /source ENTRY     (stdin: {"function": ..., "data": ...})

inside its sandbox: this file imports the source, runs its ``@init`` once, validates the data
with the input model, calls the function and prints the output as JSON. The exit status says
what went wrong (``EXIT_*``), so the node can tell the task's fault from the code's.

Why a standalone file (stdlib and pydantic only): the sandbox binds just this file's folder and
the bundle, and a call must not import the SDK's web3 stack to run one function.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import BaseModel, ValidationError

MANIFEST = "gridtask-source.json"
"""The bundle's manifest: ``{"entry", "init", "functions": {name: {input_schema, output_schema, timeout}}}``."""
RESULT_MARK = "@gridtask-result@ "
"""The line prefix of a call's output: whatever else the function prints is not the result."""

EXIT_OK = 0
EXIT_UNKNOWN_FUNCTION = 2
EXIT_INVALID_DATA = 3
EXIT_FAILED = 4
"""The function raised, returned something that is not its output model, or the source did not load."""
EXIT_TIMEOUT = 5
"""The function ran past its ``@expose(timeout=...)``."""


@dataclass(frozen=True)
class Exposed:
    """One ``@expose()`` function with its models and timeout."""

    function: Callable[[Any], Any]
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    timeout: float | None


_exposed: dict[str, Exposed] = {}
_init: list[Callable[[], None]] = []
_hosted = False  # set by the host: start() returns at once, the host serves the calls


def expose(timeout: int | float | None = None) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Make a function callable by tasks: it takes ONE pydantic model and returns one.

    ``timeout`` (seconds): a call still running then fails (the node reports it as the task's
    error); ``None`` leaves it to the node's sandbox limit."""

    def decorator(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        name = func.__name__
        if name in _exposed:
            raise ValueError(f"a function named {name!r} is already exposed")
        parameters = list(inspect.signature(func).parameters.values())
        if len(parameters) != 1:
            raise TypeError(f"function {name!r} must take exactly one input argument (got {len(parameters)})")
        hints = get_type_hints(func)
        input_model, output_model = hints.get(parameters[0].name), hints.get("return")
        for what, model in (("input", input_model), ("return type", output_model)):
            if not (inspect.isclass(model) and issubclass(model, BaseModel)):
                raise TypeError(f"the {what} of {name!r} must be a pydantic BaseModel subclass")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout of {name!r}: a positive number of seconds (got {timeout!r})")
        assert input_model is not None and output_model is not None  # checked above
        _exposed[name] = Exposed(func, input_model, output_model, timeout)
        return func

    return decorator


def init() -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Mark the one function that runs before the first call (load a model, build a table)."""

    def decorator(func: Callable[[], None]) -> Callable[[], None]:
        if inspect.signature(func).parameters:
            raise TypeError(f"init function {func.__name__!r} must take no arguments")
        if _init:
            raise ValueError(f"an init function ({_init[0].__name__!r}) is already registered: only one")
        _init.append(func)
        return func

    return decorator


def start() -> None:
    """Serve the exposed functions. On a node (inside the host) this returns at once: the host
    serves the calls. Run by hand, it reads calls as JSON lines on stdin
    (``{"function": "f", "data": {...}}``) and prints each result, to try a source locally."""
    if _hosted:
        return
    _run_init()
    for line in sys.stdin:
        if line.strip():
            code, payload = call(json.loads(line))
            print(json.dumps({"exit": code, **payload}), flush=True)


def exposed() -> dict[str, Exposed]:
    """The exposed functions by name."""
    return dict(_exposed)


def manifest(entry: str) -> dict[str, Any]:
    """What the bundle says about its functions (the imported source's)."""
    return {
        "entry": entry,
        "init": _init[0].__name__ if _init else None,
        "functions": {
            name: {"input_schema": e.input_model.model_json_schema(),
                   "output_schema": e.output_model.model_json_schema(), "timeout": e.timeout}
            for name, e in sorted(_exposed.items())
        },
    }


def call(request: Any) -> tuple[int, dict[str, Any]]:
    """Run one call: ``(EXIT_*, {"output": ...} or {"error": ...})``."""
    if not isinstance(request, dict) or not isinstance(request.get("function"), str):
        return EXIT_UNKNOWN_FUNCTION, {"error": "the call names no function"}
    name = request["function"]
    target = _exposed.get(name)
    if target is None:
        return EXIT_UNKNOWN_FUNCTION, {"error": f"no exposed function {name!r} (this source has "
                                                f"{sorted(_exposed) or 'none'})"}
    try:
        data = target.input_model.model_validate(request.get("data"))
    except ValidationError as exc:
        return EXIT_INVALID_DATA, {"error": f"data does not fit {name}'s input model "
                                            f"{target.input_model.__name__}: {_short(exc)}"}
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["output"] = target.function(data)
        except BaseException as exc:  # the source's own failure, reported as the task's
            box["error"] = f"{name} raised {type(exc).__name__}: {exc}"

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(target.timeout)
    if worker.is_alive():
        return EXIT_TIMEOUT, {"error": f"{name} ran past its timeout of {target.timeout} s"}
    if "error" in box:
        return EXIT_FAILED, {"error": box["error"]}
    output = box.get("output")
    if not isinstance(output, target.output_model):
        return EXIT_FAILED, {"error": f"{name} returned {type(output).__name__}, not its output model "
                                      f"{target.output_model.__name__}"}
    return EXIT_OK, {"output": output.model_dump(mode="json")}


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors()[:5])


def _run_init() -> None:
    for hook in _init:
        hook()


def _host(source_dir: str, entry: str) -> None:
    """Import the source as the node's host: this module stands for ``gridtask.sdk.opengpu.service``
    (and the packages above it are stubs), so the source's ``import gridtask.sdk.opengpu as ogpu``
    finds these decorators without the SDK's client stack."""
    global _hosted
    _hosted = True
    me = sys.modules[__name__]
    parents = {"gridtask": "sdk", "gridtask.sdk": "opengpu", "gridtask.sdk.opengpu": "service"}
    for package in parents:
        module = sys.modules.get(package) or types.ModuleType(package)
        module.__path__ = []  # a package with nothing else importable
        sys.modules[package] = module
    sys.modules["gridtask.sdk.opengpu.service"] = me
    for package, child in parents.items():
        setattr(sys.modules[package], child, sys.modules[f"{package}.{child}"])
    sys.path.insert(0, source_dir)
    importlib.import_module(entry)


def main(argv: list[str]) -> int:
    """``manifest DIR ENTRY`` prints the manifest; ``call DIR ENTRY`` runs the call on stdin."""
    if len(argv) != 3 or argv[0] not in ("manifest", "call"):
        print("usage: service.py manifest|call DIR ENTRY", file=sys.stderr)
        return 64
    command, source_dir, entry = argv
    try:
        _host(source_dir, entry)
        if command == "call":
            _run_init()
    except BaseException as exc:
        print(json.dumps({"error": f"the source did not load: {type(exc).__name__}: {exc}"}), file=sys.stderr)
        return EXIT_FAILED
    if command == "manifest":
        print(json.dumps(manifest(entry)))
        return EXIT_OK
    code, payload = call(json.loads(sys.stdin.read() or "null"))
    sys.stdout.write(RESULT_MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()
    return code


def source_entry(path: Path) -> str:
    """The module a source directory is imported by: ``main.py``, else its only ``.py`` file."""
    if (path / "main.py").is_file():
        return "main"
    modules = sorted(p.stem for p in path.glob("*.py"))
    if len(modules) != 1:
        raise ValueError(f"{path}: a source needs a main.py (or exactly one .py file; found {modules})")
    return modules[0]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
