"""Dria's SDK on gridtask: change ``dria.`` imports to ``gridtask.sdk.dria.`` and the rest
of a Dria program runs as it is.

    from gridtask.sdk.dria.client import Dria
    from gridtask.sdk.dria.factory import Simple
    from gridtask.sdk.dria.models import Model, Task

``Dria`` wraps gridtask's core ``Client`` from outside; the core does not import this package.
"""

from gridtask.sdk.dria.client import Dria, ExecuteResults, TaskFailure
from gridtask.sdk.dria.dataset import DatasetGenerator, DriaDataset, FailedRow
from gridtask.sdk.dria.factory import SINGLETONS, SingletonTemplate
from gridtask.sdk.dria.models import FunctionCall, Model, Task, TaskResult
from gridtask.sdk.dria.prompt import Prompt

__all__ = ["SINGLETONS", "DatasetGenerator", "Dria", "DriaDataset", "ExecuteResults", "FailedRow", "FunctionCall",
           "Model", "Prompt", "SingletonTemplate", "Task", "TaskFailure", "TaskResult"]
