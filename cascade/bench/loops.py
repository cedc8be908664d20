"""The two training loops the benchmark compares: cascade's, and conventional research code."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import data, models, pruning
from ..store import default_cache
from ..train import TrainConfig, train
from .plan import FRACTION


def _net(name: str, width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build(name, in_channels=1, num_classes=10, width=width)


class Cascade:
    """`cascade.train.train` over `steps` batches per call: the loop the experiments run, per-epoch setup included."""

    def __init__(self, name: str, width: int, split: data.Split, stats, cfg: TrainConfig, pruned: bool = True):
        self.model, self.split, self.stats, self.cfg = _net(name, width), split, stats, cfg
        self.mask = pruning.prune(self.model, "gmp", FRACTION) if pruned else None

    def __call__(self, steps: int) -> int:
        n = steps * self.cfg.batch_size
        train(self.model, self.split.subset(torch.arange(n)), self.cfg, mask=self.mask, stats=self.stats, quiet=True)
        return n


class Baseline:
    """Conventional research code: a DataLoader over torchvision's FashionMNIST with per-sample transforms,
    fp32 in contiguous format, masks as torch.nn.utils.prune forward hooks, plain SGD with momentum."""

    def __init__(self, name: str, width: int, loader, cfg: TrainConfig):
        from torch.nn.utils import prune

        self.model = _net(name, width).train()
        layers = [(m, "weight") for m in self.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=FRACTION)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.batches = self._forever(loader)
        self.running_loss = 0.0

    @staticmethod
    def _forever(loader):
        while True:
            yield from loader

    def __call__(self, steps: int) -> int:
        n = 0
        for _ in range(steps):
            x, y = next(self.batches)
            loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.running_loss += loss.item()
            n += len(y)
        return n


def baseline_loader(batch_size: int, workers: int, stats, size: int):
    """torchvision's FashionMNIST read from the raw files `cascade.data.load` staged, on the same stratified
    subset of `size` images, with the usual per-sample transforms."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms as T

    mean, std = (tuple(s.tolist()) for s in stats)
    tf = T.Compose([T.RandomCrop(28, padding=2), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    ds = datasets.FashionMNIST(root=str(default_cache()), train=True, transform=tf)
    index = data.stratified_index(torch.as_tensor(ds.targets), size, 0)
    return DataLoader(Subset(ds, index.tolist()), batch_size=batch_size, shuffle=True, num_workers=workers)
