"""Workflows in Dria's format: the models (``model``), the builder with ``dria-workflows``'
names (``builder``) and the engine a node runs them with (``engine``).

Shared by the SDK, which builds and checks them, and the node, which runs them. A workflow
is plain data (``model_dump()`` is JSON), so it travels inside a task's encrypted
parameters. A workflow built with the real ``dria_workflows`` package is accepted as it is
(``parse_workflow`` / ``as_json``).
"""

from gridtask.workflows.builder import (
    TOOLS,
    ConditionBuilder,
    CustomTool,
    GetAll,
    HttpMethod,
    HttpRequestTool,
    Insert,
    Peek,
    Pop,
    Push,
    Read,
    Size,
    String,
    WorkflowBuilder,
    Write,
    as_json,
)
from gridtask.workflows.engine import (
    OFFERED_OPERATORS,
    SCHEMA_ATTEMPTS,
    Generate,
    WorkflowResult,
    check_offered,
    run_workflow,
)
from gridtask.workflows.errors import (
    LimitExceeded,
    SchemaViolation,
    UnsupportedOperator,
    WorkflowError,
    WorkflowFailed,
)
from gridtask.workflows.model import (
    MAX_STEPS,
    Condition,
    Config,
    CustomToolTemplate,
    Edge,
    Expression,
    Input,
    InputValue,
    InputValueType,
    MessageInput,
    Operator,
    Output,
    OutputType,
    PostProcessType,
    Step,
    Task,
    TaskOutput,
    TaskPostProcess,
    Workflow,
    parse_workflow,
)

__all__ = [
    "MAX_STEPS", "OFFERED_OPERATORS", "SCHEMA_ATTEMPTS", "TOOLS", "Condition", "ConditionBuilder", "Config",
    "CustomTool", "CustomToolTemplate", "Edge", "Expression", "Generate", "GetAll", "HttpMethod",
    "HttpRequestTool", "Input", "InputValue", "InputValueType", "Insert", "LimitExceeded", "MessageInput",
    "Operator", "Output", "OutputType", "Peek", "Pop", "PostProcessType", "Push", "Read", "SchemaViolation",
    "Size", "Step", "String", "Task", "TaskOutput", "TaskPostProcess", "UnsupportedOperator", "Workflow",
    "WorkflowBuilder", "WorkflowError", "WorkflowFailed", "WorkflowResult", "Write", "as_json",
    "check_offered", "parse_workflow", "run_workflow",
]
