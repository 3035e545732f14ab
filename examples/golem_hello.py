"""Golem's hello world (yapapi's ``examples/hello-world``) on gridtask, from one command:

    python examples/golem_hello.py

It publishes ``examples/golem_hello_image/`` to the relay as a content-addressed bundle (what
``gridtask bundle publish examples/golem_hello_image`` does), then runs one task: a script of
one command on whichever node the network picks, in that node's sandbox over the bundle, and
prints what the command printed. yapapi's version runs ``date``; a gridtask result must be the
same on every node that runs it (a sampled task runs on three and their results are compared
exactly), so this one prints the image's greeting and the kernel's name instead. It reads the
config file ``gridtask devnet`` writes (or ``GRIDTASK_*``).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterable
from pathlib import Path

from gridtask.sdk.golem import Golem, Task, WorkContext, vm

IMAGE_DIR = Path(__file__).resolve().parent / "golem_hello_image"


async def worker(context: WorkContext, tasks: AsyncIterable[Task]):
    async for task in tasks:
        script = context.new_script()
        future_result = script.run("/bin/sh", "-c", "cat greeting.txt; uname -s")
        yield script
        task.accept_result(result=await future_result)


async def main(image_hash: str | None) -> None:
    async with Golem(budget=1.0, subnet_tag="public") as golem:
        image_hash = image_hash or await golem.publish_image(IMAGE_DIR)
        package = await vm.repo(image_hash=image_hash)
        tasks = [Task(data=None)]
        async for completed in golem.execute_tasks(worker, tasks, payload=package):
            print(completed.result.stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-hash", help="a bundle already published (gridtask bundle publish DIR)")
    asyncio.run(main(parser.parse_args().image_hash))
