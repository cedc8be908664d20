from pathlib import Path

import pytest
import torch

from cascade import data
from cascade.data import Loader, Split, load, split_validation, stratified_index

FASHION = Path(data.FASHION_MNIST_DIRS[0])
IDENTITY = (torch.zeros(1), torch.full((1,), 1 / 255))  # stats that leave raw uint8 values unchanged


def indexed(n: int = 200, classes: int = 4) -> Split:
    """n 1x1 images whose pixel value is their index (so batches reveal which items they hold)."""
    return Split(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1), torch.arange(n) % classes, classes, "indexed")


def ids(x: torch.Tensor) -> list[int]:
    """Item indices of a batch of `indexed` images normalised with IDENTITY stats."""
    return x.flatten(1)[:, 0].round().long().tolist()


def test_stratified_index_is_balanced_and_seeded():
    y = torch.tensor([0] * 10 + [1] * 12 + [2] * 15 + [3] * 3)
    idx = stratified_index(y, 10, seed=0)
    # 10 // 4 = 2 per class, the remainder 2 goes to classes 0 and 1.
    assert torch.bincount(y[idx]).tolist() == [3, 3, 2, 2]
    assert len(set(idx.tolist())) == 10
    assert torch.equal(idx, stratified_index(y, 10, seed=0))
    other = stratified_index(y, 10, seed=1)
    assert torch.bincount(y[other]).tolist() == [3, 3, 2, 2]
    assert set(other.tolist()) != set(idx.tolist())
    assert sorted(stratified_index(y, None, seed=0).tolist()) == list(range(40))
    with pytest.raises(ValueError, match="needs 4 items of class 3, which has only 3"):
        stratified_index(y, 16, seed=0)
    with pytest.raises(ValueError, match="size=41 exceeds the 40 items"):
        stratified_index(y, 41, seed=0)


def test_load_synthetic_subsets():
    train, test = load("synthetic", train_size=100, test_size=40, seed=0)
    assert (train.x.shape, train.x.dtype, test.x.shape) == ((100, 1, 12, 12), torch.uint8, (40, 1, 12, 12))
    assert torch.bincount(train.y).tolist() == [25] * 4 and torch.bincount(test.y).tolist() == [10] * 4
    assert (train.num_classes, train.in_channels, train.name) == (4, 1, "synthetic")
    again, _ = load("synthetic", train_size=100, test_size=40, seed=0)
    assert torch.equal(again.x, train.x) and torch.equal(again.y, train.y)
    other, _ = load("synthetic", train_size=100, test_size=40, seed=1)
    assert torch.bincount(other.y).tolist() == [25] * 4
    assert {bytes(x.numpy()) for x in other.x} != {bytes(x.numpy()) for x in train.x}
    full, full_test = load("synthetic")
    assert (len(full), len(full_test)) == (2048, 512)


def test_split_validation_is_disjoint_and_stratified():
    rest, val = split_validation(indexed(), 40, seed=0)
    assert (len(rest), len(val)) == (160, 40)
    r, v = set(rest.x.flatten().tolist()), set(val.x.flatten().tolist())
    assert not r & v and r | v == set(range(200))
    assert torch.bincount(val.y).tolist() == [10] * 4 and torch.bincount(rest.y).tolist() == [40] * 4
    assert torch.equal(split_validation(indexed(), 40, seed=0)[1].x, val.x)
    assert set(split_validation(indexed(), 40, seed=1)[1].x.flatten().tolist()) != v
    with pytest.raises(ValueError, match="val_size=200 leaves no training data"):
        split_validation(indexed(), 200)


def test_stats_by_hand_and_from_the_training_split():
    # channel 0: 0, 255, 51, 102 -> 0, 1, .2, .4: mean .4, unbiased var (.16 + .36 + .04 + 0) / 3
    # channel 1: 255, 0, 255, 0  -> 1, 0, 1, 0:   mean .5, unbiased var 4 * .25 / 3
    x = torch.tensor([[[[0, 255]], [[255, 0]]], [[[51, 102]], [[255, 0]]]], dtype=torch.uint8)  # (2, 2, 1, 2)
    split = Split(x, torch.tensor([0, 1]), 2, "tiny")
    mean, std = split.stats()
    assert torch.allclose(mean, torch.tensor([0.4, 0.5]))
    assert torch.allclose(std, torch.tensor([(0.56 / 3) ** 0.5, (1 / 3) ** 0.5]))
    # A loader normalises with the stats it is given (the training split's), not its own split's.
    other = Split(torch.full((2, 2, 1, 2), 255, dtype=torch.uint8), torch.tensor([0, 1]), 2, "other")
    loader = Loader(other, 2, train=False, stats=(mean, std))
    assert torch.allclose(loader.x[0, :, 0, 0], (torch.ones(2) - mean) / std)
    own = Loader(split, 2, train=False)
    assert torch.allclose(own.x.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-6)


def test_train_loader_epoch_covers_each_item_once():
    split = indexed()
    loader = Loader(split, 64, train=True, seed=3, augment=False, stats=IDENTITY)
    batches = list(loader.epoch(0))
    assert len(loader) == len(batches) == 3  # drop_last: 200 // 64, the last 8 are left out this epoch
    seen = [i for x, _ in batches for i in ids(x)]
    assert len(seen) == len(set(seen)) == 192 and set(seen) <= set(range(200))
    assert all(y.tolist() == [i % 4 for i in ids(x)] for x, y in batches)
    full = Loader(split, 64, train=True, seed=3, augment=False, stats=IDENTITY, drop_last=False)
    seen = [i for x, _ in full.epoch(0) for i in ids(x)]
    assert len(full) == 4 and sorted(seen) == list(range(200))


