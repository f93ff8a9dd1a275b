"""Loading user and built-in datasets into numpy arrays, with clear errors, and splitting them."""

from training.data.dataset import DataSplits, LoadedData, split_dataset
from training.data.errors import DataError
from training.data.loader import load_dataset

__all__ = ["DataError", "DataSplits", "LoadedData", "load_dataset", "split_dataset"]
