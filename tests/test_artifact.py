"""The committed ABI and bytecode are what the source compiles to, for the pinned EVM."""

from __future__ import annotations

import json

from gridtask.chain import artifact


def test_committed_artifact_matches_the_source() -> None:
    for name in artifact.CONTRACTS:  # TaskNetwork and the ScoreVerifier it calls
        committed = artifact.load(name)
        fresh = artifact.compile_contract(name)
        assert committed["sourceSha256"] == artifact.source_digest(), f"run `make artifact`: {name}'s sources changed"
        assert committed["abi"] == fresh["abi"], f"run `make artifact`: {name}'s ABI drifted from the source"
        assert committed["bytecode"] == fresh["bytecode"], f"run `make artifact`: {name}'s bytecode drifted"


def test_evm_version_is_pinned_in_every_source_and_the_artifact() -> None:
    assert artifact.load()["evmVersion"] == artifact.EVM_VERSION == "cancun"
    for source in artifact.CONTRACTS_DIR.glob("*.vy"):
        assert "# pragma evm-version cancun" in source.read_text(), source.name


def test_every_state_transition_has_an_indexed_event() -> None:
    events = {e["name"]: e for e in artifact.abi() if e["type"] == "event"}
    for name in ["TaskCreated", "TaskQueued", "TaskStarted", "TaskScoreReady", "TaskErrorReported",
                 "TaskValidated", "TaskSuccess", "TaskAborted", "NodeJoined", "NodePaused",
                 "NodeResumed", "NodeQuit", "Withdrawal"]:
        assert any(i["indexed"] for i in events[name]["inputs"]), name
    assert json.dumps(events["TaskAborted"]).count('"reason"') == 1
