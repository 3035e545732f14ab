"""The one place where singletons turn their prompts into a workflow.

Every singleton is a few generation steps in a row, each reading inputs and earlier
outputs through ``{{name}}`` placeholders, and one return value. Built with
``gridtask.workflows.WorkflowBuilder`` (Dria's builder names), so the JSON is Dria's format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gridtask.workflows import Edge, Operator, Workflow, WorkflowBuilder, Write


def linear_workflow(steps: Sequence[tuple[str, str]], return_value: str,
                    memory: Mapping[str, str], *, max_tokens: int | None = None) -> Workflow:
    """Steps ``(prompt, output name)`` run in order; the result is ``return_value``."""
    builder = WorkflowBuilder(dict(memory))
    if max_tokens is not None:
        builder.set_max_tokens(max_tokens)
    for index, (prompt, output) in enumerate(steps):
        builder.generative_step(id=str(index), prompt=prompt, operator=Operator.GENERATION,
                                outputs=[Write.new(output)])
    builder.flow([Edge(source=str(i), target=str(i + 1) if i + 1 < len(steps) else "_end")
                  for i in range(len(steps))])
    builder.set_return_value(return_value)
    return builder.build()
