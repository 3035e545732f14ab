"""The relay app, through the real RelayClient and raw signed calls.

Every guard has a test in which a dishonest party tries to get past it and fails, and
every such test runs twice: on the in-memory ``FakeChain`` and on the real contract
(``ContractChain``: the committed bytecode in titanoboa). Tests that need a fault the
contract cannot produce (a failing report, an unreachable chain) take ``fake_chain``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from gridtask.crypto import seal, unseal
from gridtask.exceptions import (
    ChainError,
    NotReady,
    RelayError,
    RelayUnavailable,
    TransactionReverted,
)
from gridtask.keys import Identity
from gridtask.relay.app import create_app
from gridtask.relay.auth import sign_request
from gridtask.relay.client import RelayClient
from gridtask.relay.server import RelayServer
from gridtask.relay.storage import FileStore
from gridtask.types import TaskState

from .chains import RESULT, ContractChain, FakeChain

BASE_URL = "http://relay"
Chain = FakeChain | ContractChain


@pytest.fixture(params=["fake", "contract"])
def chain(request: pytest.FixtureRequest) -> Chain:
    return FakeChain() if request.param == "fake" else ContractChain()


ONLY_FAKE = pytest.mark.parametrize("chain", ["fake"], indirect=True)


@pytest.fixture
def app(chain: Chain, tmp_path: Path) -> Starlette:
    return create_app(chain=chain, store=FileStore(tmp_path), max_params_bytes=1024)


@pytest.fixture
def creator() -> Identity:
    return Identity.generate()


@pytest.fixture
def node() -> Identity:
    return Identity.generate()


def client_for(app: Starlette, identity: Identity) -> RelayClient:
    return RelayClient(BASE_URL, identity, transport=httpx.ASGITransport(app=app))


def raw(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


def path(commitment: bytes, what: str) -> str:
    return f"/v1/tasks/0x{commitment.hex()}/{what}"


async def test_health_is_ok_and_unsigned(app: Starlette, creator: Identity) -> None:
    async with raw(app) as http:
        response = await http.get("/v1/health")
    assert response.json() == {"ok": True}
    async with client_for(app, creator) as relay:
        assert await relay.health()


# -- parameters ---------------------------------------------------------------------------


async def test_creator_uploads_and_only_the_node_decrypts(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    async with client_for(app, creator) as app_side, client_for(app, node) as node_side:
        await app_side.upload_params(commitment, seal(b"params", node.encryption_public_key))
        data = await node_side.download_params(commitment)
    assert unseal(data, node.encryption_private_key) == b"params"


async def test_read_before_upload_is_task_not_ready(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    async with client_for(app, node) as relay:
        with pytest.raises(NotReady, match="task not ready") as info:
            await relay.download_params(commitment)
        # Polling again at once is not mistaken for a replay.
        with pytest.raises(NotReady):
            await relay.download_params(commitment)
    assert info.value.status == 400


async def test_another_node_cannot_read_parameters(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    async with client_for(app, creator) as app_side, client_for(app, Identity.generate()) as spy:
        await app_side.upload_params(commitment, b"ciphertext")
        with pytest.raises(RelayError, match="only the task's node") as info:
            await spy.download_params(commitment)
    assert info.value.status == 403


async def test_creator_cannot_read_its_own_parameters_back_as_the_node(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    async with client_for(app, creator) as relay:
        await relay.upload_params(commitment, b"ciphertext")
        with pytest.raises(RelayError) as info:
            await relay.download_params(commitment)
    assert info.value.status == 403


async def test_non_creator_cannot_upload_parameters(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    async with client_for(app, node) as relay:
        with pytest.raises(RelayError) as info:
            await relay.upload_params(commitment, b"forged parameters")
    assert info.value.status == 403
    assert info.value.detail == "only the task's creator may upload parameters"


async def test_upload_before_start_is_refused_as_not_started(
    app: Starlette, chain: Chain, creator: Identity
) -> None:
    commitment = chain.add(creator, None, TaskState.QUEUED)
    async with client_for(app, creator) as relay:
        with pytest.raises(NotReady, match="task not started") as info:
            await relay.upload_params(commitment, b"ciphertext")
    assert info.value.status == 409


@pytest.mark.parametrize("state", [TaskState.SUCCESS, TaskState.ABORTED, TaskState.ERRORED])
async def test_upload_after_the_task_ended_is_refused(
    app: Starlette, chain: Chain, creator: Identity, node: Identity, state: TaskState
) -> None:
    commitment = chain.add(creator, node, state)
    async with client_for(app, creator) as relay:
        with pytest.raises(RelayError, match="task ended") as info:
            await relay.upload_params(commitment, b"ciphertext")
    assert info.value.status == 409


async def test_parameters_cannot_be_replaced_once_uploaded(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    async with client_for(app, creator) as relay, client_for(app, node) as node_side:
        await relay.upload_params(commitment, b"first")
        with pytest.raises(RelayError, match="parameters already uploaded") as info:
            await relay.upload_params(commitment, b"second")
        assert await node_side.download_params(commitment) == b"first"
    assert info.value.status == 409


async def test_oversized_parameters_are_refused(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    async with client_for(app, creator) as relay:
        with pytest.raises(RelayError, match="too large") as info:
            await relay.upload_params(commitment, b"x" * 1025)
    assert info.value.status == 413


async def test_unknown_task_is_404(app: Starlette, creator: Identity) -> None:
    async with client_for(app, creator) as relay:
        with pytest.raises(RelayError, match="unknown task") as info:
            await relay.upload_params(b"\x01" * 32, b"ciphertext")
    assert info.value.status == 404


@pytest.mark.parametrize("bad_id", ["0x1234", "ab" * 32, "0x" + "zz" * 32, "0x" + "ab" * 33])
async def test_malformed_task_id_is_400(app: Starlette, creator: Identity, bad_id: str) -> None:
    url = f"/v1/tasks/{bad_id}/params"
    async with raw(app) as http:
        response = await http.get(url, headers=sign_request(creator, "GET", url, b""))
    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed task ID")


# -- signatures ---------------------------------------------------------------------------


async def test_unsigned_call_is_401(app: Starlette, chain: Chain, creator: Identity) -> None:
    commitment = chain.add(creator, None, TaskState.STARTED)
    async with raw(app) as http:
        response = await http.put(path(commitment, "params"), content=b"x")
    assert response.status_code == 401
    assert response.json()["error"].startswith("missing signature headers")


async def test_stale_signature_is_401(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    url = path(commitment, "params")
    headers = sign_request(creator, "PUT", url, b"x", timestamp=int((time.time() - 3600) * 1000))
    async with raw(app) as http:
        response = await http.put(url, content=b"x", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"].startswith("stale signature")


async def test_replayed_signature_is_401(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    url = path(commitment, "params")
    headers = sign_request(node, "GET", url, b"")
    async with client_for(app, creator) as relay:
        await relay.upload_params(commitment, b"ciphertext")
    async with raw(app) as http:
        first = await http.get(url, headers=headers)
        replay = await http.get(url, headers=headers)
    assert first.content == b"ciphertext"
    assert replay.status_code == 401
    assert replay.json()["error"].startswith("replayed signature")


async def test_signature_for_another_body_is_401(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    url = path(commitment, "params")
    headers = sign_request(creator, "PUT", url, b"what the creator signed")
    async with raw(app) as http:
        response = await http.put(url, content=b"what an attacker sends", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"].startswith("bad signature")


# -- results ------------------------------------------------------------------------------


async def test_node_delivers_result_and_creator_downloads_it(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    async with client_for(app, node) as node_side, client_for(app, creator) as app_side:
        await node_side.upload_result(commitment, RESULT)
        assert chain.reported == [commitment]
        assert await app_side.download_result(commitment) == RESULT


async def test_wrong_result_is_refused_by_hash(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    async with client_for(app, node) as relay:
        with pytest.raises(RelayError) as info:
            await relay.upload_result(commitment, b"a cheaper, wrong result")
    assert info.value.status == 400
    assert info.value.detail == "result does not match the committed hash"
    assert chain.reported == []


async def test_result_for_another_tasks_commitment_is_refused(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    chain.add(creator, node, TaskState.SUCCESS, result=RESULT, seed=1)  # RESULT: right, but for that task
    mine = chain.add(creator, node, TaskState.VALIDATED, result=b"other result", seed=2)
    theirs = chain.add(creator, Identity.generate(), TaskState.VALIDATED, seed=3)
    async with client_for(app, node) as relay:
        with pytest.raises(RelayError, match="does not match the committed hash"):
            await relay.upload_result(mine, RESULT)
        with pytest.raises(RelayError, match="only the task's node") as info:
            await relay.upload_result(theirs, RESULT)
    assert info.value.status == 403
    assert chain.reported == []


async def test_another_node_cannot_upload_the_result(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    async with client_for(app, Identity.generate()) as relay:
        with pytest.raises(RelayError) as info:
            await relay.upload_result(commitment, RESULT)
    assert info.value.status == 403


@pytest.mark.parametrize("state", [TaskState.STARTED, TaskState.SCORE_READY, TaskState.ABORTED])
async def test_result_before_validation_is_refused(
    app: Starlette, chain: Chain, creator: Identity, node: Identity, state: TaskState
) -> None:
    commitment = chain.add(creator, node, state)
    async with client_for(app, node) as relay:
        with pytest.raises(RelayError, match="task not validated") as info:
            await relay.upload_result(commitment, RESULT)
    assert info.value.status == 409


async def test_result_cannot_be_delivered_twice(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    async with client_for(app, node) as relay:
        await relay.upload_result(commitment, RESULT)
        with pytest.raises(RelayError, match="result already delivered") as info:
            await relay.upload_result(commitment, RESULT)
    assert info.value.status == 409
    assert chain.reported == [commitment]


async def test_non_creator_cannot_read_results(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    async with client_for(app, node) as relay:
        await relay.upload_result(commitment, RESULT)
        with pytest.raises(RelayError, match="only the task's creator") as info:
            await relay.download_result(commitment)
    assert info.value.status == 403


async def test_read_results_before_upload_is_not_ready(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    async with client_for(app, creator) as relay:
        with pytest.raises(NotReady, match="task results not uploaded") as info:
            await relay.download_result(commitment)
    assert info.value.status == 400


@ONLY_FAKE  # a fault the real contract cannot produce
async def test_failed_report_is_502_keeps_the_blob_and_a_retry_reports_again(
    app: Starlette, chain: FakeChain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    chain.report_error = TransactionReverted("tasks: out of gas", function="reportResultUploaded")
    async with client_for(app, node) as relay, client_for(app, creator) as app_side:
        with pytest.raises(RelayError, match="tasks: out of gas") as info:
            await relay.upload_result(commitment, RESULT)
        assert info.value.status == 502
        # The creator does not get a result its node has not been paid for.
        with pytest.raises(NotReady):
            await app_side.download_result(commitment)
        chain.report_error = None
        await relay.upload_result(commitment, RESULT)
        assert chain.reported == [commitment]
        assert await app_side.download_result(commitment) == RESULT


@ONLY_FAKE  # a fault the real contract cannot produce
async def test_creator_download_reports_a_stored_but_unreported_result(
    app: Starlette, chain: FakeChain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    chain.report_error = ChainError("timeout")
    async with client_for(app, node) as relay, client_for(app, creator) as app_side:
        with pytest.raises(RelayError):
            await relay.upload_result(commitment, RESULT)
        chain.report_error = None
        assert await app_side.download_result(commitment) == RESULT
    assert chain.reported == [commitment]
    assert chain.tasks[commitment].state == TaskState.SUCCESS


async def test_result_of_an_aborted_task_is_not_served(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.ABORTED)
    async with client_for(app, creator) as relay:
        with pytest.raises(RelayError, match="task ended without a result"):
            await relay.download_result(commitment)


# -- the chain, the store, the transport --------------------------------------------------


@ONLY_FAKE  # a fault the real contract cannot produce
async def test_unreachable_chain_is_503(
    app: Starlette, chain: FakeChain, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    chain.unreachable = True
    async with client_for(app, creator) as relay:
        with pytest.raises(RelayError, match="chain unreachable: connection refused") as info:
            await relay.upload_params(commitment, b"ciphertext")
    assert info.value.status == 503


async def test_uploads_survive_a_relay_restart(
    chain: Chain, tmp_path: Path, creator: Identity, node: Identity
) -> None:
    commitment = chain.add(creator, node, TaskState.STARTED)
    before = create_app(chain=chain, store=FileStore(tmp_path))
    async with client_for(before, creator) as relay:
        await relay.upload_params(commitment, b"ciphertext")
    after = create_app(chain=chain, store=FileStore(tmp_path))
    async with client_for(after, node) as relay:
        assert await relay.download_params(commitment) == b"ciphertext"


async def test_unknown_route_is_a_json_error(app: Starlette) -> None:
    async with raw(app) as http:
        response = await http.get("/v2/nothing")
    assert response.status_code == 404
    assert "error" in response.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_relay_is_relay_unavailable(creator: Identity) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with RelayClient(url, creator, timeout=2) as relay:
        assert not await relay.health()
        with pytest.raises(RelayUnavailable, match="check the relay URL"):
            await relay.download_result(b"\x01" * 32)


async def test_relay_server_serves_over_http_and_shuts_down(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    port = free_port()
    server = RelayServer(app, port=port, log_level="warning")
    serving = asyncio.create_task(server.serve())
    for _ in range(100):
        if server.started:
            break
        await asyncio.sleep(0.05)
    commitment = chain.add(creator, node, TaskState.STARTED)
    try:
        async with RelayClient(f"http://127.0.0.1:{port}", creator) as relay:
            assert await relay.health()
            await relay.upload_params(commitment, b"ciphertext")
    finally:
        server.shutdown()
        await asyncio.wait_for(serving, timeout=10)



async def test_long_poll_for_parameters_returns_as_soon_as_they_are_uploaded(
    app: Starlette, chain: Chain, creator: Identity, node: Identity
) -> None:
    """A node that asks before the upload is answered the moment the creator uploads."""
    commitment = chain.add(creator, node, TaskState.STARTED)
    other_node = Identity.generate()
    other = chain.add(creator, other_node, TaskState.STARTED, seed=2)
    async with client_for(app, node) as as_node, client_for(app, creator) as as_creator, \
            client_for(app, other_node) as as_other:
        started = time.monotonic()
        waiting = asyncio.create_task(as_node.download_params(commitment, wait=5))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await as_creator.upload_params(commitment, b"sealed")
        assert await waiting == b"sealed"
        assert time.monotonic() - started < 2
        with pytest.raises(NotReady):  # no upload within the wait: "task not ready"
            await as_other.download_params(other, wait=0.2)



class _SlowFirstMiss(FileStore):
    """A store whose first look finds nothing and answers only after ``looked`` is set and
    the upload has landed: the upload falls between the node's look and its wait."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.looked = asyncio.Event()
        self.landed = asyncio.Event()

    async def get(self, key: str) -> bytes | None:
        if key.endswith(".params") and not self.looked.is_set():
            self.looked.set()
            await self.landed.wait()
            return None  # what the look saw, a moment before the upload
        return await super().get(key)


