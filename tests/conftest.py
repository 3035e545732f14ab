"""Fixtures for every test directory."""

from __future__ import annotations

import pytest

from gridtask.workflows import Step, Workflow


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
