"""Dria's ``dria.datasets`` import path."""

from gridtask.sdk.dria.dataset import DatasetGenerator, DriaDataset, FailedRow
from gridtask.sdk.dria.prompt import Prompt

__all__ = ["DatasetGenerator", "DriaDataset", "FailedRow", "Prompt"]
