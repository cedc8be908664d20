"""Phase timing and FLOP counting: exclusive nested phases on a fake clock, and a training run counted by hand."""
import pytest

from cascade import timing
from cascade.train import Checkpoint, Evaluate
from test_train import cfg, fit, net, splits


@pytest.fixture
def clock(monkeypatch):
    """perf_counter as a settable number; the counters start empty."""
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(timing, "SECONDS", timing.Counter())
    monkeypatch.setattr(timing, "FLOPS", timing.Counter())
    return now


def test_nested_phases_count_for_the_innermost_only(clock):
    watch = timing.Stopwatch()
    with timing.phase("tracker"):
        clock[0] = 2.0
        with timing.phase("eval"):
            clock[0] = 7.0
        clock[0] = 8.5
    clock[0] = 10.0
    assert watch.phases() == {"eval": 5.0, "tracker": 3.5}
    assert watch.elapsed() == 10.0


def test_timed_counts_producing_each_item_and_a_stopwatch_counts_since_its_start(clock):
    def slow():
        for i in range(3):
            clock[0] += 1.0  # each item takes a second to produce
            yield i

    with timing.phase("step"):
        clock[0] += 0.5
    watch = timing.Stopwatch()
    assert list(timing.timed(slow(), "data")) == [0, 1, 2]
    assert watch.phases() == {"data": 3.0}
    assert timing.SECONDS == {"step": 0.5, "data": 3.0}


def test_a_training_run_counts_its_model_flops_by_hand(tmp_path):
    train_set, test_set = splits(256, 128)
    watch = timing.Stopwatch()
    fit(net(), train_set, cfg(epochs=2, batch_size=64), callbacks=[Evaluate(test_set), Checkpoint(tmp_path)])
    macs = 4 * 9 * 144 + 4 * 144 * 4  # conv 1->4 3x3 at 12x12, then linear 576->4
    assert watch.model_flops() == {"train": 6 * macs * 2 * 4 * 64,  # 2 epochs of 4 batches of 64
                                   "eval": 2 * macs * 128 * 3}  # before training and after each epoch
    phases = watch.phases()
    assert set(phases) == {"data", "step", "eval", "checkpoint"}
    assert sum(phases.values()) <= watch.elapsed()


def test_bf16_flops_are_counted_apart():
    train_set, _ = splits(128, 64)
    watch = timing.Stopwatch()
    fit(net(), train_set, cfg(epochs=1, batch_size=64, precision="bf16"))
    assert set(watch.model_flops()) == {"train_bf16"}
