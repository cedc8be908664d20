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


# ------------------------------------------------------------------------------------------------ analysis by hand
def _cells(errs, barrier=0.0, cka=0.99, seeds=(0, 1, 2)):
    """A `cells` frame: errs[t][d] = per-seed test errors; every cell connected and similar unless told."""
    cfg = Config()
    rows = []
    for t, by_d in errs.items():
        for d, per_seed in by_d.items():
            for seed, e in zip(seeds, per_seed):
                b = barrier(t, d) if callable(barrier) else barrier
                rows.append({"seed": seed, "temperature": t, "density": d, "err": e, "barrier": b, "cka": cka,
                             "label": regime(b, cka, cfg.barrier_i, cfg.cka_b),
                             "predicted": predicted(t, d == cfg.densities[0])})
    return regimes.pd.DataFrame(rows)


ERRS = {"cold": {0.03: [0.20, 0.22, 0.21], 0.3: [0.10, 0.11, 0.10]},
        "short": {0.03: [0.18, 0.195, 0.19], 0.3: [0.13, 0.15, 0.14]},
        "sam": {0.03: [0.19, 0.18, 0.21], 0.3: [0.15, 0.16, 0.15]}}


def test_t1_interaction_and_the_sign_flip_by_hand():
    cfg = Config()
    eff = regimes.effects(cfg, _cells(ERRS))
    low = eff[eff.density == 0.03].delta.round(10).tolist()
    assert low == [-0.02, -0.025, -0.02]  # heating helps at the low density: CI -0.0289 to -0.0145
    inter = regimes.interactions(cfg, eff)
    assert inter.I.round(10).tolist() == [0.05, 0.065, 0.06]  # (0.03, 0.04, 0.04) - (-0.02, -0.025, -0.02)
    assert inter.I_sam.round(10).tolist() == [0.01, 0.025, -0.01]  # (0.02, 0.01, 0.01) - (0.01, -0.015, 0.02)
    assert regimes.flip(cfg, eff)["shown"] and regimes.transitions(eff) == [0]  # Δ(0.3)'s CI: 0.0223 to 0.0510
    v = regimes.t1_verdict(cfg, inter, eff)
    # mean 0.05833, SD 0.007638, t(2) = 4.3027: half-width 0.01897, so the CI 0.0394 to 0.0773 lies above 0.02
    assert v.word == "reproduces" and v.effect == pytest.approx(0.0583, abs=1e-4)
    assert v.ci95 == pytest.approx((0.0394, 0.0773), abs=1e-4) and "sign flip is shown" in v.summary
    assert v.expected_half_width == pytest.approx(4.3027 * 0.012 / 3 ** 0.5, abs=1e-4)  # the planned SD


def test_t2_is_not_testable_when_every_cell_has_one_label_and_scores_the_predicted_map_otherwise():
    cfg = Config()
    same = regimes.t2_verdict(cfg, _cells(ERRS))
    assert same.word == "not testable" and same.effect == pytest.approx(1 / 6, abs=1e-4)  # only (cold, 0.3) is II-B
    assert same.ci95 == pytest.approx((1 / 6, 1 / 6), abs=1e-4)  # no spread over seeds: the CI is the point
    paper = _cells(ERRS, barrier=lambda t, d: -0.1 if (t, d) == ("cold", 0.03) else 0.0, cka=0.9)
    v = regimes.t2_verdict(cfg, paper)  # (cold, 0.03) is I and the four hot cells II-A; (cold, 0.3) is II-A too
    assert v.premise.present and v.effect == pytest.approx(5 / 6, abs=1e-4) and v.word == "reproduces"
    assert regimes.two_labels(paper).tolist() == [1.0, 1.0, 1.0]


def test_t3_selection_regret_and_the_predictions_by_hand():
    cfg = Config()
    cell = _cells(ERRS, cka=0.99)
    cell.loc[cell.temperature == "short", "cka"] = 0.995  # the rule picks short everywhere
    dense = regimes.pd.DataFrame([{"seed": s, "temperature": t, "test_acc": a}
                                  for s in (0, 1, 2) for t, a in (("cold", 0.9), ("short", 0.85), ("sam", 0.8))])
    chosen = regimes.choices(cfg, cell, dense)
    assert set(chosen.rule) == {"short"} and set(chosen.best_dense) == {"cold"} and set(chosen.longest) == {"cold"}
    # seed 0: at 0.03 the best is short (0.18): regrets 0 and cold's 0.02; at 0.3 the best is cold: 0.03 and 0
    assert chosen[chosen.seed == 0][["regret_rule", "regret_best_dense"]].round(10).values.tolist() == [
        [0.0, 0.02], [0.03, 0.0]]
    values, testable = regimes.selection(cfg, chosen)
    # seed 0: baseline (0.02 + 0) / 2 - rule (0 + 0.03) / 2; seed 1: (0.04 + 0) / 2 - (0.015 + 0.04) / 2
    assert testable and [round(v, 10) for v in values] == [-0.005, -0.0075, -0.01]
    eff = regimes.effects(cfg, cell)
    preds = regimes.predictions(cfg, cell, eff, chosen)
    # the cold cells are II-B, so heating should hurt: false at 0.03 (Δ < 0), true at 0.3; the rule loses to the
    # baseline (CI -0.0137 to -0.0013, below 0.005: false); short's low cell is II-B, so SAM should hurt:
    # Δ_sam(0.03) = 0.01, -0.015, 0.02 (CI -0.040 to 0.050: undecided)
    assert [p.word for p in preds] == ["does not reproduce", "reproduces", "does not reproduce", "inconclusive"]
    t3 = regimes.t3_verdict(cfg, preds)
    assert t3.word == "inconclusive" and t3.effect == pytest.approx(0.25)  # 1 true, 2 false of 4: no majority
    assert "1 of 4 testable predictions came true, 2 came out false, 1 undecided" in t3.summary


def test_selection_is_not_testable_when_the_rule_picks_the_better_baselines_models():
    cfg = Config()
    cell = _cells(ERRS)
    cell.loc[cell.temperature == "cold", "cka"] = 0.999
    dense = regimes.pd.DataFrame([{"seed": s, "temperature": t, "test_acc": 0.9 - 0.05 * i}
                                  for s in (0, 1, 2) for i, t in enumerate(regimes.TEMPERATURES)])
    values, testable = regimes.selection(cfg, regimes.choices(cfg, cell, dense))
    assert values == [0.0, 0.0, 0.0] and not testable


def test_tally_counts_testable_predictions_only():
    from cascade import stats

    v = stats.tally("T3", [("a", "reproduces"), ("b", "reproduces"), ("c", "not testable"), ("d", "inconclusive")])
    assert (v.word, v.effect, v.values) == ("reproduces", 2 / 3, (1.0, 1.0, 0.0))  # 2 of 3 testable came true
    assert "c: not testable" in v.summary and v.ci95 == (None, None)
    assert stats.tally("T3", [("a", "does not reproduce"), ("b", "reproduces")]).word == "inconclusive"  # 1 of 2
    assert stats.tally("T3", [("a", "does not reproduce"), ("b", "inconclusive"), ("c", "does not reproduce")]
                       ).word == "does not reproduce"
    assert stats.tally("T3", [("a", "not testable")]).word == "not testable"
    assert stats.mean_ci([0.25, 0.25, 0.25]) == (0.25, 0.25, 0.25)  # no spread: the CI is the point
