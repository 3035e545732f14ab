"""``gridtask relay`` stops within 5 s of SIGTERM, whatever it is waiting on, and a second
signal ends it at once; an upload cut short by the stop is on disk whole or not at all.

Every test signals the real relay process of a devnet (one echo node), checks how long it
took to exit and what its data folder holds, then restarts it and lets the SDK finish the
task: every task must end SUCCESS, with money conserved.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from gridtask.crypto import seal
from gridtask.devnet import Devnet
from gridtask.exceptions import NotReady
from gridtask.relay.auth import sign_request
from gridtask.relay.client import RelayClient
from gridtask.sdk import Client, TaskHandle, TaskState, TaskType

from .conftest import assert_all_ended_and_conserved, wait_state
from .relay_kit import STOP_WITHIN_S, leftovers, relay_data, seconds_to_exit, spawn_relay
from .rpcproxy import RpcProxy

pytestmark = pytest.mark.e2e


@pytest.fixture
def net(one_echo_net: Devnet) -> Devnet:
    """One echo node (conftest's ``client`` connects to it)."""
    return one_echo_net


async def started_task(client: Client, data: str) -> TaskHandle:
    """A task on its node, whose parameters nobody has uploaded yet."""
    handle = await client.submit(TaskType.ECHO, "echo", {"data": data}, stage_timeout=300)
    await wait_state(client, handle.task_id, TaskState.STARTED)
    return handle


async def finish_after_restart(net: Devnet, client: Client, handle: TaskHandle, data: str) -> None:
    net.start_relay()
    await net.wait_relay()
    assert await client.result(handle, timeout=120) == {"echo": data}
    await assert_all_ended_and_conserved(net)


async def test_sigterm_during_a_long_poll_stops_within_5s(net: Devnet, client: Client) -> None:
    handle = await started_task(client, "long poll")
    assert net.config is not None
    async with RelayClient(net.config.relay_url, net.node_identities[0]) as as_node:
        polling = asyncio.create_task(as_node.download_params(handle.commitment, wait=10))
        await asyncio.sleep(1)
        assert not polling.done()
        relay = net.processes["relay"]
        relay.send_signal(signal.SIGTERM)
        took = await asyncio.to_thread(seconds_to_exit, relay)
        with pytest.raises(NotReady):  # answered "not ready" at once, not cut off
            await asyncio.wait_for(polling, 1)
    assert took < STOP_WITHIN_S, f"relay took {took:.1f}s to stop"
    assert relay.returncode == 0
    await finish_after_restart(net, client, handle, "long poll")


async def raw_upload_head(net: Devnet, client: Client, handle: TaskHandle, body: bytes) -> tuple[
    asyncio.StreamReader, asyncio.StreamWriter
]:
    """The creator's parameter upload, signed for all of ``body``, with only its headers sent."""
    assert net.config is not None
    url = f"/v1/tasks/0x{handle.commitment.hex()}/params"
    headers = {**sign_request(client.identity, "PUT", url, body), "Content-Length": str(len(body))}
    port = int(net.config.relay_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"PUT {url} HTTP/1.1", "Host: relay", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    await writer.drain()
    return reader, writer


async def sealed_params(client: Client, handle: TaskHandle) -> bytes:
    """The parameters exactly as the SDK would upload them (sealed to the task's node)."""
    info = await client.task(handle.commitment)
    assert info is not None
    node = await client.chain.get_node(info.node)
    assert node is not None
    return seal(handle.params, node.public_key)


@pytest.mark.parametrize("rest_sent", [False, True], ids=["body-held-back", "body-finished-in-grace"])
async def test_sigterm_during_an_upload_stops_within_5s_and_the_blob_is_whole_or_absent(
    net: Devnet, client: Client, rest_sent: bool
) -> None:
    handle = await started_task(client, "uploading")
    body = await sealed_params(client, handle)
    reader, writer = await raw_upload_head(net, client, handle, body)
    writer.write(body[: len(body) // 2])
    await writer.drain()
    await asyncio.sleep(0.5)
    relay = net.processes["relay"]
    relay.send_signal(signal.SIGTERM)
    if rest_sent:  # the client finishes within the grace period: the upload completes
        await asyncio.sleep(0.3)
        writer.write(body[len(body) // 2 :])
        await writer.drain()
    took = await asyncio.to_thread(seconds_to_exit, relay)
    writer.close()
    assert took < STOP_WITHIN_S, f"relay took {took:.1f}s to stop"
    blob = relay_data(net) / f"0x{handle.commitment.hex()}.params"
    if rest_sent:
        assert blob.read_bytes() == body
    else:
        assert not blob.exists()
    assert leftovers(net) == []
    await finish_after_restart(net, client, handle, "uploading")


async def test_a_second_signal_exits_at_once(net: Devnet, client: Client) -> None:
    handle = await started_task(client, "twice")
    body = await sealed_params(client, handle)
    _, writer = await raw_upload_head(net, client, handle, body)  # held back: the relay waits
    await asyncio.sleep(0.5)
    relay = net.processes["relay"]
    relay.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    relay.send_signal(signal.SIGTERM)
    took = await asyncio.to_thread(seconds_to_exit, relay)
    writer.close()
    assert took < 0.5, f"relay took {took:.1f}s to exit on the second signal"
    assert relay.returncode == 128 + signal.SIGTERM
    assert not (relay_data(net) / f"0x{handle.commitment.hex()}.params").exists()
    await finish_after_restart(net, client, handle, "twice")


async def test_sigterm_with_the_chain_down_stops_within_5s(net: Devnet, client: Client) -> None:
    """Every chain request of the relay hangs (its RPC endpoint stopped answering) while a
    node's read waits on one: SIGTERM still ends the relay within 5 s."""
    assert net.config is not None and net.chain is not None
    handle = await started_task(client, "chain down")
    proxy = await RpcProxy(net.chain.url).start()
    try:
        proxy.hold_all()
        relay = spawn_relay(net, proxy.url)
        await net.wait_relay()
        async with RelayClient(net.config.relay_url, net.node_identities[0], timeout=30) as as_node:
            polling = asyncio.create_task(as_node.download_params(handle.commitment, wait=10))
            await asyncio.wait_for(proxy.held_one.wait(), 30)  # the relay is stuck on the chain
            relay.send_signal(signal.SIGTERM)
            took = await asyncio.to_thread(seconds_to_exit, relay)
            polling.cancel()
        assert took < STOP_WITHIN_S, f"relay took {took:.1f}s to stop"
    finally:
        await proxy.stop()
    await finish_after_restart(net, client, handle, "chain down")


async def test_a_captured_call_is_refused_after_the_relay_process_restarts(net: Devnet, client: Client) -> None:
    """Replay protection outlives the process: the relay journals accepted signatures in its
    data folder, so a request captured before a restart is still refused after it."""
    assert net.config is not None
    handle = await started_task(client, "replayed")
    await client.relay.upload_params(handle.commitment, await sealed_params(client, handle))
    url = f"/v1/tasks/0x{handle.commitment.hex()}/params"
    captured = sign_request(net.node_identities[0], "GET", url, b"")
    async with httpx.AsyncClient(base_url=net.config.relay_url) as http:
        assert (await http.get(url, headers=captured)).status_code == 200
        relay = net.processes["relay"]
        relay.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(seconds_to_exit, relay) < STOP_WITHIN_S
        net.start_relay()
        await net.wait_relay()
        replay = await http.get(url, headers=captured)
    assert replay.status_code == 401
    assert replay.json()["error"].startswith("replayed signature")
    assert await client.result(handle, timeout=120) == {"echo": "replayed"}
    await assert_all_ended_and_conserved(net)
