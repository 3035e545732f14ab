"""Golem's task API on gridtask (yapapi's names): batch jobs split into fragments that run on
many nodes at once, each fragment a gridtask task of a script in the nodes' sandbox.

    from gridtask.sdk.golem import Golem, Task, WorkContext, vm

    async def worker(context: WorkContext, tasks):
        async for task in tasks:
            script = context.new_script()
            future_result = script.run("/bin/sh", "-c", "echo hello")
            yield script
            task.accept_result(result=await future_result)

    async with Golem(budget=0.1) as golem:
        package = await vm.repo(image_hash=HASH)            # `gridtask bundle publish DIR` prints it
        async for done in golem.execute_tasks(worker, [Task(data=None)], payload=package):
            print(done.result.stdout)
"""

from gridtask.sdk.golem import events, vm
from gridtask.sdk.golem._fragment import FragmentFailed
from gridtask.sdk.golem.budget import Budget, BudgetExceeded
from gridtask.sdk.golem.ctx import WorkContext
from gridtask.sdk.golem.golem import Golem
from gridtask.sdk.golem.progress import ProgressBar
from gridtask.sdk.golem.script import CommandExecutionError, Script
from gridtask.sdk.golem.task import Task, TaskStatus
from gridtask.sdk.golem.vm import VmPayload

__all__ = [
    "Budget",
    "BudgetExceeded",
    "CommandExecutionError",
    "FragmentFailed",
    "Golem",
    "ProgressBar",
    "Script",
    "Task",
    "TaskStatus",
    "VmPayload",
    "WorkContext",
    "events",
    "vm",
]
