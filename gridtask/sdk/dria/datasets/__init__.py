"""Dria's ``dria.datasets`` import path."""

from gridtask.sdk.dria.dataset import DatasetGenerator, DriaDataset, FailedRow

__all__ = ["DatasetGenerator", "DriaDataset", "FailedRow"]
