"""A tiny causal language model built on the spot, for tests and the local devnet.

Why: the network needs a language model that every node can have without a download,
that loads in a second on a laptop's CPU, and that two nodes build bit for bit the same
(so validation can compare their answers). Its text is gibberish; what matters is that it
is a real Hugging Face model driven through the same code path as a real one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

TINY_LLM = "tiny-llm"
"""The model ID nodes announce for the tiny model."""

MARKER_FILE = "gridtask-tiny-llm.json"
BUILD_VERSION = 1  # bump when the recipe below changes, so old builds are rebuilt

VOCAB_SIZE = 640
HIDDEN_SIZE = 64
INTERMEDIATE_SIZE = 128
NUM_LAYERS = 2
NUM_HEADS = 4
MAX_POSITIONS = 2048
INIT_STD = 0.2  # the default 0.02 makes a model that repeats one token forever

UNK, PAD, BOS, EOS = "<unk>", "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = [UNK, PAD, BOS, EOS]

CORPUS = """\
A decentralized compute network lets anyone rent out a machine and anyone else send it
work. An application creates a task on the chain and pays a fee into escrow. The contract
picks a node that serves the model the task asks for, and the node fetches the encrypted
parameters from the relay, runs them, and submits a score. Some tasks are validated: two
more nodes run the same parameters, and a node whose answer disagrees loses part of its
stake. When the task ends, the node uploads its result, encrypted to the application, and
is paid.

The quick brown fox jumps over the lazy dog. A small model reads a prompt one token at a
time and guesses the next token. With greedy decoding it always takes the most likely
token, so the same weights and the same prompt give the same text on every machine. The
weights of this model are random numbers drawn from a fixed seed, which is why its answers
are words in no particular order.

Once upon a time there was a river that ran past a mill. The miller ground wheat into
flour every morning, and in the evening he counted the sacks and wrote the number in a
book. His daughter learned to read from that book, and later she kept the accounts of the
whole valley. Numbers like 1, 2, 3, 10, 42 and 2024 appeared on every page.

Questions and answers: What is the capital of France? Paris. How many legs has a spider?
Eight. Write a short poem about the sea. The sea is grey, the sea is wide, it keeps its
secrets on the other side. Summarize the text in one sentence. Translate hello into
Spanish: hola. Think step by step, then give the final answer.
"""


def build_tiny_llm(path: Path, *, seed: int = 0) -> Path:
    """Build the tiny model and its tokenizer into ``path`` and return ``path``.

    Idempotent: a directory that already holds a build with the same seed is returned as
    it is. The build goes to a sibling temporary directory first and is renamed into
    place, so several processes may call this at once on the same path.
    """
    path = Path(path)
    if _is_built(path, seed):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _build(tmp, seed)
        try:
            os.rename(tmp, path)
        except OSError:
            if _is_built(path, seed):  # another process finished first
                return path
            shutil.rmtree(path, ignore_errors=True)
            os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _is_built(path: Path, seed: int) -> bool:
    marker = path / MARKER_FILE
    if not (path / "config.json").is_file() or not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return recorded == {"seed": seed, "version": BUILD_VERSION}


def _build(path: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer()
    tokenizer.save_pretrained(path)
    special = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        initializer_range=INIT_STD,
        bos_token_id=special[BOS],
        eos_token_id=special[EOS],
        pad_token_id=special[PAD],
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=special[BOS],
        eos_token_id=special[EOS],
        pad_token_id=special[PAD],
        do_sample=False,
        # Tokens that decode to nothing would make an empty answer; never produce them.
        suppress_tokens=[special[UNK], special[PAD], special[BOS]],
    )
    model.save_pretrained(path)
    (path / MARKER_FILE).write_text(json.dumps({"seed": seed, "version": BUILD_VERSION}))


def _train_tokenizer():  # -> PreTrainedTokenizerFast
    """Train a byte-level BPE on ``CORPUS``: byte level, so no input is ever unknown."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    # Every prompt starts with <s>, so even an empty prompt gives the model something to read.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=UNK, pad_token=PAD, bos_token=BOS, eos_token=EOS
    )