def test_train_loader_order_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        loader = Loader(indexed(), 64, train=True, seed=seed, augment=False, stats=IDENTITY)
        return [i for x, _ in loader.epoch(epoch) for i in ids(x)]

    assert order(0, 5) == order(0, 5)
    assert order(0, 5) != order(0, 6)
    assert order(0, 5) != order(1, 5)


def test_eval_loader_keeps_order_and_every_item():
    loader = Loader(indexed(), 64, train=False, stats=IDENTITY)
    assert len(loader) == 4
    assert [i for x, _ in loader.epoch(0) for i in ids(x)] == list(range(200))


def test_augmentation_off_switches_give_the_normalised_data():
    # Images carry their index in pixel (0, 0), so a batch can be compared with the data it came from.
    x = torch.randint(0, 256, (100, 2, 5, 5), dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(100, dtype=torch.uint8)
    split = Split(x, torch.arange(100) % 4, 4, "idx")
    plain = Loader(split, 32, train=True, seed=1, pad=0, flip=False)
    stats = split.stats()
    for xb, _ in plain.epoch(2):
        idx = ((xb[:, 0, 0, 0] * stats[1][0] + stats[0][0]) * 255).round().long()
        assert torch.equal(xb, plain.x[idx])
    assert plain.x.shape == x.shape and plain.augment


def test_crop_and_flip_by_hand():
    # A 2-channel 2x2 image; channel 1 is 10x channel 0, so both channels must move together.
    img = torch.tensor([[1, 2], [3, 4]], dtype=torch.uint8)
    split = Split(torch.stack([img, 10 * img]).expand(64, 2, 2, 2).contiguous(), torch.zeros(64, dtype=torch.long),
                  1, "img")
    stats = (torch.zeros(2), torch.full((2,), 1 / 255))

    def outputs(**kw):
        x, _ = next(Loader(split, 64, train=True, seed=0, stats=stats, **kw).epoch(0))
        x = x.round().long()
        assert torch.equal(x[:, 1], 10 * x[:, 0])
        return {tuple(v.flatten().tolist()) for v in x[:, 0]}

    # Zero-padded by 1:  0 0 0 0 / 0 1 2 0 / 0 3 4 0 / 0 0 0 0, and every 2x2 window of it.
    crops = {(0, 0, 0, 1), (0, 0, 1, 2), (0, 0, 2, 0), (0, 1, 0, 3), (1, 2, 3, 4), (2, 0, 4, 0), (0, 3, 0, 0),
             (3, 4, 0, 0), (4, 0, 0, 0)}
    assert outputs(pad=1, flip=False) == crops  # 64 draws of 9 windows, seeded: all of them show up
    assert outputs(pad=0, flip=True) == {(1, 2, 3, 4), (2, 1, 4, 3)}
    assert outputs(pad=0, flip=False) == {(1, 2, 3, 4)}
    # Evaluation loaders never augment.
    x, _ = next(Loader(split, 64, train=False, stats=stats, pad=1).epoch(0))
    assert {tuple(v.round().long().flatten().tolist()) for v in x[:, 0]} == {(1, 2, 3, 4)}


@pytest.mark.parametrize("kw, message", [
    (dict(name="mnist"), "unknown dataset 'mnist'; allowed: fashion-mnist, cifar10, synthetic"),
    (dict(name="synthetic", train_size=0), "train_size=0 is invalid; allowed: a positive int or None"),
    (dict(name="synthetic", train_size=-5), "train_size=-5 is invalid"),
    (dict(name="synthetic", train_size=2.5), "train_size=2.5 is invalid"),
    (dict(name="synthetic", train_size=True), "train_size=True is invalid"),
    (dict(name="synthetic", test_size=0), "test_size=0 is invalid"),
    (dict(name="synthetic", train_size=5000), "size=5000 exceeds the 2048 items"),
])
def test_bad_arguments_raise_one_line_value_errors(kw, message):
    with pytest.raises(ValueError) as err:
        load(**kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_loader_batch_size():
    with pytest.raises(ValueError, match="batch_size=0 is invalid; allowed: a positive int"):
        Loader(indexed(), 0, train=True)


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason=f"Fashion-MNIST is not installed in {FASHION} (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path))  # the unpacked copy goes to a throwaway cache
    monkeypatch.delenv("CASCADE_DATA", raising=False)
    train, test = load("fashion-mnist")
    assert (train.x.shape, test.x.shape, train.x.dtype) == ((60000, 1, 28, 28), (10000, 1, 28, 28), torch.uint8)
    assert torch.bincount(train.y).tolist() == [6000] * 10 and torch.bincount(test.y).tolist() == [1000] * 10
    assert (train.num_classes, train.name) == (10, "fashion-mnist")
    small, small_test = load("fashion-mnist", train_size=100, test_size=50, seed=0)
    assert torch.bincount(small.y).tolist() == [10] * 10 and torch.bincount(small_test.y).tolist() == [5] * 10
    assert 0 < small.x.float().mean() < 255
