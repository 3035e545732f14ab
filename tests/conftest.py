"""Fixtures for every test directory."""

from __future__ import annotations

import pytest

from gridtask.workflows import Step, Workflow

LONGEST_FIRST = (
    "chain/test_gas.py",
    "chain/test_invariants.py",
    "e2e/test_errors.py",
    "chain/test_selection_fairness.py",
    "e2e/test_faults.py",
    "e2e/test_devnet.py",
    "e2e/test_lifecycle.py",
    "e2e/test_relay_signals.py",
    "e2e/test_dria_sdk.py",
    "e2e/test_node_signals.py",
    "e2e/test_opengpu.py",
    "e2e/test_relay_events.py",
    "e2e/test_same_key.py",
    "e2e/test_golem.py",
    "chain/test_sampling_groups_disputes.py",
    "e2e/test_sdk_groups.py",
    "e2e/test_daemon_claim.py",
    "e2e/test_cli.py",
    "e2e/test_dria_dataset.py",
    "chain/test_nodes.py",
    "e2e/test_reorg.py",
    "e2e/test_sdk_abort.py",
)
"""Test files by how long they take, the longest first (``make test ARGS="--durations=60"`` on
4 workers, 2026-12-01: test_gas 751 s, test_invariants 684 s ... test_sdk_abort 78 s, loaded).

``make test`` runs the files on parallel workers (``--dist loadfile --no-loadscope-reorder``,
each file whole on one worker, files handed out in collection order): a long file handed out
last would run alone at the end while the other workers sit idle. So these go first (the
long end-to-end files mostly wait on a devnet, the long contract files compute), then the rest
of tests/e2e, then the short unit tests, which fill the gaps. A file missing from the list
only starts later; the order never changes what a test checks (each file's tests keep their
order, and share nothing with other files)."""


def _rank(item: pytest.Item) -> tuple[int, int]:
    path = item.path.as_posix()
    for index, name in enumerate(LONGEST_FIRST):
        if path.endswith("/tests/" + name):
            return 0, index
    return (1 if "/tests/e2e/" in path else 2), 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: each file's tests stay together and in their order


@pytest.fixture
def poem_then_title() -> Workflow:
    """Two steps, the second reading what the first wrote: a poem about the sea, then its title.
    The executor tests run it on each backend (local model, OpenAI-compatible server)."""
    return Workflow(
        steps=[
            Step(prompt="Write a poem about {{topic}}.", output="poem"),
            Step(prompt="Title for: {{poem}}", output="title"),
        ],
        return_value="title",
        memory={"topic": "the sea"},
    )
