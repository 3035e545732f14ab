"""The relay stopped at the worst moment: a result stored, its ``reportResultUploaded`` not
through. The relay reaches the chain through a proxy that holds its transactions, so its
report hangs exactly there; the test then kills it (SIGKILL, or SIGTERM and it must stop
within 5 s), kills the node too (so that no re-delivery can mask what the relay does on its
own), restarts the relay on the same data folder, and the task must end SUCCESS with the
node paid, the creator holding the result and money conserved.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from gridtask.devnet import Devnet
from gridtask.sdk import Client, TaskState, TaskType

from .conftest import assert_all_ended_and_conserved, wait_state
from .relay_kit import STOP_WITHIN_S, relay_data, seconds_to_exit, spawn_relay
from .rpcproxy import RpcProxy

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_relay_stopped_between_storing_and_reporting_reports_after_restart(
    one_echo_net: Devnet, sig: signal.Signals
) -> None:
    net = one_echo_net
    assert net.config is not None and net.chain is not None
    proxy = await RpcProxy(net.chain.url, hold={"eth_sendRawTransaction"}).start()
    try:
        relay = spawn_relay(net, proxy.url)
        await net.wait_relay()
        async with Client(config=net.config) as client:
            handle = await client.submit(TaskType.ECHO, "echo", {"data": "paid anyway"}, stage_timeout=300)
            running = asyncio.create_task(client.result(handle, timeout=240))
            # The node delivers; the relay stores the result and sends its report, which the
            # proxy holds: stored, not reported.
            await asyncio.wait_for(proxy.held_one.wait(), 90)
            assert proxy.held == ["eth_sendRawTransaction"]
            stored = list(relay_data(net).glob("*.result"))
            assert len(stored) == 1 and stored[0].stat().st_size > 0
            net.stop_process("node0", signal.SIGKILL)  # no re-delivery after the restart
            relay.send_signal(sig)
            took = seconds_to_exit(relay)
            if sig == signal.SIGTERM:
                assert took < STOP_WITHIN_S, f"relay took {took:.1f}s to stop on SIGTERM"
            info = await client.task(handle.commitment)
            assert info is not None and info.state == TaskState.VALIDATED  # the report never went out
            assert list(relay_data(net).glob("*.report-pending"))  # and the relay knows it

            net.start_relay()  # straight to the chain this time, same data folder
            await net.wait_relay()
            await wait_state(client, handle.task_id, TaskState.SUCCESS, timeout=30)
            assert await running == {"echo": "paid anyway"}
            assert await client.chain.balance_of(info.node) == handle.fee
            assert not list(relay_data(net).glob("*.report-pending"))
        await assert_all_ended_and_conserved(net)
    finally:
        await proxy.stop()
