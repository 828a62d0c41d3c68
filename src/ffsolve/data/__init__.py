"""Datasets as plain uint8 NumPy arrays, from the source the config names (DESIGN.md §5).

Every loader returns a :class:`Dataset`; the ``data_prepare`` rule saves it as
``resources/data/<name>.npz`` and experiments read that file with :func:`load_prepared`.
"""

from ffsolve.data.core import DataError, Dataset, load_prepared, save_prepared
from ffsolve.data.sources import load_dataset

__all__ = ["DataError", "Dataset", "load_dataset", "load_prepared", "save_prepared"]
