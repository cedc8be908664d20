"""cascade: a reproducible companion to 'Cascade Weight Shedding in Deep Neural Networks'."""
from ._cpu import guard_amx

guard_amx()

from . import data, models, pruning, shedding, store, train  # noqa: E402

__all__ = ["data", "models", "pruning", "shedding", "store", "train"]
