"""The relay as served over loopback by uvicorn: what reaches it on the wire, byte by byte.

Bodies are refused before they are read (raw sockets send headers and hold the body
back), long-polls for parameters that never come leave nothing behind (10,000 of them,
memory measured), and replays stay refused after the relay restarts on its data folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest
from starlette.applications import Starlette

from gridtask.keys import Identity
from gridtask.relay.app import REPLAY_JOURNAL, create_app
from gridtask.relay.auth import sign_request
from gridtask.relay.client import RelayClient
from gridtask.relay.server import RelayServer
from gridtask.relay.storage import FileStore
from gridtask.types import TaskState

from .chains import FakeChain
from .test_app import free_port, path

LIMIT = 1024
ANSWER_WITHIN_S = 5.0


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[int]:
    """The app on a real uvicorn server on a free loopback port; yields the port."""
    port = free_port()
    server = RelayServer(app, port=port, log_level="warning", on_stop=app.state.stop)
    running = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or running.done():
            break
        await asyncio.sleep(0.02)
    assert server.started, "relay server did not start"
    try:
        yield port
    finally:
        server.shutdown()
        await asyncio.wait_for(running, timeout=10)


def relay_app(chain: FakeChain, data: Path, **kwargs: object) -> Starlette:
    return create_app(
        chain=chain, store=FileStore(data), max_params_bytes=LIMIT,
        replay_journal=data / REPLAY_JOURNAL, **kwargs,  # type: ignore[arg-type]
    )


async def send_head(port: int, method: str, url: str, headers: dict[str, str]) -> tuple[
    asyncio.StreamReader, asyncio.StreamWriter
]:
    """Open a connection and send only the request line and headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {url} HTTP/1.1", "Host: relay", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    return reader, writer


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status and JSON body of one response, or a test failure after ANSWER_WITHIN_S."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_WITHIN_S)
    status_line, *header_lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    length = int(fields.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), ANSWER_WITHIN_S)
    return int(status_line.split()[1]), json.loads(body)


# -- point: headers and declared size before the body ---------------------------------------


async def test_declared_size_over_the_limit_is_413_before_the_body_is_sent(tmp_path: Path) -> None:
    chain, creator, node = FakeChain(), Identity.generate(), Identity.generate()
    task = chain.add(creator, node, TaskState.STARTED)
    url = path(task, "params")
    huge = 10 * 1024 * 1024 * 1024  # 10 GiB, never sent
    headers = sign_request(creator, "PUT", url, b"")  # the digest does not matter: never compared
    headers["Content-Length"] = str(huge)
    async with serving(relay_app(chain, tmp_path)) as port:
        reader, writer = await send_head(port, "PUT", url, headers)
        status, body = await read_response(reader)
        writer.close()
    assert (status, body) == (413, {"error": f"parameters too large: at most {LIMIT} bytes"})
    assert not (tmp_path / f"0x{task.hex()}.params").exists()


@pytest.mark.parametrize("who", ["nobody", "node"])
async def test_unauthorized_upload_is_refused_before_its_body_is_sent(tmp_path: Path, who: str) -> None:
    """Headers that do not name the task's creator are refused from the headers alone: the
    body (within the size limit) is held back and the answer still comes."""
    chain, creator, node = FakeChain(), Identity.generate(), Identity.generate()
    task = chain.add(creator, node, TaskState.STARTED)
    url = path(task, "params")
    body = os.urandom(LIMIT // 2)
    headers = {} if who == "nobody" else sign_request(node, "PUT", url, body)
    headers["Content-Length"] = str(len(body))
    async with serving(relay_app(chain, tmp_path)) as port:
        reader, writer = await send_head(port, "PUT", url, headers)
        status, answer = await read_response(reader)
        writer.close()
    if who == "nobody":
        assert status == 401 and answer["error"].startswith("missing signature headers"), answer
    else:
        assert (status, answer) == (403, {"error": "only the task's creator may upload parameters"})


async def test_chunked_body_over_the_limit_is_cut_off_at_the_limit(tmp_path: Path) -> None:
    """A body without a declared size is read only up to the limit: the 413 arrives while
    the sender is still sending, and the connection is closed on it."""
    chain, creator, node = FakeChain(), Identity.generate(), Identity.generate()
    task = chain.add(creator, node, TaskState.STARTED)
    url = path(task, "params")
    body = b"\xab" * (64 * LIMIT)  # what the sender claims, by digest, and would go on sending
    headers = {**sign_request(creator, "PUT", url, body), "Transfer-Encoding": "chunked"}
    chunk = 256
    async with serving(relay_app(chain, tmp_path)) as port:
        reader, writer = await send_head(port, "PUT", url, headers)
        sent = 0
        while sent <= LIMIT:  # one chunk past the limit, and no end-of-body chunk
            writer.write(f"{chunk:x}\r\n".encode() + body[sent : sent + chunk] + b"\r\n")
            await writer.drain()
            sent += chunk
        status, answer = await read_response(reader)
        assert (status, answer) == (413, {"error": f"parameters too large: at most {LIMIT} bytes"})
        assert await asyncio.wait_for(reader.read(), ANSWER_WITHIN_S) == b""  # closed: no more read
        writer.close()
    assert sent < len(body)
    assert not (tmp_path / f"0x{task.hex()}.params").exists()


# -- point: waiters for parameters that never arrive are released ---------------------------


REQUESTS = int(os.environ.get("RELAY_TEST_REQUESTS", "10000"))
CONCURRENCY = 16
WARM_UP = 600


async def long_poll_all(port: int, node: Identity, ids: list[bytes], statuses: dict[int, int]) -> None:
    """GET each task's parameters with ``?wait=0.02``, signed by ``node``, over CONCURRENCY
    kept-alive connections (a bare HTTP/1.1 client: httpx's pool costs more CPU than the relay)."""

    async def connection(share: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for task_id in share:
                url = path(task_id, "params")
                headers = sign_request(node, "GET", url, b"")
                head = [f"GET {url}?wait=0.02 HTTP/1.1", "Host: relay", *(f"{k}: {v}" for k, v in headers.items())]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
                status, _ = await read_response(reader)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(ids[k::CONCURRENCY]) for k in range(CONCURRENCY)))


