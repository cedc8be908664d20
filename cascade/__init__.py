"""cascade: a reproducible companion to 'Cascade Weight Shedding in Deep Neural Networks'."""
from . import data, models, pruning, shedding, store, train

__all__ = ["data", "models", "pruning", "shedding", "store", "train"]
