"""The contract's revert reasons: TaskNetwork reverts with a short code ("E213"), this table
says what it means ("tasks: task not started").

Readable reasons cost about 60 bytes of contract code each, and the contract must stay under
EIP-170's 24,576 bytes: so the contract carries numbers (``errors.fail(213)``, a comment beside
each call says its text) and this module is the one place that expands them. ``ChainClient``
expands every revert it raises (``TransactionReverted.reason`` is the readable text); tests
that call the contract directly map readable text to the code with ``code_of``.
tests/chain/test_reasons.py checks this table and the contract sources name the same codes.
The hundreds say the area: 1 nodes, 2 tasks, 3 groups, 4 disputes, 5 funds, 6 model lists.
"""

from __future__ import annotations

import re

#: Revert code -> the readable reason (the contract reverts with Error("E<code>")).
REASONS: dict[int, str] = {
    101: "nodes: already joined",
    102: "nodes: stake below minimum",
    103: "nodes: vram out of range",
    104: "nodes: public key required",
    105: "nodes: node is already paused",
    106: "nodes: node is leaving",
    107: "nodes: pause already requested",
    108: "nodes: node is not paused",
    109: "nodes: stake below minimum: top up first",
    110: "nodes: zero top-up",
    111: "nodes: node is already leaving",
    112: "nodes: node is not idle",
    113: "nodes: not a node",
    114: "nodes: a node serves at most 8 models",
    115: "nodes: model already served",
    116: "nodes: model not served",
    117: "nodes: a node must keep at least one model",
    201: "tasks: zero fee",
    202: "tasks: fee too large",
    203: "tasks: empty commitment",
    204: "tasks: nonce already used",
    205: "tasks: commitment exists",
    206: "tasks: task size must be at least 1",
    207: "tasks: task size too large",
    208: "tasks: timeout out of bounds",
    209: "tasks: task type out of range",
    210: "tasks: fee below the minimum for its size",
    211: "tasks: task not waiting to start",
    212: "tasks: start in a later block than creation",
    213: "tasks: start window passed; cancel the task",
    214: "tasks: only the creator may exclude nodes",
    215: "tasks: only the creator may start it this early",
    216: "tasks: requirements differ from creation",
    217: "tasks: task not started",
    218: "tasks: only the creator may validate",
    219: "tasks: score not ready",
    220: "tasks: task was sampled: validate it as a group of three",
    221: "tasks: only the relay may report delivery",
    222: "tasks: task not validated",
    223: "tasks: validation window not passed",
    224: "tasks: only the creator may dispute",
    225: "tasks: task already ended",
    226: "tasks: scored: validate it, or its node claims it later",
    227: "tasks: scored: wait for deadline",
    228: "tasks: only the creator or the task's node may abort",
    229: "tasks: deadline not passed",
    230: "tasks: only the creator may cancel",
    231: "tasks: task not queued",
    232: "tasks: unknown task",
    233: "tasks: only the task's node may do this",
    234: "tasks: task ID does not open the commitment",
    301: "group: a member was already validated in a group",
    302: "group: a member is still running; abort it after its deadline",
    303: "group: members differ in task type",
    304: "group: nonces must differ",
    305: "group: two tasks ran on the same node",
    401: "dispute: task not delivered",
    402: "dispute: challenge window passed",
    403: "dispute: not the delivered ciphertext",
    404: "dispute: the result matches the score",
    501: "funds: empty recipient",
    502: "funds: nothing to withdraw",
    601: "models: empty model list",
    602: "models: too many models",
    603: "models: empty model ID",
    604: "models: duplicate model",
    605: "models: reserved model ID",
}

_BY_TEXT = {text: code for code, text in REASONS.items()}
_CODE = re.compile(r"\bE(\d{3})\b")


def expand(text: str) -> str:
    """``text`` with every contract code in it ("E213") replaced by its readable reason; an
    unknown code, or text without one, stays as it is."""
    return _CODE.sub(lambda m: REASONS.get(int(m.group(1)), m.group(0)), text)


def code_of(reason: str) -> str:
    """The revert string the contract uses for a readable ``reason`` ("tasks: task not started"
    -> "E217"); a reason without a code (the constructor's, an event's) stays as it is."""
    code = _BY_TEXT.get(reason)
    return reason if code is None else f"E{code}"