@ONLY_FAKE
async def test_an_upload_between_the_nodes_look_and_its_wait_answers_the_long_poll(
    chain: Chain, creator: Identity, node: Identity, tmp_path: Path
) -> None:
    """The long poll registers before it looks, so an upload that lands in between still
    wakes it at once instead of after the whole wait."""
    store = _SlowFirstMiss(tmp_path)
    app = create_app(chain=chain, store=store, max_params_bytes=1024)
    commitment = chain.add(creator, node, TaskState.STARTED)
    async with client_for(app, node) as as_node, client_for(app, creator) as as_creator:
        started = time.monotonic()
        waiting = asyncio.create_task(as_node.download_params(commitment, wait=5))
        await asyncio.wait_for(store.looked.wait(), 5)
        await as_creator.upload_params(commitment, b"sealed")
        store.landed.set()
        assert await waiting == b"sealed"
        assert time.monotonic() - started < 2

# -- deliveries: stored, then reported, recoverable from disk ------------------------------


async def wait_until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@ONLY_FAKE
async def test_a_failed_report_is_retried_in_the_background_until_the_chain_takes_it(
    app: Starlette, chain: FakeChain, creator: Identity, node: Identity, tmp_path: Path
) -> None:
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    chain.report_error = ChainError("connection refused")
    async with app.router.lifespan_context(app), client_for(app, node) as relay:
        with pytest.raises(RelayError, match="could not report delivery"):
            await relay.upload_result(commitment, RESULT)
        assert (tmp_path / f"0x{commitment.hex()}.report-pending").exists()
        await asyncio.sleep(0.3)
        chain.report_error = None  # the chain comes back; nobody calls the relay again
        await wait_until(lambda: chain.reported == [commitment])
        await wait_until(lambda: not (tmp_path / f"0x{commitment.hex()}.report-pending").exists())
    assert chain.tasks[commitment].state == TaskState.SUCCESS


