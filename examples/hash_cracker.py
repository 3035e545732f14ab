"""Golem's hash cracker (the task-model tutorial's) on gridtask, from one command:

    python examples/hash_cracker.py

A dictionary (``examples/hash_cracker_words.txt``, 2,000 words) is split into chunks; each
chunk is one task, run as a script on whichever node the network picks (the devnet's three
nodes share them): the requestor uploads the target hash and the chunk's words, runs the
image's ``worker.py`` (``examples/hash_cracker_image/``, published to the relay first as a
content-addressed bundle) in the node's sandbox, and downloads ``out/result.json``: the word
whose SHA-256 is the target, or null. The default target is the hash of a word in the list;
``--hash`` takes another (``python -c "import hashlib; print(hashlib.sha256(b'word').hexdigest())"``).
Exit code 0 when the password was found, 1 when no chunk had it. It reads the config file
``gridtask devnet`` writes (or ``GRIDTASK_*``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from gridtask.sdk.golem import Golem, Task, WorkContext, vm

HERE = Path(__file__).resolve().parent
IMAGE_DIR = HERE / "hash_cracker_image"
WORDS = HERE / "hash_cracker_words.txt"
PASSWORD = "traibro"  # in the dictionary: the default target is its hash


async def worker(context: WorkContext, tasks: AsyncIterable[Task]):
    async for task in tasks:
        found: list[Any] = []
        script = context.new_script()
        script.upload_json(task.data["hash"], "in/hash.json")
        script.upload_json(task.data["words"], "in/words.json")
        script.run("python3", "worker.py")
        script.download_json("out/result.json", keep(found))
        yield script
        task.accept_result(result=found[0])


def keep(into: list[Any]) -> Callable[[Any], Awaitable[None]]:
    """An ``on_download`` that keeps what was downloaded."""

    async def on_download(value: Any) -> None:
        into.append(value)

    return on_download


def data(words_file: Path, target: str, chunks: int) -> Iterator[Task]:
    """One task per chunk of the dictionary."""
    words = [w.strip() for w in words_file.read_text().splitlines() if w.strip()]
    size = -(-len(words) // chunks)
    for start in range(0, len(words), size):
        yield Task(data={"hash": target, "words": words[start:start + size]})


async def main(target: str, words_file: Path, chunks: int, max_workers: int | None) -> str | None:
    async with Golem(budget=1.0, subnet_tag="public") as golem:
        package = await vm.repo(image_hash=await golem.publish_image(IMAGE_DIR))
        password = None
        async for task in golem.execute_tasks(worker, data(words_file, target, chunks), payload=package,
                                              max_workers=max_workers):
            print(f"chunk {task.id}: {len(task.data['words'])} words, "
                  f"{'found ' + repr(task.result) if task.result else 'not there'}")
            password = password or task.result
        print(f"Password found: {password}" if password else "No password found")
        print(f"Spent {golem.budget.spent / 10**18:g} ETH on {chunks} chunks")
        return password


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hash", default=hashlib.sha256(PASSWORD.encode()).hexdigest(), help="SHA-256 to crack")
    parser.add_argument("--words", type=Path, default=WORDS, help="the dictionary, one word per line")
    parser.add_argument("--chunks", type=int, default=6, help="how many tasks the dictionary is split into")
    parser.add_argument("--max-workers", type=int, default=None)
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(main(args.hash, args.words, args.chunks, args.max_workers)) else 1)
