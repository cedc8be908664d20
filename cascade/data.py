"""Datasets as in-memory tensors, deterministic stratified subsets, and a batch loader.

Why in memory: on a 2-core CPU a `DataLoader` with per-sample transforms costs more than the small
networks we train. A whole split fits in a few MB of uint8, so batches are drawn by index and
augmented per batch on tensors, with no Python per sample.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .store import default_cache

DATASETS = ("fashion-mnist", "cifar10", "synthetic")
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
HOW_TO_GET = {
    "fashion-mnist": "install Debian's package (apt-get install dataset-fashion-mnist), set CASCADE_DATA=/dir/with/"
                     "the *-ubyte.gz files, or pass download=True when online",
    "cifar10": "set CASCADE_DATA (or root=) to a folder holding torchvision's cifar-10-batches-py, "
               "or pass download=True when online",
}


@dataclass(frozen=True)
class Split:
    """One split of a dataset: uint8 images (N, C, H, W) and int64 labels, kept on the CPU."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str

    def __len__(self) -> int:
        return len(self.y)

    @property
    def in_channels(self) -> int:
        return self.x.shape[1]

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std in [0, 1] units; computed on the training split only."""
        x = self.x.float().div_(255)
        return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))

    def subset(self, index: torch.Tensor) -> "Split":
        return replace(self, x=self.x[index], y=self.y[index])


def stratified_index(y: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """A deterministic, class-balanced choice of `size` indices (all, in a seeded order, when None).

    Classes get size // k items each and the remainder goes to the lowest class ids, so a
    subset's class counts never depend on the seed, only its members do.
    """
    n = len(y)
    if size is not None and size > n:
        raise ValueError(f"size={size} exceeds the {n} items available; allowed: at most {n}, or None (all)")
    if size is None or size == n:
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    classes = torch.unique(y)
    k = len(classes)
    g = torch.Generator().manual_seed(seed)
    picks = []
    for i, c in enumerate(classes.tolist()):
        members = torch.nonzero(y == c).flatten()
        want = size // k + (1 if i < size % k else 0)
        if want > len(members):
            raise ValueError(f"size={size} needs {want} items of class {c}, which has only {len(members)}")
        picks.append(members[torch.randperm(len(members), generator=g)[:want]])
    index = torch.cat(picks)
    return index[torch.randperm(len(index), generator=g)]


def _check_size(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}={value!r} is invalid; allowed: a positive int or None (all)")


def load(name: str = "fashion-mnist", train_size: int | None = None, test_size: int | None = None,
         seed: int = 0, root: str | os.PathLike | None = None, download: bool = False) -> tuple[Split, Split]:
    """Load `name` as (train, test) Splits, each a stratified subset chosen by size and seed."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    _check_size("train_size", train_size)
    _check_size("test_size", test_size)
    if name == "synthetic":
        train, test = _synthetic()
    elif name == "fashion-mnist":
        train, test = _fashion_mnist(root, download)
    else:
        train, test = _cifar10(root, download)
    return (train.subset(stratified_index(train.y, train_size, seed)),
            test.subset(stratified_index(test.y, test_size, seed + 1)))


def split_validation(train: Split, val_size: int, seed: int = 0) -> tuple[Split, Split]:
    """Carve a stratified validation split out of `train` (the rest stays the training split)."""
    _check_size("val_size", val_size)
    if val_size >= len(train):
        raise ValueError(f"val_size={val_size} leaves no training data; allowed: at most {len(train) - 1}")
    index = stratified_index(train.y, val_size, seed + 2)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[index] = False
    return train.subset(torch.nonzero(keep).flatten()), train.subset(index)


def _synthetic(n_train: int = 2048, n_test: int = 512, size: int = 12, classes: int = 4) -> tuple[Split, Split]:
    """Class-dependent blobs plus noise: learnable in a few steps, for unit tests only."""
    g = torch.Generator().manual_seed(1234)
    prototypes = torch.rand(classes, 1, size, size, generator=g)

    def make(n: int) -> Split:
        y = torch.arange(n) % classes
        x = 0.6 * prototypes[y] + 0.4 * torch.rand(n, 1, size, size, generator=g)
        return Split((x * 255).round().to(torch.uint8), y, classes, "synthetic")

    return make(n_train), make(n_test)


def _data_root(root) -> Path | None:
    return Path(root) if root is not None else (Path(os.environ["CASCADE_DATA"]) if "CASCADE_DATA" in os.environ
                                                 else None)


