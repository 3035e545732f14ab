"""The whole network on one machine: anvil, the contract, the relay and N nodes.

Each daemon runs as its own process (``gridtask relay``, ``gridtask node``), exactly as
an operator would start it, configured only through ``GRIDTASK_*`` variables. The
devnet writes a config file that the SDK and the CLI pick up by default, runs a short
demo job, and on Ctrl-C stops every process it started: the nodes first, then the
relay, then the chain, each step reported.

Nothing it starts outlives it: every child dies with the devnet, however the devnet
ends (``gridtask.children``), and a pid file in its home lets the next devnet find
and end what a devnet on another platform, or an older one, left behind. While it
runs, ``supervise()`` restarts a node or the relay that dies, and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import SecretStr

from gridtask.chain.anvil import Anvil, free_port
from gridtask.chain.client import GROUP_SIZE, ChainClient
from gridtask.chain.deploy import ETHER, NetworkParams, deploy, deploy_source_registry
from gridtask.children import PidFile, die_with_parent, end_processes
from gridtask.config import NetworkConfig
from gridtask.exceptions import ConfigError, GridtaskError
from gridtask.keys import Identity

log = logging.getLogger("gridtask.devnet")

FUNDING = 10_000 * ETHER
DEVNET_MODELS_DIR = Path(".gridtask") / "models"
PID_FILE = "devnet.pid"
# Stopping: each group gets SIGTERM, then SIGKILL after its share of a 5 s budget.
NODE_STOP_S = 2.5
RELAY_STOP_S = 1.5
CHAIN_STOP_S = 0.5
SUPERVISE_S = 0.5  # how often the children are looked at
MAX_RESTARTS = 5  # within RESTART_WINDOW_S, after which a child that keeps dying is left down
RESTART_WINDOW_S = 60.0
DEVNET_PARAMS = NetworkParams(validation_window=60, challenge_window=300, unstake_delay=300)
"""The devnet's contract: the default settings, with windows short enough to watch end on one
machine (validate within 60 s, dispute within 5 min, a stake released 5 min after quitting)."""


def _log_line(message: str) -> None:
    log.info("%s", message)


@dataclass
class Devnet:
    """A running local network; ``start()`` brings it up, ``stop()`` takes it down."""

    nodes: int = 3
    port: int | None = None
    block_time: float | None = None
    home: Path = field(default_factory=lambda: Path(".gridtask") / "devnet")
    node_models: list[str] | None = None
    # Nodes serve every published source (``--sources all``) where the sandbox runs.
    serve_sources: bool = field(default_factory=lambda: _sandbox_available())
    # The contract's deploy settings (a test may shorten or lengthen a window).
    params: NetworkParams = DEVNET_PARAMS
    # Where the daemons and the SDK reach the chain, if not anvil itself (a proxy, say).
    rpc_url: str | None = None
    ws_url: str | None = None
    chain: Anvil | None = None
    config: NetworkConfig | None = None
    relay_identity: Identity = field(default_factory=Identity.generate)
    node_identities: list[Identity] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Where the devnet says what happens to its processes (the CLI prints it).
    report: Callable[[str], object] = _log_line
    _commands: dict[str, tuple[list[str], Identity]] = field(default_factory=dict, init=False)
    _restarts: dict[str, list[float]] = field(default_factory=dict, init=False)
    _stopping: bool = field(default=False, init=False)

    @property
    def pid_file(self) -> PidFile:
        return PidFile(self.home / PID_FILE)

    # ------------------------------------------------------------ start

    async def start(self) -> NetworkConfig:
        self.home.mkdir(parents=True, exist_ok=True)
        self.clean_leftovers()
        self.chain = Anvil(port=self.port, block_time=self.block_time,
                           log_path=self.home / "anvil.log").start()
        self._write_pids()
        log.info("chain: anvil at %s", self.chain.url)
        deployer, app = Identity.generate(), Identity.generate()
        self.node_identities = [Identity.generate() for _ in range(self.nodes)]
        for ident in [deployer, app, self.relay_identity, *self.node_identities]:
            self.chain.fund(ident.address, FUNDING)
        params = self.params
        if self.nodes < GROUP_SIZE and params.validation_rate_bps:
            # a sampled task needs three different nodes: with fewer it could never be validated
            params = dataclasses.replace(params, validation_rate_bps=0)
            log.info("chain: %d node(s) cannot form a validation group of %d: no task is sampled",
                     self.nodes, GROUP_SIZE)
        contract = await deploy(self.chain.url, deployer, self.relay_identity.address, params)
        log.info("chain: TaskNetwork deployed at %s", contract)
        source_registry = await deploy_source_registry(self.chain.url, deployer)
        log.info("chain: SourceRegistry deployed at %s", source_registry)
        async with ChainClient(self.chain.url, contract, deployer) as chain:
            deploy_block = await chain.deployment_block()  # log searches start there
        relay_port = free_port()
        self.config = NetworkConfig(
            rpc_url=self.rpc_url or self.chain.url, ws_url=self.ws_url or self.chain.ws_url, contract=contract,
            relay_url=f"http://127.0.0.1:{relay_port}", private_key=SecretStr("0x" + app.private_key.hex()),
            deploy_block=deploy_block, source_registry=source_registry,
        )
        self.start_relay(relay_port)
        await self.wait_relay()
        if self.nodes:
            models = self.node_models or default_node_models()
            for index in range(self.nodes):
                self.start_node(index, models)
        return self.config

    def env_for(self, identity: Identity) -> dict[str, str]:
        assert self.config is not None
        env = dict(os.environ)
        env.update({
            "GRIDTASK_CONFIG": str(self.home / "none.json"),  # daemons take only these variables
            "GRIDTASK_RPC_URL": self.config.rpc_url,
            "GRIDTASK_WS_URL": self.config.ws_url,
            "GRIDTASK_CONTRACT": self.config.contract,
            "GRIDTASK_RELAY_URL": self.config.relay_url,
            "GRIDTASK_DEPLOY_BLOCK": str(self.config.deploy_block or 0),
            "GRIDTASK_CONFIRMATIONS": str(self.config.confirmations),
            "GRIDTASK_SOURCE_REGISTRY": self.config.source_registry,
            "GRIDTASK_PRIVATE_KEY": "0x" + identity.private_key.hex(),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        })
        # Every node shares this machine: torch's default (a thread per core in each node)
        # makes N nodes fight over the cores and spend about twice the CPU per embedding.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, self.nodes))))
        return env

    def start_relay(self, port: int | None = None) -> None:
        assert self.config is not None
        port = port or int(self.config.relay_url.rsplit(":", 1)[1])
        self._spawn("relay", ["relay", "--port", str(port), "--data-dir", str(self.home / "relay")],
                    self.relay_identity)

    def start_node(self, index: int, models: list[str] | None = None) -> None:
        models = models or self.node_models or default_node_models()
        args = ["node", "--state-dir", str(self.home / "nodes")]
        for m in models:
            args += ["--model", m]
        if self.serve_sources:  # OpenGPU-style sources: every one published, run in the sandbox
            args += ["--sources", "all"]
        self._spawn(f"node{index}", args, self.node_identities[index])

    def add_node(self, models: list[str]) -> int:
        """Start one more node, with a fresh funded key; returns its index."""
        assert self.chain is not None
        identity = Identity.generate()
        self.chain.fund(identity.address, FUNDING)
        self.node_identities.append(identity)
        index = len(self.node_identities) - 1
        self.start_node(index, models)
        return index

    def _spawn(self, name: str, args: list[str], identity: Identity) -> None:
        """Start a daemon in its own session (a Ctrl-C in the terminal reaches only the
        devnet, which stops things in order) that dies with the devnet."""
        with open(self.home / f"{name}.log", "ab") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "gridtask", *args], env=self.env_for(identity),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        self._commands[name] = (args, identity)
        self._write_pids()
        log.info("%s: started (pid %d, log %s)", name, self.processes[name].pid, out.name)

    def pids(self) -> dict[str, int]:
        """Every process of this devnet by name (``chain``, ``relay``, ``node0``...)."""
        found = {name: proc.pid for name, proc in self.processes.items()}
        if self.chain is not None and self.chain.pid is not None:
            found["chain"] = self.chain.pid
        return found

    def _write_pids(self) -> None:
        self.pid_file.write(self.pids())

    def clean_leftovers(self) -> None:
        """End what a devnet that used this home before left running (its children, if
        they outlived it), and refuse to start beside a devnet that still runs there."""
        owner, children = self.pid_file.leftovers()
        if owner is not None:
            raise ConfigError(
                f"another devnet (pid {owner}) is running in {self.home}: stop it (kill {owner}) "
                "or give this one another home")
        if children:
            listed = ", ".join(f"{name} (pid {pid})" for name, pid in sorted(children.items()))
            self.report(f"devnet: a previous devnet in {self.home} left {listed} running; ending them")
            stuck = end_processes(list(children.values()))
            if stuck:
                raise ConfigError(f"could not end the previous devnet's processes {stuck}: end them by hand")
        self.pid_file.remove()

    # ------------------------------------------------------------ supervise

    async def supervise(self, interval: float = SUPERVISE_S) -> None:
        """Until cancelled: a node or the relay that dies is reported and restarted (a node
        resumes its tasks from the chain and its state directory; the relay keeps its
        blobs on disk). The chain cannot come back (its state lives in anvil's memory):
        its death is reported and ends the supervision."""
        while not self._stopping:
            await asyncio.sleep(interval)
            for name, proc in list(self.processes.items()):
                if proc.poll() is None or self._stopping:
                    continue
                self.report(f"{name}: exited with code {proc.returncode} (see {self.home / (name + '.log')})")
                if self._may_restart(name):
                    self._spawn(name, *self._commands[name])
                    self.report(f"{name}: restarted (pid {self.processes[name].pid})")
                else:
                    self.report(f"{name}: died {MAX_RESTARTS} times in {RESTART_WINDOW_S:.0f} s; left down")
                    del self.processes[name]
            if self.chain is not None and self.chain.proc is not None and self.chain.proc.poll() is not None:
                self.report(f"chain: anvil exited with code {self.chain.proc.returncode}; the devnet "
                            "cannot go on without it (stop it with Ctrl-C and start it again)")
                return

    def _may_restart(self, name: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self._restarts.get(name, []) if now - t < RESTART_WINDOW_S]
        self._restarts[name] = [*recent, now]
        return len(recent) < MAX_RESTARTS

    async def wait_relay(self, timeout: float = 60) -> None:
        assert self.config is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.config.relay_url + "/v1/health")).status_code == 200:
                        return
                self._check_alive("relay")
                await asyncio.sleep(0.1)
        raise GridtaskError("the relay did not come up; see " + str(self.home / "relay.log"))

    async def wait_nodes(self, timeout: float = 300) -> None:
        """Until every node has joined on chain (model loading can take a while)."""
        assert self.config is not None
        async with ChainClient(self.config.rpc_url, self.config.contract, self.relay_identity) as chain:
            deadline = time.monotonic() + timeout
            pending = list(self.node_identities)
            while pending:
                pending = [i for i in pending if await chain.get_node(i.address) is None]
                for name in self.processes:
                    self._check_alive(name)
                if time.monotonic() > deadline:
                    raise GridtaskError(f"{len(pending)} node(s) did not join; see {self.home}/node*.log")
                await asyncio.sleep(0.2)

    def _check_alive(self, name: str) -> None:
        proc = self.processes.get(name)
        if proc is not None and proc.poll() is not None:
            raise GridtaskError(f"{name} exited with code {proc.returncode}; see {self.home / (name + '.log')}")

    # ------------------------------------------------------------ stop

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = NODE_STOP_S) -> None:
        """Stop one process (it is not restarted: it leaves the supervision)."""
        self._end({name: self.processes.pop(name)} if name in self.processes else {}, sig, timeout)

    def stop(self) -> None:
        """The nodes first (a node mid-task still reaches the chain and the relay while it
        stops), then the relay, then the chain; each step reported, the whole in under 5 s."""
        self._stopping = True
        nodes = {n: p for n, p in self.processes.items() if n != "relay"}
        relay = {n: p for n, p in self.processes.items() if n == "relay"}
        for what, group, timeout in ((f"{len(nodes)} node(s)", nodes, NODE_STOP_S),
                                     ("the relay", relay, RELAY_STOP_S)):
            if not group:
                continue
            started = time.monotonic()
            self.report(f"stopping {what}...")
            killed = self._end(group, signal.SIGTERM, timeout)
            note = f" (killed after {timeout:.1f} s: {', '.join(killed)})" if killed else ""
            self.report(f"stopped {what} in {time.monotonic() - started:.1f} s{note}")
            for name in group:
                self.processes.pop(name, None)
        if self.chain and self.chain.proc is not None:
            started = time.monotonic()
            self.report("stopping the chain...")
            self.chain.stop(CHAIN_STOP_S)
            self.report(f"stopped the chain in {time.monotonic() - started:.1f} s")
        if self.pid_file.read()[0] == os.getpid():  # never another devnet's
            self.pid_file.remove()
        log.info("devnet: stopped")

    @staticmethod
    def _end(group: dict[str, subprocess.Popen[bytes]], sig: int, timeout: float) -> list[str]:
        """Signal every process of the group at once, wait for all of them up to ``timeout``,
        SIGKILL those still running; returns their names."""
        running = {name: proc for name, proc in group.items() if proc.poll() is None}
        for proc in running.values():
            proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while any(proc.poll() is None for proc in running.values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        killed = [name for name, proc in running.items() if proc.poll() is None]
        for name in killed:
            running[name].kill()
        for proc in running.values():
            proc.wait()
        return killed


def _sandbox_available() -> bool:
    """Whether this machine runs the node's sandbox (bubblewrap), which sources need."""
    from gridtask.node.sandbox import sandbox_available

    return sandbox_available()


def default_node_models() -> list[str]:
    """Every devnet node serves the demo's models: echo, MiniLM and the tiny LLM, and Golem
    scripts (``vm``) where the sandbox runs."""
    from gridtask.limits import VM_MODEL
    from gridtask.node.executors.embed import MINILM
    from gridtask.node.executors.tiny_llm import TINY_LLM, build_tiny_llm

    tiny = build_tiny_llm(DEVNET_MODELS_DIR / TINY_LLM)
    return ["echo", MINILM, f"llm:{TINY_LLM}={tiny.resolve()}", *([VM_MODEL] if _sandbox_available() else [])]


async def run_demo(config: NetworkConfig, *, say: Callable[[str], object] = print) -> bool:
    """Several embeddings and a prompt, each followed to its end on chain."""
    from gridtask.sdk import Client
    from gridtask.sdk.dria import Dria, Model, Task
    from gridtask.sdk.dria.factory import Simple
    from gridtask.types import TaskType

    async with Client(config=config) as client:
        texts = [["gridtask runs tasks on machines nobody has to trust"],
                 ["a node stakes to join", "cheaters lose their stake"],
                 ["the relay never sees plaintext"]]
        jobs = [client.submit(TaskType.EMBED, Model.MINILM.value, {"texts": t}) for t in texts]
        handles = list(await asyncio.gather(*jobs))
        results = await asyncio.gather(*(client.result(h, timeout=180) for h in handles),
                                       return_exceptions=True)
        simple = Simple(prompt="Hey there!")
        answer = await Dria(client=client).execute(Task(workflow=simple.workflow(), models=[Model.TINY_LLM]),
                                                   timeout=180)
        ok = True
        for handle, result in zip(handles, results, strict=True):
            info = await client.task(handle.commitment)
            if isinstance(result, BaseException):
                ok = False
                say(f"embed   {handle.task_id[:12]}  FAILED: {result}")
            else:
                dims = ",".join(str(len(v)) for v in result["embeddings"])
                say(f"embed   {handle.task_id[:12]}  {info.state.name if info else '?'}  "
                    f"fee {handle.fee / ETHER:.4f} ETH  vectors of dim {dims}")
        info = await client.task(answer[0].id)
        say(f"prompt  {answer[0].id[:12]}  {info.state.name if info else '?'}  "
            f"fee {answer[0].fee / ETHER:.4f} ETH  answer: {simple.parse_result(answer)[:60]!r}")
        return ok
