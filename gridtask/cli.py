"""The ``gridtask`` command line: parse, build settings, call the library.

Errors that gridtask raises on purpose become one line and a non-zero exit code
(2 for bad input, 1 for everything else), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from gridtask.config import NetworkConfig, config_path, load_config, save_config
from gridtask.exceptions import ChainError, GridtaskError, ValidationError
from gridtask.logs import configure_logging
from gridtask.types import TaskState, TaskType

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="gridtask: run AI and compute tasks on machines nobody has to trust.",
)
task_app = typer.Typer(no_args_is_help=True, help="Look at or act on one task.")
app.add_typer(task_app, name="task")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
T = TypeVar("T")

ETHER = 10**18
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine; a GridtaskError becomes one line on stderr and an exit code."""
    try:
        return asyncio.run(coro_factory())  # type: ignore[arg-type]
    except ValidationError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except GridtaskError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="config file (default ~/.gridtask/config.json)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
ValidateOpt = Annotated[str, typer.Option(
    "--validate", help="sampled: a group of three checks the task when the network samples it; "
    "always: a group of three runs it every time (three fees, each node keeps its own)")]


# ---------------------------------------------------------------- applications


@app.command()
def run(
    prompt: Annotated[str, typer.Argument(help="the prompt")],
    model: Annotated[str, typer.Option("--model", "-m", help="model ID, e.g. tiny-llm")],
    max_tokens: Annotated[int, typer.Option(help="tokens to generate")] = 32,
    fee: Annotated[float, typer.Option(help="fee in ETH")] = 0.001,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the result")] = 120,
    validate: ValidateOpt = "sampled",
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Generate text from a prompt on the network."""
    result = _task(TaskType.LLM, model, {"prompt": prompt, "max_tokens": max_tokens}, fee, timeout, validate,
                   as_json, config)
    if not as_json:
        out.print(result["result"]["text"])


@app.command()
def embed(
    texts: Annotated[list[str], typer.Argument(help="texts to embed")],
    model: Annotated[str, typer.Option("--model", "-m")] = "all-minilm-l6-v2",
    fee: Annotated[float, typer.Option(help="fee in ETH")] = 0.001,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the result")] = 120,
    validate: ValidateOpt = "sampled",
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Embed texts into vectors on the network."""
    result = _task(TaskType.EMBED, model, {"texts": texts}, fee, timeout, validate, as_json, config)
    if not as_json:
        for text, vector in zip(texts, result["result"]["embeddings"], strict=True):
            head = ", ".join(f"{x:+.3f}" for x in vector[:4])
            out.print(f"{text[:40]!r}: [{head}, ...] ({len(vector)} dims)")


def _task(
    task_type: TaskType,
    model: str,
    inputs: dict[str, Any],
    fee: float,
    timeout: float,
    validate: str,
    as_json: bool,
    config: Path | None,
) -> dict[str, Any]:
    from gridtask.limits import check_positive, check_task, check_validate_mode
    from gridtask.sdk import Client

    async def go() -> dict[str, Any]:
        # What no node would run is refused before anything is paid (the SDK checks it again).
        check_positive("fee", fee, "ETH")
        check_positive("timeout", timeout, "seconds")
        check_validate_mode(validate)
        check_task(task_type, model, inputs)
        async with Client(config_path=config) as client:
            await _check_model_served(client, model)
            with console.status(f"creating {task_type.name.lower()} task on {model}...") as status:
                handle = await client.submit(task_type, model, inputs, fee=int(fee * ETHER), validate=validate)

                def on_status(h: Any, state: TaskState) -> None:
                    status.update(f"task {h.task_id[:12]}: {_STATE_WORDS.get(state, state.name)}")

                result = await client.result(handle, timeout=timeout, on_status=on_status)
            delivered = handle.delivered_by or handle.original  # another member's when its group outvoted it
            info = await client.task(delivered.key)
            doc = {
                "task_id": handle.task_id,
                "delivered_by": delivered.task_id,
                "state": info.state.name if info else "?",
                "node": handle.node,
                "fee_wei": handle.fee,
                "group": _group_doc(handle.group) if handle.group else None,
                "result": result,
            }
            if as_json:
                out.print_json(json.dumps(doc))
            else:
                console.print(f"task {delivered.task_id} [green]{doc['state']}[/] on node {handle.node}")
                if handle.group:
                    console.print(f"validated by a group of three: {handle.group.describe()}")
            return doc

    return _run(go)


async def _check_model_served(client: Any, model: str) -> None:
    from gridtask.chain.client import to_bytes32

    try:
        raw = to_bytes32(model)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    if await client.chain.model_node_count(raw) == 0:
        raise ValidationError(f"unknown model {model!r}: no node on this network serves it")


def _group_doc(group: Any) -> dict[str, Any]:
    """A ``GroupResult`` as JSON: the outcome, each member's key, node and vote, the slashes."""
    return {
        "outcome": group.outcome.name,
        "sampled": group.sampled,
        "members": [
            {"task_id": "0x" + key.hex(), "node": node, "agreed": agreed}
            for key, node, agreed in zip(group.keys, group.nodes or [""] * len(group.keys), group.agreeing,
                                         strict=True)
        ],
        "slashed": [{"node": node, "amount_wei": amount} for node, amount in group.slashed.items()],
    }


_STATE_WORDS = {
    TaskState.CREATED: "created, starting it",
    TaskState.QUEUED: "queued, waiting for a node",
    TaskState.STARTED: "started, node running it",
    TaskState.SCORE_READY: "score committed, validating",
    TaskState.VALIDATED: "validated, waiting for delivery",
    TaskState.SUCCESS: "success",
}


@task_app.command("show")
def task_show(task_id: str, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """A task's state on chain and its events."""
    from gridtask.limits import explain_task_error
    from gridtask.sdk import Client, parse_task_id

    try:
        commitment = parse_task_id(task_id)
    except ValidationError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None

    async def go() -> None:
        async with Client(config_path=config) as client:
            info = await client.task(commitment)
            if info is None:
                raise ValidationError(f"unknown task {task_id}: no such task on this network")
            events = await client.events(commitment)
            error = next((int(e.args["error_code"]) for e in events if e.name == "TaskErrorReported"), None)
            aborted = next((str(e.args["reason"]) for e in events if e.name == "TaskAborted"), None)
            invalidated = next((str(e.args["reason"]) for e in events if e.name == "TaskInvalidated"), None)
            group = await client.group(commitment)
            slashes = await client.slashes(commitment)
            doc: dict[str, Any] = {
                "task_id": "0x" + commitment.hex(),
                "state": info.state.name,
                "creator": info.creator,
                "node": info.node,
                "fee_wei": info.fee,
                "deadline": info.deadline,
                "error": None if error is None else {"code": error, "message": explain_task_error(error)},
                "abort_reason": aborted,
                "invalidated_reason": invalidated,
                "group": _group_doc(group) if group else None,
                "slashed": [{"node": e.args["node"], "amount_wei": int(e.args["amount"]),
                             "reason": str(e.args["reason"])} for e in slashes],
                "events": [
                    {
                        "name": e.name,
                        "block": e.block_number,
                        "args": {k: _jsonable(v) for k, v in e.args.items() if k != "commitment"},
                    }
                    for e in events
                ],
            }
            if as_json:
                out.print_json(json.dumps(doc))
                return
            out.print(
                f"task {doc['task_id']}\n  state   {info.state.name}\n  creator {info.creator}\n"
                f"  node    {info.node}\n  fee     {info.fee / ETHER} ETH"
            )
            if error is not None:
                out.print(f"  error   {explain_task_error(error)} (task error {error}; the fee was refunded)")
            if aborted is not None:
                paid = "the node was paid" if "node paid" in aborted else "the fee was refunded"
                out.print(f"  reason  {aborted} ({paid})")
            if invalidated is not None:
                out.print(f"  invalid {invalidated} (the fee was refunded, the node slashed)")
            for slash in doc["slashed"]:
                out.print(f"  slashed node {slash['node']}: {slash['amount_wei'] / ETHER} ETH ({slash['reason']})")
            if group is not None:
                out.print(f"  group   {group.describe()}")
                for index, member in enumerate(doc["group"]["members"]):
                    mark = "[green]agreed[/]" if member["agreed"] else "[red]outvoted or no vote[/]"
                    notes = [n for n, on in (("the original", index == 0),
                                             ("this task", member["task_id"] == doc["task_id"])) if on]
                    this = f"  ({', '.join(notes)})" if notes else ""
                    out.print(f"    {member['task_id']}  node {member['node']}  {mark}{this}")
            for e in doc["events"]:
                out.print(f"  block {e['block']:>6}  {e['name']}")

    _run(go)


@task_app.command("abort")
def task_abort(task_id: str, reason: str = "creator: aborted", config: ConfigOpt = None) -> None:
    """Abort a task whose stage deadline has passed; the fee is refunded."""
    from gridtask.sdk import Client

    async def go() -> None:
        async with Client(config_path=config) as client:
            await client.abort(task_id, reason)
            console.print(f"task {task_id} aborted; `gridtask withdraw` takes out the refund")

    _run(go)


@app.command()
def withdraw(config: ConfigOpt = None) -> None:
    """Take out what the contract owes this account (refunds, earnings, returned stake)."""
    from gridtask.sdk import Client

    async def go() -> None:
        async with Client(config_path=config) as client:
            amount = await client.withdraw()
            if amount:
                console.print(f"withdrew {amount / ETHER} ETH")
            else:
                console.print(f"nothing to withdraw: the contract owes {client.identity.address} nothing")

    _run(go)


bundle_app = typer.Typer(no_args_is_help=True, help="Content-addressed bundles: a Golem image, a source's code.")
app.add_typer(bundle_app, name="bundle")
DirArg = Annotated[Path, typer.Argument(help="the directory to pack", exists=True, file_okay=False)]


@bundle_app.command("pack")
def bundle_pack(
    directory: DirArg,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="also write the tar.gz here")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Pack DIR into a bundle and print its hash (the same tree always gives the same hash)."""
    from gridtask.bundles import bundle_hash, pack_dir

    async def go() -> tuple[str, int]:
        data = pack_dir(directory)
        if output is not None:
            output.write_bytes(data)
        return bundle_hash(data), len(data)

    name, size = _run(go)
    if as_json:
        out.print_json(data={"hash": name, "bytes": size})
    else:
        out.print(name)
        console.print(f"{directory}: {size} bytes packed; `gridtask bundle publish {directory}` uploads it")


@bundle_app.command("publish")
def bundle_publish(directory: DirArg, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Pack DIR and upload it to the network's relay; print its hash and how a Golem job names it."""
    from gridtask.bundles import pack_dir
    from gridtask.config import secret_value
    from gridtask.exceptions import ConfigError
    from gridtask.keys import Identity
    from gridtask.relay.client import RelayClient

    async def go() -> tuple[str, int]:
        network = load_config(config)
        if not secret_value(network.private_key):
            raise ConfigError("no private key to sign the upload with: set GRIDTASK_PRIVATE_KEY or the config's")
        data = pack_dir(directory)
        async with RelayClient(network.relay_url, Identity.from_hex(network.private_key)) as relay:
            with console.status(f"uploading {len(data)} bytes to {network.relay_url}..."):
                return await relay.put_bundle(data), len(data)

    name, size = _run(go)
    if as_json:
        out.print_json(data={"hash": name, "bytes": size})
    else:
        out.print(name)
        console.print(f"published {size} bytes; in a Golem job: "
                      f'payload = await vm.repo(image_hash="{name}")', highlight=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------- daemons


node_app = typer.Typer(help="Run a node, or act on this node's stake.")
app.add_typer(node_app, name="node")


@node_app.callback(invoke_without_command=True)
def node(
    ctx: typer.Context,
    model: Annotated[
        list[str], typer.Option("--model", help="echo | all-minilm-l6-v2 | llm:NAME=DIR | openai:NAME=URL")
    ] = ["echo"],  # noqa: B006
    gpu: Annotated[str, typer.Option(help='GPU name, or "cpu"')] = "cpu",
    vram: Annotated[int, typer.Option(help="VRAM in MiB (0 for a CPU node)")] = 0,
    stake: Annotated[float, typer.Option(help="stake in ETH")] = 1.0,
    state_dir: Annotated[Path, typer.Option(help="where the node keeps its cursor and results")] = Path(
        ".gridtask/node"
    ),
    sources: Annotated[
        list[str], typer.Option("--sources", help="OpenGPU sources to serve, in the sandbox: all | ADDRESS ...")
    ] = [],  # noqa: B006
    config: ConfigOpt = None,
) -> None:
    """Run a node: join with a stake, then run the tasks the contract gives it."""
    if ctx.invoked_subcommand is not None:
        return
    from gridtask.node.daemon import NodeDaemon
    from gridtask.node.settings import NodeSettings, build_executors, source_executor

    configure_logging(role="node")
    network = _network(config)
    try:
        executors = build_executors(model)
        if sources:
            executors.add(source_executor(network, sources))
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    settings = NodeSettings(
        network=network, models=model, gpu=gpu, vram=vram, stake=int(stake * ETHER), state_dir=state_dir
    )

    async def go() -> None:
        daemon = NodeDaemon(settings, executors)
        _on_signals(daemon.shutdown)
        await daemon.serve()

    _run(go)


@node_app.command("top-up")
def node_top_up(
    amount: Annotated[float, typer.Option("--amount", help="ETH to add to this node's stake")],
    config: ConfigOpt = None,
) -> None:
    """Add to this node's stake (the config's key); a node slashed below the minimum needs it to resume."""
    from gridtask.chain.client import ChainClient
    from gridtask.keys import Identity
    from gridtask.limits import check_positive

    async def go() -> None:
        check_positive("amount", amount, "ETH")
        network = _network(config)
        async with ChainClient.from_config(network, Identity.from_hex(network.private_key)) as chain:
            before = await chain.get_node(chain.account)
            if before is None:
                raise ValidationError(f"{chain.account} is not a node on this network: `gridtask node` joins it")
            await chain.top_up(int(amount * ETHER))
            after = await chain.get_node(chain.account)
            assert after is not None
            params = await chain.network_params()
            console.print(f"node {chain.account}: stake {before.stake / ETHER} -> {after.stake / ETHER} ETH "
                          f"(minimum {params.min_stake / ETHER} ETH), status {after.status.name}")
            if after.stake >= params.min_stake and after.status.name == "PAUSED":
                console.print("the stake is back over the minimum: a running node daemon resumes it")

    _run(go)


@app.command()
def relay(
    host: str = "127.0.0.1",
    port: int = 8700,
    data_dir: Annotated[
        Path, typer.Option(help="where blobs, pending reports and the replay journal are kept")
    ] = Path(".gridtask/relay"),
    config: ConfigOpt = None,
) -> None:
    """Run the relay: encrypted parameters and results, checked against the chain.
    Stops within 5 s of SIGTERM or SIGINT; a second signal exits at once."""
    from gridtask.chain.client import ChainClient
    from gridtask.keys import Identity
    from gridtask.relay.app import REPLAY_JOURNAL, create_app
    from gridtask.relay.server import RelayServer
    from gridtask.relay.storage import FileStore
    from gridtask.relay.tasks import relay_follower

    configure_logging(role="relay")
    network = _network(config)

    async def go() -> None:
        chain = ChainClient.from_config(network, Identity.from_hex(network.private_key))
        events = relay_follower(chain, ws_url=network.ws_url, confirmations=network.confirmations)
        relay_app = create_app(
            chain=chain, store=FileStore(data_dir), replay_journal=data_dir / REPLAY_JOURNAL, events=events
        )
        server = RelayServer(
            relay_app, host=host, port=port, log_level="warning", on_stop=relay_app.state.stop
        )
        try:
            await server.serve()
        finally:
            await chain.aclose()

    _run(go)


@app.command()
def devnet(
    nodes: Annotated[int, typer.Option(help="how many nodes")] = 3,
    demo: Annotated[bool, typer.Option(help="run the demo job")] = True,
    port: Annotated[int, typer.Option(help="the chain's port")] = 8545,
    block_time: Annotated[
        float | None, typer.Option(help="seconds per block (default: a block per transaction)")
    ] = None,
    node_model: Annotated[
        list[str] | None,
        typer.Option("--node-model", help="a model spec every node serves, as `node --model` (default: the demo's)"),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Start a whole local network (anvil, contract, relay, nodes) and run a demo job."""
    from gridtask.devnet import Devnet, run_demo

    configure_logging(role="devnet")
    if demo and node_model:
        console.print("[red]error:[/] the demo needs the default models: add --no-demo with --node-model")
        raise typer.Exit(EXIT_BAD_INPUT)

    async def go() -> None:
        net = Devnet(nodes=nodes, port=port, block_time=block_time, node_models=node_model or None,
                     report=out.print)
        stop = asyncio.Event()
        _on_signals(stop.set)
        body = asyncio.create_task(bring_up(net))
        stopped = asyncio.create_task(stop.wait())
        try:  # Ctrl-C interrupts whatever the devnet is doing, start-up included
            await asyncio.wait({body, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            body.cancel()
            stopped.cancel()
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await body  # re-raises what made the devnet fail, if it did
            finally:
                net.stop()

    async def bring_up(net: Devnet) -> None:
        with console.status("starting anvil, the contract and the relay..."):
            cfg = await net.start()
        path = save_config(cfg, config_path(config))
        out.print(
            f"chain    {cfg.rpc_url}\ncontract {cfg.contract}\nrelay    {cfg.relay_url}\n"
            f"config   {path} (the SDK and the CLI use it by default)"
        )
        with console.status(f"loading models and joining {nodes} node(s)..."):
            await net.wait_nodes()
        out.print(f"{nodes} node(s) joined")
        supervisor = asyncio.create_task(net.supervise())  # ends only if the chain dies
        if demo:
            with console.status("demo: 3 embedding tasks and a prompt..."):
                ok = await run_demo(cfg, say=out.print)
            out.print(
                "demo finished: every task ended in success on chain" if ok else "[red]demo: some tasks failed[/]"
            )
        out.print("devnet running; press Ctrl-C to stop")
        await supervisor
        raise ChainError("the devnet's chain exited; stopping the devnet")

    _run(go)


def _network(config: Path | None) -> NetworkConfig:
    try:
        return load_config(config)
    except GridtaskError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _on_signals(callback: Callable[[], None]) -> None:
    """SIGINT or SIGTERM asks to stop (``callback``); a second one exits at once. A daemon
    keeps on disk, before each step, what it needs later, so exiting hard loses nothing."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        if received:
            console.print(f"{sig.name} again: exiting now")
            os._exit(128 + sig)
        received.append(sig)
        callback()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