def _fashion_mnist(root, download: bool) -> tuple[Split, Split]:
    """Read through torchvision's FashionMNIST after staging the raw files (plain or .gz) in our cache.

    torchvision expects unpacked files under <root>/FashionMNIST/raw; Debian ships them gzipped in a
    read-only folder, so they are unpacked once (atomically) into $CASCADE_CACHE.
    """
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import extract_archive

    given = _data_root(root)
    candidates = [given] if given is not None else [Path(d) for d in FASHION_MNIST_DIRS]
    files = [f"{s}-{k}" for s in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    raw = default_cache() / "FashionMNIST" / "raw"
    for base in [b for d in candidates for b in (d, d / "FashionMNIST" / "raw")]:
        if not all((base / f).exists() or (base / f"{f}.gz").exists() for f in files):
            continue
        raw.mkdir(parents=True, exist_ok=True)
        for f in files:
            if (raw / f).exists():
                continue
            if (base / f).exists():
                (raw / f).symlink_to((base / f).resolve())
            else:
                tmp = raw / f".{f}.{os.getpid()}"
                tmp.mkdir()
                extract_archive(str(base / f"{f}.gz"), str(tmp))
                os.replace(tmp / f, raw / f)
                tmp.rmdir()
        return _tv_splits(FashionMNIST, raw.parent.parent, False, "fashion-mnist")
    if download:
        return _tv_splits(FashionMNIST, given or default_cache(), True, "fashion-mnist")
    where = str(given) if given is not None else ", ".join(FASHION_MNIST_DIRS)
    raise FileNotFoundError(f"Fashion-MNIST not found in {where}; {HOW_TO_GET['fashion-mnist']}")


def _cifar10(root, download: bool) -> tuple[Split, Split]:
    from torchvision.datasets import CIFAR10

    base = _data_root(root) or default_cache()
    if not download and not (base / "cifar-10-batches-py").exists():
        raise FileNotFoundError(f"CIFAR-10 not found in {base}; {HOW_TO_GET['cifar10']}")
    return _tv_splits(CIFAR10, base, download, "cifar10")


def _tv_splits(cls, root: Path, download: bool, name: str) -> tuple[Split, Split]:
    out = []
    for train in (True, False):
        ds = cls(root=str(root), train=train, download=download)
        x = torch.as_tensor(ds.data)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W) uint8
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        out.append(Split(x.contiguous(), y, len(ds.classes), name))
    return out[0], out[1]


class Loader:
    """Batches of a Split held as one normalised tensor on `device`, drawn by index.

    Every epoch's order and augmentation come from a generator seeded by (seed, epoch), so a run
    resumed at any epoch boundary sees exactly the batches an uninterrupted run would.
    Augmentation: random crop after zero-padding by `pad` pixels, and horizontal flips, both per
    batch with tensor ops.
    """

    def __init__(self, split: Split, batch_size: int, *, train: bool, seed: int = 0, augment: bool = True,
                 pad: int = 2, flip: bool = True, stats: tuple[torch.Tensor, torch.Tensor] | None = None,
                 device: str | torch.device = "cpu", channels_last: bool = True, drop_last: bool | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} is invalid; allowed: a positive int")
        mean, std = stats if stats is not None else split.stats()
        self.device = torch.device(device)
        x = split.x.to(self.device).float().div_(255)
        x = (x - mean.to(self.device).view(1, -1, 1, 1)) / std.to(self.device).view(1, -1, 1, 1)
        self.x, self.y = x, split.y.to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.augment, self.pad, self.flip = augment and train, pad, flip
        self.channels_last = channels_last
        self.drop_last = train if drop_last is None else drop_last

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int = 0):
        """Yield (x, y) batches for `epoch`; shuffled and augmented only for training loaders."""
        n = len(self.y)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).to(self.device) if self.train else None
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min((b + 1) * self.batch_size, n))
            idx = order[sl] if order is not None else None
            x = self.x[idx] if idx is not None else self.x[sl]
            y = self.y[idx] if idx is not None else self.y[sl]
            if self.augment:
                x = self._augment(x, g)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.pad
        if p:
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (b,), generator=g).to(x.device)
            dx = torch.randint(0, 2 * p + 1, (b,), generator=g).to(x.device)
            rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
            cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
            x = padded[torch.arange(b, device=x.device).view(b, 1, 1, 1),
                       torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1), rows, cols]
        if self.flip:
            flip = (torch.rand(b, generator=g) < 0.5).to(x.device).view(b, 1, 1, 1)
            x = torch.where(flip, x.flip(3), x)
        return x


def available(name: str, root: str | os.PathLike | None = None) -> bool:
    """Whether `name` can be loaded here without a download (profiles use it to pick a dataset)."""
    try:
        load(name, train_size=10, test_size=10, root=root)
        return True
    except (FileNotFoundError, RuntimeError):
        return False
