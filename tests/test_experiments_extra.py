"""Analysis of the conditions (02) and architectures (03) experiments on small hand-made records."""
import math

import pandas as pd
import pytest

from cascade.experiments import REGISTRY, architectures, conditions


def tracker_rows(rows, **labels):
    """Tidy tracker rows (epoch, step, layer, metric, value) with run labels as columns."""
    return pd.DataFrame(rows, columns=["epoch", "step", "layer", "metric", "value"]).assign(**labels)


POINT = dict(model="resnet8", fraction=0.1, lr=0.1, weight_decay=5e-4, batch_size=128, epochs=2)


def shed(start, end, criterion, seed):
    return tracker_rows([[0, 0, "global", "shed_tau0", start], [2, 20, "global", "shed_tau0", end]],
                        criterion=criterion, seed=seed, key=f"{criterion}{seed}", **POINT)


def test_conditions_excess_and_point_ci_by_hand():
    # seed 0: control rises 0.02, gmp 0.2 -> E = (0.2 * 0.9 - 0.02) / 0.1 = 1.6
    # seed 1: control rises 0.0, gmp 0.2222.. -> E = (0.2 - 0) / 0.1 = 2.0
    frame = pd.concat([shed(0.1, 0.12, "none", 0), shed(0.0, 0.2, "gmp", 0),
                       shed(0.1, 0.1, "none", 1), shed(0.0, 2 / 9, "gmp", 1)], ignore_index=True)
    ex = conditions.excess(frame)
    assert ex.sort_values("seed").excess_ratio.tolist() == pytest.approx([1.6, 2.0])
    row = conditions.point_table(ex).iloc[0]
    half = 12.706 * math.sqrt(0.08) / math.sqrt(2)  # t_{0.975,1} * sd / sqrt(n), sd of (1.6, 2.0) = sqrt(0.08)
    assert (row.excess_ratio, row.ci_lo, row.ci_hi) == pytest.approx((1.8, 1.8 - half, 1.8 + half))


def test_conditions_norm_ratio_is_global_norm_end_over_start():
    rows = [[0, 0, "conv1.weight", "norm", 3.0], [0, 0, "fc.weight", "norm", 4.0],
            [2, 20, "conv1.weight", "norm", 1.5], [2, 20, "fc.weight", "norm", 2.0]]
    rows += [[e, s, "global", m, v] for e, s, v in ((0, 0, 0.0), (2, 20, 0.3))
             for m in ("shed_abs@0.001", "shed_rms@0.05", "dead_filters", "dead_bn")]
    table = conditions.scale_table(tracker_rows(rows, criterion="gmp", seed=0, key="k", **POINT))
    assert table.norm_ratio.iloc[0] == pytest.approx(0.5)  # sqrt(1.5^2 + 2^2) / sqrt(3^2 + 4^2)
    assert table["d_shed_rms@0.05"].iloc[0] == pytest.approx(0.3)


def test_conditions_config_and_paper_run_count():
    with pytest.raises(ValueError, match="finetune_lr=0.5"):
        REGISTRY["conditions"].make_config("paper", finetune_lr=0.5)
    cfg = REGISTRY["conditions"].make_config("paper")
    # 3x3 grid + 2 extra batch sizes + 2 extra lengths = 13 points, x 2 arms (gmp, control) x 3 seeds, + 3 pre-trainings
    assert len(conditions.points(cfg)) == 13
    assert len(REGISTRY["conditions"].all_runs(cfg)) == 13 * 2 * 3 + 3


def final_rows(condition, gmp, rnd, seed=0, model="resnet8"):
    return [dict(model=model, condition=condition, criterion=c, fraction=f, seed=seed, effective_sparsity=s,
                 removal_acc=a) for c, pts in (("gmp", gmp), ("random", rnd)) for f, (s, a) in zip((0.3, 0.6), pts)]


def test_architectures_gap_interpolates_and_clamps_by_hand():
    # GMP: (0.3, 0.8), (0.5, 0.6). Random at 0.4 -> GMP 0.7, gap 0.2; at 0.6 -> clamped 0.6, gap 0.05. Mean 0.125.
    cold = final_rows("cold", [(0.3, 0.8), (0.5, 0.6)], [(0.4, 0.5), (0.6, 0.55)])
    # hot: random at 0.35 -> GMP 0.75, acc 0.7, gap 0.05; at 0.5 -> 0.6, acc 0.6, gap 0. Mean 0.025.
    hot = final_rows("hot", [(0.3, 0.8), (0.5, 0.6)], [(0.35, 0.7), (0.5, 0.6)])
    gap = architectures.gaps(pd.DataFrame(cold + hot))
    assert gap.set_index("condition").gap.to_dict() == pytest.approx({"cold": 0.125, "hot": 0.025})
    cfg = REGISTRY["architectures"].make_config("smoke")
    eff = architectures.effects(cfg, gap)
    assert eff.loc[("resnet8", 0)].c2_effect == pytest.approx(0.1)


def test_architectures_layer_kinds_and_conditions():
    kinds = architectures.layer_kinds("mobilenetv2", 8)
    assert {"depthwise", "pointwise", "conv", "linear"} <= set(kinds.values())
    assert set(architectures.layer_kinds("resnet8", 4).values()) <= {"conv", "pointwise", "linear"}
    cfg = REGISTRY["architectures"].make_config("paper")
    assert (cfg.condition(cfg.hot_lr, cfg.hot_wd), cfg.condition(cfg.cold_lr, cfg.cold_wd)) == ("hot", "cold")
    with pytest.raises(ValueError, match="resnet21"):
        REGISTRY["architectures"].make_config("paper", archs="resnet21:16,mobilenetv2:8")


def test_paper_pretraining_is_shared_between_conditions_and_architectures():
    pre = {e: {r for r in REGISTRY[e].all_runs(REGISTRY[e].make_config("paper")) if r.kind == "pretrain"}
           for e in ("conditions", "architectures")}
    assert len(pre["conditions"]) == 3 and pre["conditions"] <= pre["architectures"]
    assert len(REGISTRY["architectures"].all_runs(REGISTRY["architectures"].make_config("paper"))) == 2 * 3 * 2 * 2 * 2 + 6


def test_parallel_workers_give_the_same_records_as_one_process(tmp_path, monkeypatch):
    """Runs are deterministic per (config, seed, thread count): 2 single-threaded workers store exactly what
    one single-threaded process stores, pre-training first so fine-tuning finds its checkpoints."""
    import json

    from cascade import experiments

    small = dict(train_size=128, test_size=64, pretrain_epochs=1, finetune_epochs=1)
    out = {}
    for workers in (1, 2):
        monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / f"cache{workers}"))
        res = experiments.run("phenomenon", "smoke", quiet=True, root=tmp_path / f"r{workers}", workers=workers,
                              **small)
        out[workers] = {rec["key"]: json.dumps(rec["result"], sort_keys=True) for _, rec in res.records}
    assert out[1] == out[2]
    with pytest.raises(ValueError, match="workers=0"):
        experiments.run("phenomenon", "smoke", root=tmp_path / "r0", workers=0)