async def test_ten_thousand_long_polls_for_missing_parameters_leave_memory_flat(tmp_path: Path) -> None:
    """10,000 long-polls, a third each for unknown tasks, unstarted tasks and started tasks
    whose parameters never come, against the real server over loopback: the relay keeps
    nothing of them. The interpreter's allocated blocks are counted after a warm-up and
    after the run (tracemalloc would be exact, but slows the run past a minute here)."""
    chain, creator, node = FakeChain(), Identity.generate(), Identity.generate()
    per_kind = REQUESTS // 3 + 1
    started = [chain.add(creator, node, TaskState.STARTED, seed=i) for i in range(per_kind + WARM_UP)]
    queued = [chain.add(creator, None, TaskState.QUEUED, seed=10**6 + i) for i in range(per_kind + WARM_UP)]
    unknown = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(per_kind + WARM_UP)]
    mixed = [kind[i] for i in range(per_kind + WARM_UP) for kind in (started, queued, unknown)]
    warm_up, targets = mixed[:WARM_UP], mixed[WARM_UP : WARM_UP + REQUESTS]
    window_s = 2  # accepted signatures are kept this long (the replay window), then forgotten
    app = relay_app(chain, tmp_path, auth_window_s=window_s)
    statuses: dict[int, int] = {}
    async with serving(app) as port:
        await long_poll_all(port, node, warm_up, statuses)  # connections, caches, interned strings
        await asyncio.sleep(window_s + 1)
        gc.collect()
        blocks_before, rss_before = sys.getallocatedblocks(), psutil.Process().memory_info().rss
        began = time.monotonic()
        await long_poll_all(port, node, targets, statuses)
        took = time.monotonic() - began
        await asyncio.sleep(window_s + 1)  # the replay window passes; housekeeping forgets
        gc.collect()
        blocks_after, rss_after = sys.getallocatedblocks(), psutil.Process().memory_info().rss
        waiting = len(app.state.relay.arrivals)
    grown = blocks_after - blocks_before
    print(f"\n{REQUESTS} long-polls in {took:.1f}s; allocated blocks {blocks_before} -> {blocks_after} "
          f"({grown:+d}); RSS {rss_before >> 10} -> {rss_after >> 10} KiB; statuses {statuses}; "
          f"waiters left {waiting}")
    assert sum(statuses.values()) == REQUESTS + WARM_UP and set(statuses) == {400, 403, 404}, statuses
    assert waiting == 0
    # A leak of one small object per request would be 10,000 blocks; a waiter left behind
    # (an Event, its deque and its dict entry) is several.
    assert grown < 2_000, f"{grown} more memory blocks after {REQUESTS} long-polls"


# -- point: replay protection survives a restart --------------------------------------------


async def test_a_captured_call_is_refused_after_the_relay_restarts(tmp_path: Path) -> None:
    chain, creator, node = FakeChain(), Identity.generate(), Identity.generate()
    task = chain.add(creator, node, TaskState.STARTED)
    url = path(task, "params")
    captured = sign_request(node, "GET", url, b"")  # the node's read, as an eavesdropper saw it
    async with serving(relay_app(chain, tmp_path)) as port:
        async with RelayClient(f"http://127.0.0.1:{port}", creator) as relay:
            await relay.upload_params(task, b"sealed parameters")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            first = await http.get(url, headers=captured)
    assert first.content == b"sealed parameters"
    async with serving(relay_app(chain, tmp_path)) as port:  # a new process would do the same
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            replay = await http.get(url, headers=captured)
        async with RelayClient(f"http://127.0.0.1:{port}", node) as relay:
            fresh = await relay.download_params(task)
    assert replay.status_code == 401
    assert replay.json()["error"].startswith("replayed signature")
    assert fresh == b"sealed parameters"
