"""A synthetic question-answer dataset on gridtask, from one command (Dria's QA pipeline).

    python examples/dria_dataset.py --instructions 100 --out qa.jsonl

Each instruction is a text and a persona; the pipeline asks a question about the text in
the persona's voice (``Question``), then answers it (``Answer``), each step a task on the
network's local models. A progress bar shows each step; the dataset is written as JSON
lines (and shown as a pandas table and a Hugging Face dataset). Interrupt it (Ctrl-C) and
run the same command again: finished rows are kept in the dataset's journal and not run
twice. It reads the config file ``gridtask devnet`` writes (or ``GRIDTASK_*``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from pathlib import Path

from gridtask.sdk.dria import DatasetGenerator, Dria, DriaDataset, Model
from gridtask.sdk.dria.factory import QA

TEXTS = [
    "Tides rise and fall twice a day because the Moon's gravity pulls on the oceans.",
    "A node stakes tokens to join the network and loses part of its stake if it cheats.",
    "Bread rises because yeast turns sugar into carbon dioxide, which the dough traps.",
    "The relay stores encrypted results and cannot read them.",
    "Honeybees share where flowers are by dancing in the hive.",
    "A compiler turns source code into machine code before the program runs.",
    "Rivers carve valleys over thousands of years by carrying away sediment.",
    "Vaccines train the immune system to recognise a germ without causing the disease.",
    "A budget lists expected income and spending for a period of time.",
    "Solar panels turn sunlight into electricity with semiconductor cells.",
]
PERSONAS = ["a curious child", "a sceptical engineer", "a retired teacher", "a busy nurse", "a student of law",
            "a farmer", "a journalist", "a chess player", "a baker", "a sailor"]


def instructions(count: int) -> list[dict[str, str]]:
    """``count`` rows of (text, persona), every pair before any repeats."""
    pairs = itertools.cycle(itertools.product(TEXTS, PERSONAS))
    return [{"context": text, "persona": persona} for text, persona in itertools.islice(pairs, count)]


async def main(args: argparse.Namespace) -> int:
    dataset = DriaDataset(args.name, "questions and answers about short texts", path=args.path)
    generator = DatasetGenerator(dataset, Dria(), batch_size=args.batch_size, retries=args.retries,
                                 timeout=args.timeout)
    started = time.monotonic()
    await generator.generate(instructions(args.instructions), QA, args.model)
    entries = dataset.get_entries()
    print(f"{len(entries)} rows in {time.monotonic() - started:.1f} s, {len(dataset.failed)} failed for good "
          f"(journal: {dataset.journal})")
    for failed in dataset.failed:
        print(f"  row {failed.row} ({failed.singleton}, {failed.attempts} tries): {failed.error}")
    if args.out:
        print(f"wrote {dataset.to_jsonl(args.out)}")
    if entries and not args.no_tables:
        frame = dataset.to_pandas()
        print(frame[["question", "prediction", "model"]].head(3).to_string(max_colwidth=40))
        print(dataset.to_hf_dataset())
    return 0 if not dataset.failed else 1


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instructions", type=int, default=100, help="rows to generate (default 100)")
    parser.add_argument("--name", default="qa-demo", help="dataset name (its journal's directory)")
    parser.add_argument("--path", type=Path, default=None, help="dataset directory (default ~/.gridtask/datasets/NAME)")
    parser.add_argument("--out", type=Path, default=None, help="write the dataset here as JSON lines")
    parser.add_argument("--model", action="append", default=None,
                        help="a model or group (default: local, the devnet's tiny model)")
    parser.add_argument("--batch-size", type=int, default=16, help="tasks in flight at once")
    parser.add_argument("--retries", type=int, default=2, help="tries again per failed row")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per task")
    parser.add_argument("--no-tables", action="store_true", help="skip the pandas and Hugging Face views")
    args = parser.parse_args(argv)
    args.model = args.model or [Model.LOCAL.value]
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
