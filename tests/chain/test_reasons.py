"""The contract reverts with short codes (``Error("E217")``, to keep its code under EIP-170's
limit); gridtask.chain.reasons is the one table that says what they mean. These check the
table and the sources name the same codes with the same text, and that what a caller sees
(``TransactionReverted.reason``) is the readable text."""

from __future__ import annotations

import re

import boa
import chain_kit as kit

from gridtask.chain import artifact, reasons
from gridtask.exceptions import TransactionReverted

CALL = re.compile(r"(?:errors\.fail\(|_require_state\([^)]*, |_head_of_creator\(key, )(\d{3})\)(?:\s*# (.*))?")


def _calls() -> list[tuple[str, int, str]]:
    out = []
    for source in sorted(artifact.CONTRACTS_DIR.glob("*.vy")):
        for line in source.read_text().splitlines():
            for m in CALL.finditer(line):
                out.append((source.name, int(m.group(1)), (m.group(2) or "").strip()))
    return out


def test_every_code_in_the_sources_has_its_text_and_every_text_is_used() -> None:
    calls = _calls()
    assert len(calls) >= 60
    for name, code, comment in calls:
        assert code in reasons.REASONS, f"{name}: errors.fail({code}) has no entry in gridtask/chain/reasons.py"
        assert comment == reasons.REASONS[code], f"{name}: the comment beside code {code} says {comment!r}"
    assert {code for _, code, _ in calls} == set(reasons.REASONS), "a code in the table that no check uses"


def test_expand_and_code_of_are_inverse_and_leave_other_text_alone() -> None:
    for code, text in reasons.REASONS.items():
        assert reasons.code_of(text) == f"E{code}"
        assert reasons.expand(f"E{code}") == text
    assert reasons.expand("execution reverted: E217") == "execution reverted: tasks: task not started"
    assert reasons.expand("E999 and E2170 and config: bad") == "E999 and E2170 and config: bad"
    assert reasons.code_of("config: relay account required") == "config: relay account required"
    assert TransactionReverted("E201", function="createTask").reason == "tasks: zero fee"


def test_the_contract_reverts_with_the_code(net, creator) -> None:
    """The real bytes: a zero-fee task reverts with Error("E201"), not the long text."""
    with boa.env.prank(creator), boa.reverts("E201"):
        net.createTask(0, b"\x01" * 32, b"\x02" * 32, [kit.b32("m")], 0, kit.b32(None), b"\x03" * 32, 1, 60, False,
                       value=0)
