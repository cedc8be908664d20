"""Run kinds: one module each, all built on the protocol of `base`. Importing this package registers every kind
(a new kind is one module here, imported below, and a test)."""
from .base import (CHECKPOINT_MISSING, FORCED, KINDS, RECORD_CORRUPT, RECORD_MISSING, CheckpointMissing, DataConfig,
                   Run, closure, corrupt, ensure_all, plan, readable, register, splits, train_images)
from .pretrain import PretrainRun, initial
from .finetune import FinetuneRun, PruneConfig
from .retrain import RetrainRun
from .compare import CompareRun

__all__ = ["CHECKPOINT_MISSING", "FORCED", "KINDS", "RECORD_CORRUPT", "RECORD_MISSING", "CheckpointMissing", "DataConfig", "Run",
           "closure", "corrupt", "readable", "ensure_all", "plan", "register", "splits", "train_images", "PretrainRun", "initial",
           "FinetuneRun", "PruneConfig", "RetrainRun", "CompareRun"]
