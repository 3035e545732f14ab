"""What ``Client.submit`` refuses before anything is paid: every argument in the chain's
terms, and everything a node would refuse (``gridtask.limits``, the one place of those
rules), as one ``ValidationError`` naming what is wrong. ``check_order`` needs nothing but
the arguments; ``check_for_network`` the network's deploy parameters.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gridtask.chain.client import to_bytes32
from gridtask.chain.models import NetworkParams
from gridtask.exceptions import ValidationError
from gridtask.limits import (
    check_fee,
    check_model_type,
    check_positive,
    check_task,
    check_validate_mode,
    default_stage_timeout,
    stage_timeout_fits,
)
from gridtask.types import TaskType

MAX_TASK_MODELS = 4  # the contract's selection.MAX_TASK_MODELS: models one task lists


class NoNodeWarning(UserWarning):
    """No node serves a model yet: the task waits in the queue until one joins."""


class StageTimeoutWarning(UserWarning):
    """The stage timeout is long for the network's validation window: should the task be
    sampled, a member of its group that stalls can hold the group until a node that scored
    claims its fee unvalidated, and that node escapes the vote."""


@dataclass(frozen=True)
class Order:
    """A submission's arguments, checked: ``models`` the names, ``model_ids`` the same on chain."""

    task_type: TaskType
    validate: str
    models: list[str]
    model_ids: list[bytes]
    gpu_id: bytes
    any_model: bool = False

    def unserved(self, unserved: list[str]) -> list[str]:
        """Of the models no node serves, those that leave the task waiting for a node: each of
        them for an all-of task; for an any-of task, all of them together, or none."""
        if not self.any_model:
            return unserved
        return [" or ".join(unserved)] if len(unserved) == len(self.models) else []


def check_order(task_type: TaskType | int, model: str | Sequence[str], inputs: Any, *, fee: Any,
                models: Sequence[str] | None, min_vram: Any, gpu: str, size: Any, stage_timeout: Any, validate: str,
                any_model: bool = False) -> Order:
    """Every argument of ``Client.submit`` that needs no chain to check."""
    kind = task_type_of(task_type)
    validate = check_validate_mode(validate)
    if not isinstance(inputs, dict):
        raise ValidationError(f"inputs: must be a dict (got {type(inputs).__name__})")
    if not isinstance(fee, int) or isinstance(fee, bool):
        raise ValidationError(f"fee: must be an integer number of wei (got {fee!r})")
    check_positive("fee", fee, "wei")
    if stage_timeout is not None:
        check_positive("stage_timeout", stage_timeout, "seconds")
    for what, number, least in (("size", size, 1), ("min_vram", min_vram, 0),
                                ("stage_timeout", 1 if stage_timeout is None else stage_timeout, 1)):
        if not isinstance(number, int) or isinstance(number, bool) or number < least:
            raise ValidationError(f"{what}: must be an integer of at least {least} (got {number!r})")
    if not isinstance(any_model, bool):
        raise ValidationError(f"any_model: must be True or False (got {any_model!r})")
    if isinstance(model, str):
        name = model
    else:
        if models is not None:
            raise ValidationError("model: a list of models here, and models= too: give the list once")
        models = list(model)
        if not models:
            raise ValidationError("model: name at least one model")
        name = models[0]
    wanted = list(models or [name])
    if name not in wanted:
        raise ValidationError(f"model: {name!r} is not among the task's models {wanted}")
    if len(wanted) > MAX_TASK_MODELS:
        raise ValidationError(f"models: at most {MAX_TASK_MODELS} per task (got {len(wanted)}): name fewer")
    if any_model and validate == "always":
        raise ValidationError("any_model: a task validated by a group from the start cannot leave its model open "
                              "(its three members could run different models and never agree); name one model, "
                              "or use validate='sampled' (a sampled any-of task's group runs the model its "
                              "original ran)")
    try:
        model_ids = [to_bytes32(m) for m in wanted]
        gpu_id = to_bytes32(gpu) if gpu else bytes(32)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    check_task(kind, name, inputs)
    for other in wanted:
        check_model_type(kind, other)
        if any_model and other != name:  # an any-of task may run with any of them
            check_task(kind, other, inputs)
    return Order(task_type=kind, validate=validate, models=wanted, model_ids=model_ids, gpu_id=gpu_id,
                 any_model=any_model and len(wanted) > 1)


def check_for_network(network: NetworkParams, *, fee: int, size: int, stage_timeout: int | None,
                      validate: str) -> int:
    """The fee against the network's minimum; returns the stage timeout (the default for this
    network when None), warning when one given is too long for a validation group to form."""
    check_fee(fee, size, network.min_fee_per_unit)
    if stage_timeout is None:
        return default_stage_timeout(network.validation_window, network.min_timeout)
    if (network.validation_rate_bps or validate == "always") and not stage_timeout_fits(
            stage_timeout, network.validation_window):  # no group can form otherwise
        warnings.warn(f"stage_timeout {stage_timeout} s is over half the network's validation window "
                      f"({network.validation_window} s): should the task be sampled, a member of its group "
                      "that stalls can hold the group until a node that scored is paid unvalidated",
                      StageTimeoutWarning, stacklevel=3)
    return stage_timeout


def task_type_of(value: TaskType | int) -> TaskType:
    try:
        return TaskType(value)
    except ValueError:
        raise ValidationError(f"unknown task type {value!r}: one of {[t.name.lower() for t in TaskType]}") from None


def parse_task_id(task_id: str | bytes) -> bytes:
    """A task ID as users write it (0x + 64 hex) or as bytes; ``ValidationError`` otherwise."""
    if isinstance(task_id, bytes):
        raw = task_id
    else:
        text = str(task_id).strip().removeprefix("0x")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValidationError(f"malformed task ID {task_id!r}: expected 0x and 64 hex characters") from None
    if len(raw) != 32:
        raise ValidationError(f"malformed task ID {task_id!r}: expected 0x and 64 hex characters")
    return raw


__all__ = ["MAX_TASK_MODELS", "NoNodeWarning", "Order", "StageTimeoutWarning", "check_for_network", "check_order",
           "parse_task_id", "task_type_of"]