@ONLY_FAKE
async def test_a_result_stored_but_not_reported_is_reported_at_start_up(
    chain: FakeChain, creator: Identity, node: Identity, tmp_path: Path
) -> None:
    """As left by a relay killed between storing a result and reporting it."""
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    hex_id = f"0x{commitment.hex()}"
    store = FileStore(tmp_path)
    await store.put(f"{hex_id}.report-pending", b"")
    await store.put(f"{hex_id}.result", RESULT)
    # ... and one killed between the marker and the blob: nothing was delivered.
    await store.put("0x" + "ab" * 32 + ".report-pending", b"")
    app = create_app(chain=chain, store=store)
    async with app.router.lifespan_context(app):
        await wait_until(lambda: chain.reported == [commitment])
    assert await store.keys(".report-pending") == []
    assert await store.get(f"{hex_id}.result") == RESULT


@ONLY_FAKE
async def test_a_pending_report_of_a_task_that_ended_otherwise_is_dropped(
    chain: FakeChain, creator: Identity, node: Identity, tmp_path: Path
) -> None:
    commitment = chain.add(creator, node, TaskState.ABORTED)  # the creator aborted after the deadline
    store = FileStore(tmp_path)
    await store.put(f"0x{commitment.hex()}.report-pending", b"")
    await store.put(f"0x{commitment.hex()}.result", RESULT)
    app = create_app(chain=chain, store=store)
    async with app.router.lifespan_context(app):
        await wait_until(lambda: not (tmp_path / f"0x{commitment.hex()}.report-pending").exists())
    assert chain.reported == []
    assert not (tmp_path / f"0x{commitment.hex()}.result").exists()  # refunded: never to be read


