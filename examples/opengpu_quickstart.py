"""OpenGPU's quick start on gridtask: publish a source, publish a task, wait, confirm.

With the devnet running (``make devnet``), in one command:

    .venv/bin/python examples/opengpu_quickstart.py

It publishes ``examples/opengpu_source`` (a ``text2text`` function marked ``@expose``) as a
MANUAL_CONFIRMATION source: its code goes to the relay as a content-addressed bundle and the
source is registered on chain. The devnet's nodes (``--sources all``) load it into their
sandbox and announce it. Then it publishes a task calling ``text2text``, waits for the
responses of two nodes, prints them and confirms the first: the task is FINALIZED.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from web3 import Web3

import gridtask.sdk.opengpu as ogpu

SOURCE_DIR = Path(__file__).parent / "opengpu_source"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", default="Hello!", help="the user message the task sends")
    parser.add_argument("--responses", type=int, default=2, help="how many nodes answer (MANUAL_CONFIRMATION)")
    args = parser.parse_args(argv)

    # 1. Configure the chain (the devnet's config file says where it is).
    ogpu.client.ChainConfig.set_chain(ogpu.client.ChainId.DEVNET)

    # 2. Publish the source: its @expose functions, their input schemas, its terms.
    source = ogpu.client.publish_source(ogpu.client.SourceInfo(
        name="hello-chat",
        description="answers the last user message",
        logoUrl="https://example.com/logo.png",
        imageEnvs=ogpu.client.ImageEnvironments(cpu=str(SOURCE_DIR)),
        minPayment=Web3.to_wei(0.001, "ether"),
        minAvailableLockup=0,
        maxExpiryDuration=3600,
        deliveryMethod=ogpu.client.DeliveryMethod.MANUAL_CONFIRMATION,
    ))
    print(f"source published: {source.address} ({', '.join(source.get_metadata()['functions'])})")
    print(f"served by {source.wait_until_served(timeout=120)} node(s)")

    # 3. Publish a task calling text2text (checked against its input model before paying).
    task = ogpu.client.publish_task(ogpu.client.TaskInfo(
        source=source.address,
        config=ogpu.client.TaskInput(function_name="text2text",
                                     data={"messages": [{"role": "user", "content": args.prompt}]}),
        expiryTime=int(time.time()) + 300,
        payment=Web3.to_wei(0.001, "ether"),
        responses=args.responses,
    ))
    print(f"task published: {task.address}")

    # 4. Wait for the responses, then confirm one.
    status = task.wait(timeout=360)
    responses = task.get_responses()
    if not responses:
        print(f"task ended {status.name} without a response: {task.get_error()}", file=sys.stderr)
        return 1
    for response in responses:
        print(f"response {response.address[:12]}... from {response.provider}: {response.fetch_data()}")
    responses[0].confirm()
    confirmed = task.get_confirmed_response()
    assert confirmed is not None
    print(f"confirmed {confirmed.address[:12]}...: task {task.get_status().name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
