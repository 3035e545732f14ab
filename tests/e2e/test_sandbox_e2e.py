"""Misbehaving task code through a real node on anvil: each payload is stopped by the node's
sandbox and ends as a task error on chain with its own code, a payload that snoops finds
nothing, and the same node then runs a good task. Real ``gridtask node`` process, real relay,
real contract; the payloads are Golem scripts (``TaskType.SCRIPT``, model ``vm``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gridtask.bundles import pack_dir
from gridtask.devnet import Devnet
from gridtask.exceptions import TaskErrored
from gridtask.keys import Identity
from gridtask.limits import VM_MODEL
from gridtask.node.sandbox import sandbox_available
from gridtask.relay.client import RelayClient
from gridtask.sdk import Client
from gridtask.types import TaskErrorCode, TaskType

from .conftest import assert_conserved, running_devnet

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not sandbox_available(), reason="bubblewrap does not run here")]

PYTHON = "/opt/gridtask/venv/bin/python"


@pytest.fixture
async def vm_node(tmp_path: Path) -> AsyncIterator[Devnet]:
    async with running_devnet(tmp_path, nodes=1, node_models=[VM_MODEL]) as net:
        yield net


def _script(image: str, argv: list[str], **limits: int) -> dict[str, Any]:
    return {"image": image, "commands": [{"op": "run", "cmd": argv[0], "args": argv[1:]}],
            "timeout": limits.pop("timeout", 30), **limits}


async def _run(client: Client, inputs: dict[str, Any]) -> tuple[Any, str]:
    handle = await client.submit(TaskType.SCRIPT, VM_MODEL, inputs)
    try:
        return await client.result(handle, timeout=120), handle.node
    except TaskErrored as exc:
        return exc, handle.node


@pytest.mark.timeout(300)
async def test_each_misbehaving_payload_is_a_task_error_and_the_node_goes_on(vm_node: Devnet, tmp_path: Path) -> None:
    net = vm_node
    assert net.config is not None
    image = tmp_path / "image"
    image.mkdir()
    (image / "hello.txt").write_text("hello from the image\n")
    node_key = net.node_identities[0].private_key.hex()
    relay_port = int(net.config.relay_url.rsplit(":", 1)[1])
    async with RelayClient(net.config.relay_url, Identity.generate()) as relay:
        bundle = await relay.put_bundle(pack_dir(image))

    misbehaving = {
        TaskErrorCode.SANDBOX_PROCESSES: _script(bundle, ["/bin/bash", "-c", ":(){ :|:& };: ; sleep 60"]),
        TaskErrorCode.SANDBOX_TIME: _script(bundle, ["/bin/sh", "-c", "while :; do :; done"], timeout=3),
        TaskErrorCode.SANDBOX_DISK: _script(
            bundle, ["/bin/sh", "-c", "dd if=/dev/zero of=/work/fill bs=1M count=64; exit 0"], disk_mib=8),
        TaskErrorCode.SANDBOX_MEMORY: _script(
            bundle, [PYTHON, "-c", "block = bytearray(600 << 20)"], memory_mib=256),
        TaskErrorCode.SANDBOX_OUTPUT: _script(bundle, ["/usr/bin/yes"]),
    }
    snoop = _script(bundle, ["/bin/sh", "-c", f"""
        env; cat /proc/[0-9]*/environ; ls -la {net.home} /root 2>&1
        {PYTHON} -c "import socket; socket.create_connection(('127.0.0.1', {relay_port}), timeout=3)" \
            2>&1 | tail -1
        cat hello.txt
    """])

    async with Client(config=net.config) as client:
        outcomes = await asyncio.gather(*(_run(client, inputs) for inputs in [*misbehaving.values(), snoop]))
        *stopped, (snooped, snoop_node) = outcomes
        for (code, _), (error, _) in zip(misbehaving.items(), stopped, strict=True):
            assert isinstance(error, TaskErrored), (code.name, error)
            assert error.code == code, (code.name, error)

        # Nothing of the node's: not its key (in its environment), not its files; no network.
        text = snooped["results"][0]["stdout"] + snooped["results"][0]["stderr"]
        assert node_key not in text and node_key.upper() not in text
        assert "GRIDTASK_" not in text
        assert "No such file or directory" in text
        assert "Connection refused" in text, text  # the relay listens on the node's 127.0.0.1, not the sandbox's
        assert snooped["results"][0]["stdout"].rstrip().endswith("hello from the image")  # its own files: there

        # The same node goes on serving.
        good, good_node = await _run(client, _script(bundle, ["/bin/sh", "-c", "echo still serving"]))
        assert good["results"][0] == {"op": "run", "exit_code": 0, "stdout": "still serving\n", "stderr": ""}
        assert good_node == snoop_node == net.node_identities[0].address
    await assert_conserved(net)