@ONLY_FAKE
async def test_shutdown_ends_a_pending_report_retry_at_once_and_keeps_it_on_disk(
    app: Starlette, chain: FakeChain, creator: Identity, node: Identity, tmp_path: Path
) -> None:
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    chain.report_error = ChainError("connection refused")  # the chain stays down
    async with client_for(app, node) as relay:
        async with app.router.lifespan_context(app):
            with pytest.raises(RelayError, match="could not report delivery"):
                await relay.upload_result(commitment, RESULT)
            await asyncio.sleep(1)  # retrying, backing off
            assert app.state.relay.deliveries.pending == [f"0x{commitment.hex()}"]
            stopping = time.monotonic()
        took = time.monotonic() - stopping
    assert took < 0.5, f"lifespan shutdown took {took:.2f}s"
    assert app.state.relay.deliveries.pending == []  # no retry outlives the app
    assert (tmp_path / f"0x{commitment.hex()}.report-pending").exists()  # for the next start


@ONLY_FAKE
async def test_a_read_that_races_the_nodes_upload_does_not_report_twice(
    app: Starlette, chain: FakeChain, creator: Identity, node: Identity, tmp_path: Path
) -> None:
    """The creator's read finds the result stored while the node's upload is still reporting
    it: it waits for that report and sends none of its own."""
    commitment = chain.add(creator, node, TaskState.VALIDATED)
    gate = asyncio.Event()
    report = chain.report_result_uploaded

    async def slow_report(key: bytes) -> None:
        await gate.wait()
        await report(key)

    chain.report_result_uploaded = slow_report  # type: ignore[method-assign]
    async with app.router.lifespan_context(app), client_for(app, node) as as_node, \
            client_for(app, creator) as as_creator:
        upload = asyncio.create_task(as_node.upload_result(commitment, RESULT))
        await wait_until(lambda: (tmp_path / f"0x{commitment.hex()}.result").exists())
        reading = asyncio.create_task(as_creator.download_result(commitment))
        await asyncio.sleep(0.2)
        gate.set()
        await upload
        assert await reading == RESULT
    assert chain.reported == [commitment]
