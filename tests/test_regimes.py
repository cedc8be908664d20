"""Chapter 07's pre-registered design (issue 27): its runs, their sharing of the backbone, the stem kept dense, and
the rules that label, predict and select, by hand."""
import re

import pytest
import torch

from cascade import models, pruning
from cascade import runs as R
from cascade.runs.base import splits
from cascade.chapters import regimes, rewinding
from cascade.chapters.regimes import Config, interaction, majority, predicted, regime, select
from cascade.train import TrainConfig


def test_the_cold_dense_model_is_the_shared_backbone_and_the_hot_ones_differ_only_in_their_knob():
    cfg = Config()
    assert cfg.dense(0, "cold").key == rewinding.Config().pretrain(0).key
    short, sam = cfg.dense(0, "short"), cfg.dense(0, "sam")
    assert (short.train.epochs, short.train.optimizer) == (5, "sgd")
    assert (sam.train.epochs, sam.train.optimizer, sam.train.sam_rho) == (5, "sam", 0.5)
    assert short.train.lr_schedule == "cosine" and short.keep_epochs == (1,)


def test_runs_are_the_cells_copies_comparisons_and_controls():
    cfg = Config()
    runs = regimes.runs(cfg)
    kinds = [r.kind for r in runs]
    # 4 seeds x (3 temperatures x 2 densities x (2 copies + 1 compare) + 2 controls: cold and short)
    assert len(runs) == len({r.key for r in runs}) == 80 and kinds.count("compare") == 24
    c = cfg.compare(1, "short", 0.03)
    assert c.a.finetune.seed == 1001 and c.b.finetune.seed == 2001 and c.a.pretrain == c.b.pretrain
    assert c.a.prune == c.b.prune and c.a.prune.fraction == 0.97 and (c.points, c.images) == (11, 2000)
    assert c.a.tracker == cfg.tracker() and c.b.tracker == regimes.TrackerConfig()  # the first copy is tracked
    assert c.a.finetune.lr_schedule == "cosine" and c.a.finetune.epochs * (10000 // 128) == 312


@pytest.mark.parametrize("field, bad", [("densities", (0.3, 0.03)), ("densities", (0.03,)), ("hot_epochs", 20),
                                        ("copies", 1), ("cka_b", 1.0), ("barrier_i", 0)])
def test_bad_values_are_refused_with_the_allowed_ones(field, bad):
    with pytest.raises(ValueError, match=re.escape(f"{field}={bad!r}") + ".* invalid; allowed"):
        Config(**{field: bad})


def test_the_stem_and_classifier_stay_dense_and_every_other_conv_keeps_its_share():
    net = models.build("resnet8", in_channels=1, num_classes=10, width=16)
    mask = Config().prune(0, 0.03).apply(net)
    names = pruning.prunable_names(net)
    assert names[0] not in mask and names[-1] not in mask  # stem conv and classifier: not pruned, not measured
    for name, m in mask.items():  # layer-uniform: round(0.97 n) removed from each
        n = m.numel()
        assert int(m.sum()) == n - round(0.97 * n)
    assert int(mask["layer1.0.conv1.weight"].sum()) == 2304 - 2235  # 16 x 16 x 3 x 3 = 2304 weights keep 69


def test_a_default_prune_config_still_prunes_every_layer():
    net = models.build("resnet8", in_channels=1, num_classes=10, width=16)
    assert list(R.PruneConfig("layerwise", 0.5).apply(net)) == pruning.prunable_names(net)


def test_regime_labels_by_hand():
    assert regime(-0.06, 0.99, 0.05, 0.95) == "I"  # a barrier, whatever the similarity
    assert regime(-0.05, 0.95, 0.05, 0.95) == "II-B"  # both thresholds are inclusive on the connected side
    assert regime(0.01, 0.9499, 0.05, 0.95) == "II-A"


def test_predicted_labels_and_majority():
    assert [predicted(t, low) for t in regimes.TEMPERATURES for low in (True, False)] == [
        "I", "II-B", "II-A", "II-A", "II-A", "II-A"]
    assert majority(["II-A", "I", "II-A", "II-B"]) == "II-A"
    assert majority(["II-B", "I", "II-B", "I"]) == "I"  # a tie goes to I


def test_selection_prefers_the_most_similar_connected_model():
    assert select({"cold": (-0.2, 0.99), "short": (-0.01, 0.93), "sam": (0.0, 0.96)}, 0.05) == "sam"
    assert select({"cold": (-0.3, 0.99), "short": (-0.1, 0.9), "sam": (-0.2, 0.96)}, 0.05) == "short"
    assert select({"cold": (0.0, 0.96), "short": (0.0, 0.96)}, 0.05) == "cold"  # a tie goes to the colder


def test_interaction_is_the_high_density_effect_minus_the_low():
    assert interaction({0.3: 0.012, 0.03: -0.025}) == pytest.approx(0.037)


def test_compare_uses_only_its_first_images():
    pre = R.PretrainRun(R.DataConfig("fashion-mnist", 256, 128), "resnet8", 4,
                        TrainConfig(epochs=1, batch_size=64))
    c = R.CompareRun(pre, pre, points=3, images=100)
    train_set, test_set = c.splits()
    assert len(train_set) == 100 and len(test_set) == 128
    assert torch.equal(train_set.x, splits(pre.data)[0].x[:100])


def test_a_pruning_schedule_refuses_dense_first_and_last_layers():
    pre = R.PretrainRun(R.DataConfig("fashion-mnist", 256, 128), "resnet8", 4, TrainConfig(epochs=1, batch_size=64))
    prune = R.PruneConfig("gmp", 0.5, include_first=False)
    with pytest.raises(ValueError, match=r"include_first=False, include_last=True are invalid with "
                                         r"schedule='gradual'; allowed: True with a pruning schedule"):
        R.FinetuneRun(pre, prune, TrainConfig(epochs=1, batch_size=64), schedule="gradual")
