"""Log searches start at the contract's deployment block, never at block 0: on a chain with
a million blocks before the contract, a lookup costs a handful of JSON-RPC requests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gridtask.chain.anvil import find_anvil, free_port, rpc_answers, rpc_call
from gridtask.chain.client import ChainClient
from gridtask.chain.deploy import NetworkParams, deploy
from gridtask.chain.events import EventFollower
from gridtask.crypto import task_commitment, task_key
from gridtask.keys import Identity
from gridtask.types import TaskType

from .conftest import running_devnet
from .model_server import send_json

pytestmark = pytest.mark.e2e

HISTORY = 1_000_000


@pytest.fixture
def tall_chain() -> Iterator[str]:
    """An anvil whose first block is number 1,000,000: a chain with a long history."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([find_anvil(), "--port", str(port), "--host", "127.0.0.1", "--silent",
                             "--number", str(HISTORY)])
    try:
        deadline = time.monotonic() + 30
        while not rpc_answers(url):
            assert proc.poll() is None and time.monotonic() < deadline, "anvil did not start"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


class RangeLimitedRPC(ThreadingHTTPServer):
    """A JSON-RPC endpoint in front of anvil that refuses ``eth_getLogs`` over more than
    ``MAX_RANGE`` blocks, as hosted providers do; everything else goes through unchanged."""

    MAX_RANGE = 5_000

    def __init__(self, upstream: str, max_range: int = MAX_RANGE) -> None:
        self.upstream = upstream
        self.max_range = max_range
        super().__init__(("127.0.0.1", 0), _Forward)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: RangeLimitedRPC

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        call = json.loads(body)
        if call.get("method") == "eth_getLogs":
            flt = call["params"][0]
            lo, hi = (int(flt.get(k, "0x0"), 16) if str(flt.get(k, "0x0")).startswith("0x") else 2**62
                      for k in ("fromBlock", "toBlock"))
            if hi - lo + 1 > self.server.max_range:
                error = {"code": -32005, "message": f"block range too large: at most {self.server.max_range}"}
                return self._reply(json.dumps({"jsonrpc": "2.0", "id": call["id"], "error": error}).encode())
        request = urllib.request.Request(self.server.upstream, body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            self._reply(answer.read())

    def _reply(self, payload: bytes) -> None:
        send_json(self, payload)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def range_limited(upstream: str, max_range: int = RangeLimitedRPC.MAX_RANGE) -> Iterator[RangeLimitedRPC]:
    server = RangeLimitedRPC(upstream, max_range)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def provider(tall_chain: str) -> Iterator[RangeLimitedRPC]:
    with range_limited(tall_chain) as server:
        yield server


@pytest.fixture
async def deployed(tall_chain: str) -> AsyncIterator[tuple[str, str, int, bytes]]:
    """The contract on the tall chain, one task created and queued; 200 more blocks on top."""
    deployer, app = Identity.generate(), Identity.generate()
    for ident in (deployer, app):
        rpc_call(tall_chain, "anvil_setBalance", [ident.address, hex(10**22)])
    contract = await deploy(tall_chain, deployer, deployer.address, NetworkParams())
    deployed_at = int(str(rpc_call(tall_chain, "eth_blockNumber", [])), 16)
    commitment = task_commitment(os.urandom(32), nonce := os.urandom(32))
    async with ChainClient(tall_chain, contract, app) as client:
        await client.create_task(
            task_type=TaskType.ECHO, commitment=commitment, nonce=nonce, models=["nobody-serves-it"], min_vram=0,
            required_gpu="", params_hash=os.urandom(32), task_size=1, timeout=60, fee=10**15)
        # started in the next block: nobody serves the model, so it is queued (TaskQueued)
        await client.start_task(task_key(app.address, commitment), ["nobody-serves-it"], 0, "")
    rpc_call(tall_chain, "anvil_mine", [hex(200)])
    yield tall_chain, contract, deployed_at, task_key(app.address, commitment)


def count_requests(client: ChainClient) -> Counter[str]:
    """Count every JSON-RPC request the client sends (the requests themselves are real)."""
    counts: Counter[str] = Counter()
    provider = client.w3.provider
    send = provider.make_request  # type: ignore[attr-defined]

    async def counting(method: str, params: object) -> object:
        counts[method] += 1
        return await send(method, params)

    provider.make_request = counting  # type: ignore[attr-defined]
    return counts


async def test_a_lookup_with_the_configured_deploy_block_costs_a_handful(
        deployed: tuple[str, str, int, bytes], provider: RangeLimitedRPC) -> None:
    """Through a provider that takes at most 5,000 blocks per eth_getLogs."""
    _, contract, deployed_at, key = deployed
    async with ChainClient(provider.url, contract, Identity.generate(), deploy_block=deployed_at) as client:
        counts = count_requests(client)
        created = await client.find_logs([client.events.topic("TaskCreated"), key], first=True)
        events = await client.find_logs([None, key])
        assert [e.name for e in created] == ["TaskCreated"]
        assert [e.name for e in events] == ["TaskCreated", "TaskQueued"]
        assert sum(counts.values()) <= 4, counts

        counts.clear()  # what a search from block 0 costs on the same provider
        assert [e.name for e in await client.find_logs([None, key], from_block=0)] == ["TaskCreated", "TaskQueued"]
        assert sum(counts.values()) > HISTORY // RangeLimitedRPC.MAX_RANGE, counts


async def test_without_it_the_deploy_block_is_found_once_by_bisection(
        deployed: tuple[str, str, int, bytes], provider: RangeLimitedRPC) -> None:
    _, contract, deployed_at, key = deployed
    async with ChainClient(provider.url, contract, Identity.generate()) as client:
        counts = count_requests(client)
        assert await client.deployment_block() == deployed_at
        assert sum(counts.values()) <= 25, counts  # about log2(head) eth_getCode, once
        counts.clear()
        events = await client.find_logs([None, key])
        assert [e.name for e in events] == ["TaskCreated", "TaskQueued"]
        assert sum(counts.values()) <= 3, counts
    async with ChainClient(provider.url, contract, Identity.generate()) as again:
        counts = count_requests(again)
        assert await again.deployment_block() == deployed_at  # cached in this process
        assert sum(counts.values()) == 0


async def test_the_devnet_writes_the_deploy_block_into_its_config(tmp_path: Path) -> None:
    async with running_devnet(tmp_path, nodes=0) as net:
        assert net.config is not None and net.chain is not None
        block = net.config.deploy_block
        assert block is not None
        code_at = rpc_call(net.chain.url, "eth_getCode", [net.config.contract, hex(block)])
        code_before = rpc_call(net.chain.url, "eth_getCode", [net.config.contract, hex(block - 1)])
        assert code_at not in ("0x", "") and code_before in ("0x", "")
        assert net.env_for(Identity.generate())["GRIDTASK_DEPLOY_BLOCK"] == str(block)


async def test_the_event_follower_catches_up_through_a_provider_that_takes_100_blocks(
        deployed: tuple[str, str, int, bytes]) -> None:
    """A follower that starts at the deployment block, 200+ blocks back, behind a provider that
    refuses eth_getLogs over more than 100 blocks: it reads in ranges the provider takes."""
    url, contract, deployed_at, key = deployed
    with range_limited(url, max_range=100) as narrow:
        async with ChainClient(narrow.url, contract, Identity.generate(), deploy_block=deployed_at) as client, \
                EventFollower(client, from_block=deployed_at, poll_interval=0.05) as follower:
            got = [await follower.next(timeout=15) for _ in range(2)]
    assert [(e.name, e.commitment) for e in got if e is not None] == [("TaskCreated", key), ("TaskQueued", key)]
