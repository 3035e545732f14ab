"""The devnets the end-to-end sections run on, and the applications' clients."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

ETHER = 10**18
# Every account the bench touches gets this much, so that no fee drift can stall a run
# (an account that runs dry stalls for 60 s per call).
PLENTY = 10**12 * ETHER


@contextlib.asynccontextmanager
async def devnet(nodes: int, models: list[str], tag: str, **options: Any) -> AsyncIterator[Any]:
    """A ``gridtask.devnet.Devnet`` with every account funded; ``net.bench_ready_s`` is how
    long it took to come up with all nodes joined."""
    from gridtask.devnet import Devnet

    home = Path(tempfile.mkdtemp(prefix=f"gridtask-bench-{tag}-"))
    net = Devnet(nodes=nodes, node_models=models, home=home, **options)
    t = time.perf_counter()
    try:
        await net.start()
        await net.wait_nodes(timeout=300)
        net.bench_ready_s = time.perf_counter() - t  # type: ignore[attr-defined]
        for ident in [net.relay_identity, *net.node_identities]:
            net.chain.fund(ident.address, PLENTY)
        net.chain.fund(address_of_key(net.config.private_key), PLENTY)
        yield net
    finally:
        net.stop()
        shutil.rmtree(home, ignore_errors=True)


def address_of_key(key: str | SecretStr) -> str:
    from gridtask.keys import Identity

    return Identity.from_hex(key).address


def funded_config(net: Any, **update: Any) -> Any:
    """The devnet's config with a fresh funded identity (one application), plus `update`."""
    from gridtask.keys import Identity

    ident = Identity.generate()
    net.chain.fund(ident.address, PLENTY)
    return net.config.model_copy(update={"private_key": SecretStr("0x" + ident.private_key.hex()), **update})


async def app_client(net: Any, *, fund: bool = False, config: Any = None, **client_options: Any) -> Any:
    """An open ``Client``: the devnet's own identity, a freshly funded one (`fund`), or `config`."""
    from gridtask.sdk import Client

    if config is None:
        config = funded_config(net) if fund else net.config
    client = Client(config=config, **client_options)
    await client.open()
    return client


def gas_price_gwei(net: Any) -> float:
    """eth_gasPrice now (a guard against fee offers that feed back into the price)."""
    from gridtask.chain.anvil import rpc_call

    return int(str(rpc_call(net.chain.url, "eth_gasPrice", [])), 16) / 1e9
