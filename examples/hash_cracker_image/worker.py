"""The hash cracker's worker, run on a node in the sandbox (the Golem tutorial's worker.py).

Reads the target hash and its chunk of words from ``in/`` (uploaded by the requestor), hashes
each word with SHA-256 and writes the one that matches (or null) to ``out/result.json``."""

import hashlib
import json
from pathlib import Path

ENCODING = "utf-8"
HASH_PATH = Path("in/hash.json")
WORDS_PATH = Path("in/words.json")
RESULT_PATH = Path("out/result.json")

target = json.loads(HASH_PATH.read_text())
words = json.loads(WORDS_PATH.read_text())
found = None
for word in words:
    if hashlib.sha256(word.strip().encode(ENCODING)).hexdigest() == target:
        found = word.strip()
        break
RESULT_PATH.parent.mkdir(parents=True, exist_ok=True)
RESULT_PATH.write_text(json.dumps(found))
