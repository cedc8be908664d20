"""Analysis of the conditions (02), architectures (03) and magnitude (05) experiments on small hand-made records."""
import math

import pandas as pd
import pytest

from cascade import analysis, stats
from cascade import runs as R
from cascade.chapters import architectures, backbone, conditions, magnitude
from cascade.experiments import REGISTRY


# The least result each kind's schema accepts: records made up for a test must pass the store's checks on reading.
RESULTS = {"pretrain": {"epochs": 1, "history": [], "final": {"test_acc": 0.5}, "counts": {}},
           "finetune": {"tau0": 0.1, "sparsity": 0.1, "history": [], "final": {"test_acc": 0.5}, "tracker": []}}


def tracker_rows(rows, **labels):
    """Tidy tracker rows (epoch, step, layer, metric, value) with run labels as columns."""
    return pd.DataFrame(rows, columns=["epoch", "step", "layer", "metric", "value"]).assign(**labels)


def run_row(criterion, fraction, seed, **values):
    return dict(model="resnet8", criterion=criterion, fraction=fraction, seed=seed, lr=0.3, weight_decay=5e-3,
                schedule="cosine", batch_size=128, epochs=4, dead_bn=0.0, dead_filters=0.0, **{"shed_rms@0.05": 0.0},
                dense_acc=0.9, **values)


def test_decompose_cascade_temperature_relaxation_by_hand():
    """f = 0.1. Control: the kept set drifts to K_c = 0.05 below tau, all weights below tau rise from 0.1 to
    D_c = 0.3. Pruned: survivors' shed share K_p = 0.25. E = 0.9 * (0.25 - 0.05) / 0.1 = 1.8, T = 0.2, relax 0.05."""
    ctrl = run_row("none", 0.1, 0, **{"kept_shed@0.1": 0.05, "shed_gmp@0.1": 0.3}, test_acc=0.8, removal_acc=0.5)
    gmp = run_row("gmp", 0.1, 0, **{"kept_shed@0.1": 0.25, "shed_gmp@0.1": 0.25}, test_acc=0.85, removal_acc=0.87)
    other = run_row("gmp", 0.1, 1, **{"kept_shed@0.1": 0.25, "shed_gmp@0.1": 0.25}, test_acc=0.85, removal_acc=0.87)
    dec = analysis.decompose(pd.DataFrame([ctrl, gmp, other]), conditions.POINT)
    row = dec[dec.seed == 0].iloc[0]
    assert (row.cascade, row.temperature, row.relaxation) == pytest.approx((1.8, 0.2, 0.05))
    assert row.acc_drop == pytest.approx(0.03) and row.test_acc_control == 0.8
    assert math.isnan(dec[dec.seed == 1].cascade.iloc[0])  # no control for seed 1: nothing is made up


def test_decompose_random_counts_its_kept_sets_drift_from_where_it_started():
    """f = 0.3. Random's kept set starts with 0.28 of it below tau(0.3), in the run and in its control (the same
    set). At the end the control has 0.31 of it below (relaxation 0.03) and the random run 0.38: E = 0.7 * (0.38 -
    0.31) / 0.3 = 0.16333. The GMP run beside it starts at 0 (no `_start` column needed) and ends at 0.1."""
    ctrl = run_row("none", 0.3, 0, **{"kept_shed_random@0.3": 0.31, "kept_shed_random@0.3_start": 0.28,
                                      "kept_shed@0.3": 0.02, "shed_gmp@0.3": 0.35}, test_acc=0.8, removal_acc=0.8)
    rnd = run_row("random", 0.3, 0, **{"kept_shed_random@0.3": 0.38, "kept_shed_random@0.3_start": 0.28,
                                       "shed_gmp@0.3": 0.38}, test_acc=0.7, removal_acc=0.6)
    gmp = run_row("gmp", 0.3, 0, **{"kept_shed@0.3": 0.1, "shed_gmp@0.3": 0.1}, test_acc=0.85, removal_acc=0.84)
    dec = analysis.decompose(pd.DataFrame([ctrl, rnd, gmp]), conditions.POINT).set_index("criterion")
    assert (dec.loc["random", "cascade"], dec.loc["random", "relaxation"]) == pytest.approx((0.7 * 0.07 / 0.3, 0.03))
    assert (dec.loc["gmp", "cascade"], dec.loc["gmp", "relaxation"]) == pytest.approx((0.7 * 0.08 / 0.3, 0.02))
    assert dec.loc["random", "temperature"] == pytest.approx(0.05) == dec.loc["gmp", "temperature"]


def test_point_table_ci_is_the_t_interval_over_seeds():
    dec = pd.DataFrame([run_row("gmp", 0.1, s, cascade=c, temperature=0.0, relaxation=0.0, survivors_shed=0.0,
                                dead_bn_excess=0.0, test_acc=0.8, test_acc_control=0.8, removal_acc=0.8,
                                acc_drop=0.1, **{"shed_rms@0.05_excess": 0.0}) for s, c in ((0, 1.6), (1, 2.0))])
    row = conditions.point_table(dec, [0, 1]).iloc[0]
    half = 12.706205 * math.sqrt(0.08) / math.sqrt(2)  # t_{0.975,1} * sd / sqrt(n), sd of (1.6, 2.0) = sqrt(0.08)
    assert (row.cascade, row.cascade_lo, row.cascade_hi) == pytest.approx((1.8, 1.8 - half, 1.8 + half))
    assert conditions.point_table(dec, [0]).iloc[0].n_seeds == 1


def test_half_time_interpolates_between_records():
    # K: 0 at step 0, 0.1 at step 10, 0.3 at step 20 (epoch 2): half of 0.3 = 0.15 is reached at step 12.5
    curve = pd.DataFrame([dict(run_row("gmp", 0.1, 0), at=0.1, step=st, epoch=ep, kept_shed=k)
                          for st, ep, k in ((0, 0, 0.0), (10, 1, 0.1), (20, 2, 0.3))])
    t = conditions.half_times(curve)
    assert t.t_half.iloc[0] == pytest.approx(1.25) and t.final.iloc[0] == pytest.approx(0.3)


def test_conditions_config_and_paper_run_count():
    with pytest.raises(ValueError, match="0.5/0.002/cosine"):
        REGISTRY["conditions"].make_config("paper", finetune_lr=0.5)
    with pytest.raises(ValueError, match="'0.3/0.005/warm'"):
        REGISTRY["conditions"].make_config("paper", confirm="0.3/0.005/warm")
    cfg = REGISTRY["conditions"].make_config("paper", confirm="")
    # 2 lrs x 3 wds x 2 schedules = 12 map points + 1 batch size + 1 length = 14 points with (control, gmp 10%);
    # the 2 dose points add gmp at 4 more fractions; x 3 seeds; + 3 pre-trainings
    assert len(conditions.exploration_points(cfg)) == 14
    assert len(REGISTRY["conditions"].all_runs(cfg)) == (14 * 2 + 2 * 4) * 3 + 3
    confirm = REGISTRY["conditions"].make_config("paper")
    extra = set(REGISTRY["conditions"].all_runs(confirm)) - set(REGISTRY["conditions"].all_runs(cfg))
    assert len(extra) == 3 * (1 + 6) and {r.train.seed for r in extra if r.kind == "pretrain"} == {3, 4, 5}


def decomposed(model, condition, seed, gmp, rnd):
    """Rows as `analysis.decompose` returns them: (E, removal accuracy) of GMP and random at f = 0.3 and 0.6."""
    return [dict(model=model, condition=condition, criterion=c, fraction=f, seed=seed, cascade=e, removal_acc=a,
                 effective_sparsity=f) for c, pts in (("gmp", gmp), ("random", rnd)) for f, (e, a) in zip((0.3, 0.6), pts)]


def test_architectures_gap_closing_and_premise_by_hand():
    """Seed 0 on the ResNet. Cold: gaps 0.80 - 0.60 = 0.20 and 0.70 - 0.40 = 0.30, mean 0.25. Shed: 0.78 - 0.70 =
    0.08 and 0.66 - 0.60 = 0.06, mean 0.07; random's E there 0.3 and 0.5, mean 0.4. Closing 0.25 - 0.07 = 0.18."""
    rows = (decomposed("resnet8", "cold", 0, [(0, 0.8), (0, 0.7)], [(0.0, 0.6), (0.0, 0.4)])
            + decomposed("resnet8", "shed", 0, [(0, 0.78), (0, 0.66)], [(0.3, 0.7), (0.5, 0.6)]))
    seeds = architectures.per_seed(pd.DataFrame(rows))
    assert seeds.set_index(["condition", "fraction"]).gap.to_dict() == pytest.approx(
        {("cold", 0.3): 0.2, ("cold", 0.6): 0.3, ("shed", 0.3): 0.08, ("shed", 0.6): 0.06})
    close = architectures.closing(seeds).iloc[0]
    assert (close.gap_cold, close.gap_shed, close.e_random_shed, close.closing) == pytest.approx((0.25, 0.07, 0.4, 0.18))
    # random: 0.5 cold, 0.65 shed (+0.15); GMP: 0.75 cold, 0.72 shed (-0.03); closing = 0.15 + 0.03
    assert (close.random_change, close.gmp_change) == pytest.approx((0.15, -0.03))


def test_architectures_survival_and_verdicts_by_hand():
    """Survival: the control's removal accuracy within 0.02 of its accuracy before fine-tuning (means over seeds).
    C2 reads the ResNet's closings and needs random's E above δ_E = 0.1; C3, the ResNet's minus the MobileNet's by
    Welch, needs C2 to reproduce."""
    cfg = REGISTRY["architectures"].make_config("paper")
    ctrl = pd.DataFrame({"model": ["resnet8"] * 4, "condition": ["shed", "shed", "cold", "cold"], "seed": [0, 1] * 2,
                         "removal_acc": [0.88, 0.88, 0.86, 0.85], "start_acc": [0.89, 0.90, 0.89, 0.90],
                         "dense_acc": 0.9, "effective_sparsity": 0.0}).set_index(["model", "condition", "seed"])
    alive = backbone.survives(ctrl, ["model", "condition"], cfg.survival)  # shed: 0.895 - 0.88 = 0.015; cold: 0.04
    assert alive.to_dict() == {("resnet8", "cold"): False, ("resnet8", "shed"): True}
    close = pd.DataFrame({"model": ["resnet8"] * 3 + ["mobilenet_v3_small"] * 3, "seed": [0, 1, 2] * 2,
                          "closing": [0.05, 0.06, 0.07, 0.0, 0.01, 0.02], "random_change": [0.02, 0.03, 0.04, 0, 0, 0],
                          "e_random_shed": [0.3, 0.4, 0.5, 0.0, 0.0, 0.0]})
    c2, c3 = architectures.verdicts(cfg, close, alive)
    assert c2.premise.present and c2.effect == pytest.approx(0.06) and c2.word == "reproduces"
    assert c3.premise.present and c3.word == "reproduces"
    assert c3.effect == pytest.approx(0.05) and c3.values == pytest.approx((0.04, 0.05, 0.06))  # against 0.01
    # Welch with equal SDs 0.01 and n = 3 + 3: half-width t(3.99...) * 0.01 * sqrt(2/3)
    hw = stats.stats.t.ppf(0.975, 4) * 0.01 * math.sqrt(2 / 3)
    assert c3.ci95 == pytest.approx((0.05 - hw, 0.05 + hw), abs=1e-4)
    # random itself falls by 0.02-0.04 at the shed point: the gap closes because GMP falls further
    c2, c3 = architectures.verdicts(cfg, close.assign(random_change=[-0.02, -0.03, -0.04, 0, 0, 0]), alive)
    assert c2.word == "does not reproduce" and "GMP falls further" in c2.direction
    assert c2.summary.startswith("C2 does not hold on resnet8")
    assert c3.word == "not testable" and not c3.premise.present
    weak = close.assign(e_random_shed=[0.0, 0.01, 0.02, 0, 0, 0])
    assert [v.word for v in architectures.verdicts(cfg, weak, alive)] == ["not testable"] * 2
    dead = pd.Series({("resnet8", "shed"): False, ("resnet8", "cold"): True})
    c2, _ = architectures.verdicts(cfg, close, dead)
    assert c2.word == "not testable" and "does not survive" in c2.premise.statistic


def test_architectures_config_rejects_bad_values():
    cfg = REGISTRY["architectures"].make_config("paper")
    assert [cfg.condition(*p) for p in cfg.points().values()] == ["shed", "cold"]
    assert cfg.tracker().kept_random == cfg.tracker().kept_fractions == cfg.fractions
    with pytest.raises(ValueError, match="mobilenet='resnet21'"):
        REGISTRY["architectures"].make_config("paper", mobilenet="resnet21")
    with pytest.raises(ValueError, match="both '0.1/0.005/cosine'"):
        REGISTRY["architectures"].make_config("paper", cold_point="0.1/0.005/cosine")
    with pytest.raises(ValueError, match="delta_e=0"):
        REGISTRY["architectures"].make_config("paper", delta_e=0)


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


def test_chapter_01_repeats_the_analysis_at_02s_confirmed_condition():
    assert REGISTRY["phenomenon"].make_config("paper").hot == REGISTRY["conditions"].make_config("paper").confirm


def test_over_control_and_paired_effects_by_hand():
    rows = pd.DataFrame([dict(criterion=c, seed=s, acc=a) for c, s, a in
                         (("none", 0, 0.80), ("gmp", 0, 0.85), ("none", 1, 0.70), ("gmp", 1, 0.72))])
    out = analysis.over_control(rows, ["acc"], on=["seed"])
    assert out.set_index("seed").acc_excess.to_dict() == pytest.approx({0: 0.05, 1: 0.02})
    pruned, ctrl = out.set_index("seed").acc, out.set_index("seed").acc_control
    p = stats.paired(pruned, ctrl)
    half = 12.706205 * math.sqrt(0.00045) / math.sqrt(2)  # sd of (0.05, 0.02) = sqrt(0.00045)
    assert (p["effect"], p["ci_lo"], p["ci_hi"], p["n_seeds"]) == pytest.approx((0.035, 0.035 - half, 0.035 + half, 2))
    assert 0 < p["p"] < 1


def test_estimate_is_the_median_rate_of_stored_runs_of_the_same_model_times_the_cost(tmp_path):
    from cascade.experiments import Estimator
    from cascade.store import Store
    from cascade.train import TrainConfig

    store = Store("smoke", root=tmp_path)
    data = R.DataConfig("fashion-mnist", 256, 128)  # 256 images: 4 steps of 64 per epoch

    def pre(model, epochs, seed=0):
        return R.PretrainRun(data, model, 4, TrainConfig(epochs=epochs, batch_size=64, seed=seed))

    assert math.isnan(Estimator(store)(pre("resnet8", 1)))  # nothing stored to learn a rate from
    for run, seconds in ((pre("resnet8", 1), 2.0), (pre("resnet8", 2, 1), 8.0), (pre("resnet8", 1, 2), 3.0),
                         (pre("resnet20", 1), 100.0)):
        store.put(run, RESULTS["pretrain"], {"wall_time_s": seconds})
    estimate = Estimator(store)
    # resnet8 rates per image: 2/256, 8/512, 3/256 -> median 3/256; 3 epochs = 768 images
    assert estimate(pre("resnet8", 3, 5)) == pytest.approx(9.0)
    # no vgg11 stored: the median over all models, of 2, 4, 3 and 100 seconds per 256 images, is 3.5 per 256
    assert estimate(pre("vgg11", 1)) == pytest.approx(3.5)
    bad = pre("resnet8", 1, 9)
    store.put(bad, {}, {"wall_time_s": 1000.0})  # fails its kind's schema: corrupt, so it teaches no rate
    assert Estimator(store)(pre("resnet8", 3, 5)) == pytest.approx(9.0)


def test_rethinking_targets_arms_and_config_errors():
    from cascade.chapters import rethinking

    cfg = rethinking.EXPERIMENT.make_config("paper")
    assert list(cfg.targets(0)) == ["0.6/0.3/0.1"] and cfg.targets(0)["0.6/0.3/0.1"].stage_ratios == (0.6, 0.3, 0.1)
    arms = rethinking.arms(cfg, 1)
    ft, sb = arms["0.6/0.3/0.1", "fine-tuned"], arms["0.6/0.3/0.1", "Scratch-B"]
    assert sb.init_seed == 1001 and sb.budget == "flops" and sb.train == cfg.dense(1).train
    assert ft.train.lr == 0.001 and ft.train.lr_schedule == "constant" and ft.pretrain == cfg.dense(1)
    assert ft.train.epochs * 4 == cfg.pretrain_epochs == cfg.dense(1).train.epochs  # a quarter, as in the paper
    assert cfg.dense(1).data.test_size is None and ft.eval_every == cfg.dense(1).eval_every == 5
    tickets = rethinking.tickets(cfg, 1)
    ticket, random = tickets[0.01, "ticket"], tickets[0.01, "random"]
    assert ticket.pretrain.train.lr == ticket.train.lr == 0.01
    # R2's arms differ only in their init: one data order, not the dense run's
    assert ticket.train == random.train and ticket.train.seed == 2001 != ticket.pretrain.train.seed
    assert (ticket.init, random.init, random.init_seed) == ("rewind", "random", 1001)
    assert set(rethinking.tickets(cfg, 4)) == {(0.1, "ticket"), (0.1, "random")}  # small LR on seeds 0-1 only
    assert [c.train.epochs for c in rethinking.checks(cfg)] == [80, 80]
    # 5 seeds x (2 R1 arms + 2 R2 arms), 2 small-LR seeds x 2 arms, 2 checks; dense: 5 + 2 small-LR
    assert len(rethinking.EXPERIMENT.all_runs(cfg)) == 5 * 4 + 2 * 2 + 2 + 5 + 2
    with pytest.raises(ValueError, match=r"stage ratios '0.6/1.2' are invalid; allowed"):
        rethinking.EXPERIMENT.make_config("paper", stage_ratios="0.6/1.2")
    with pytest.raises(ValueError, match=r"ticket_lrs=\(0.01,\) is invalid; allowed"):
        rethinking.EXPERIMENT.make_config("paper", ticket_lrs="0.01")
    with pytest.raises(ValueError, match=r"check_epochs=40 is invalid; allowed: more than pretrain_epochs=40"):
        rethinking.EXPERIMENT.make_config("paper", check_epochs=40)
    with pytest.raises(ValueError, match=r"small_lr_seeds=6 is invalid; allowed: 0 to seeds=5"):
        rethinking.EXPERIMENT.make_config("paper", small_lr_seeds=6)
    with pytest.raises(ValueError, match=r"check_seeds=0 is invalid; allowed: 1 to seeds=5"):
        rethinking.EXPERIMENT.make_config("paper", check_seeds=0)
    labels = tickets[0.1, "ticket"].labels()  # the replicate is the dense model's seed; the data order its own
    assert (labels["seed"], labels["data_seed"]) == (1, 2001)
    with pytest.raises(ValueError, match=r"eval_every=0 is invalid; allowed: an int >= 1"):
        rethinking.EXPERIMENT.make_config("paper", eval_every=0)


def test_rethinking_verdicts_by_hand():
    from cascade.chapters import rethinking

    cfg = rethinking.EXPERIMENT.make_config("smoke", seeds=3, check_seeds=2)
    # Scratch-B beats fine-tuned by 0.02, 0.03, 0.04: its CI lies above -delta, so R1 holds. The ticket beats random
    # by 0.00, 0.01, 0.02 at lr 0.1: mean 0.01, whose CI (t = 4.303, sd 0.01, n 3: +-0.0248) straddles
    # delta = 0.005: R2 is inconclusive. The check models gain 0.01 and 0.02 over the recipe's: 0.015 > delta fails.
    acc = {}
    for seed in cfg.seed_list():
        for (target, arm), run in rethinking.arms(cfg, seed).items():
            acc[run] = 0.8 + (0.02 + 0.01 * seed if arm == "Scratch-B" else 0.0)
        for (lr, init), run in rethinking.tickets(cfg, seed).items():
            acc[run] = 0.7 + (0.01 * seed if init == "ticket" and lr == 0.1 else 0.0)
    counts = {"macs": 10, "macs_kept": 5, "params": 8, "params_kept": 4}
    # every run evaluated at epochs 0, 1 and 2 (smoke: eval_every=1), climbing 0.01 over its last epoch
    records = [(run, {"key": run.key, "result": {
        "final": {"test_acc": a}, "counts": counts, "macs_dense": 10, "epochs": 2, "sparsity": 0.5,
        "history": [{"epoch": e, "test_acc": a - 0.01 * (2 - e)} for e in range(3)]}})
        for run, a in acc.items()]
    dense = {p: 0.9 for p in {r.pretrain for r in acc}} | {c: 0.91 + 0.01 * c.train.seed for c in rethinking.checks(cfg)}
    records += [(p, {"key": p.key, "result": {"final": {"test_acc": a}, "counts": counts}}) for p, a in dense.items()]
    tables, (r1, r2) = rethinking.analyze(cfg, records)
    assert r1.word == "reproduces" and r1.effect == pytest.approx(0.03)
    assert r2.word == "inconclusive" and r2.effect == pytest.approx(0.01)
    assert r2.ci95 == pytest.approx((0.01 - 0.0248, 0.01 + 0.0248), abs=1e-4)
    assert tables["r1_effects"].set_index("arm").loc["Scratch-B", "effect"] == pytest.approx(0.03)
    check = tables["check"].iloc[0]
    assert check.gain == pytest.approx(0.015) and not check.passes and check.n_seeds == 2
    assert "fails its own check" in r1.summary and "+0.0150" in r2.summary
    assert r1.condition.endswith("; dense model under-trained by its check")  # the claims table shows it
    diffs = tables["differences"].set_index(["study", "target", "seed"]).difference
    assert diffs["R1", "0.6/0.3/0.1", 2] == pytest.approx(0.04) and diffs["R2", "lr 0.1", 1] == pytest.approx(0.01)
    assert diffs["R2", "lr 0.01", 0] == pytest.approx(0.0) and ("R2", "lr 0.01", 1) not in diffs.index
    # smoke: 64-image batches of 256 images are 4 steps an epoch
    assert set(tables["rows"].steps) == {8} and len(tables["dense"]) == 3 + 1 + 2
    assert tables["tails"].gain.tolist() == pytest.approx([0.01] * 3) and set(tables["tails"].to_epoch) == {2}


def test_makespan_schedules_the_longest_chain_first_by_hand():
    from dataclasses import dataclass

    from cascade.experiments import makespan

    @dataclass(frozen=True)
    class Job:
        name: str
        after: tuple = ()

        def deps(self):
            return self.after

    a, b = Job("a"), Job("b")
    c = Job("c", after=(a,))
    seconds = {a: 1.0, b: 5.0, c: 10.0}
    assert makespan([a, b, c], seconds, 1) == 16.0  # one worker: the sum
    assert makespan([a, b, c], seconds, 2) == 11.0  # a then c on one worker, b beside them
    assert makespan([c], seconds, 2) == 10.0  # a dependency outside the work is done already
    assert makespan([], seconds, 2) == 0.0


def test_price_lists_each_task_with_why_and_its_estimate_and_computes_nothing(tmp_path, monkeypatch):
    """Smoke 01: 2 dense models with 5 fine-tunings each. Stored: the first dense model (4 s) and one of its
    fine-tunings (2 s), with no checkpoints. Every run costs 512 images, so a dense model is priced 4 s and a
    fine-tuning 2 s: 2 dense + 9 fine-tunings = 26 s of compute; on 2 workers the dense models go side by side
    (4 s), then 9 fine-tunings of 2 s on 2 workers take 5 rounds: 14 s."""
    from cascade import experiments
    from cascade.store import Store

    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "cache"))
    exp = experiments.get("phenomenon")
    runs = exp.all_runs(exp.make_config("smoke"))
    empty = experiments.price("phenomenon", "smoke", root=tmp_path)
    assert (empty["runs"], empty["stored"], empty["estimated_s"], empty["wall_s"]) == (12, 0, None, None)
    assert [(t["kind"], t["key"], t["why"]) for t in empty["tasks"]] == [(r.kind, r.key, R.RECORD_MISSING)
                                                                         for r in runs]
    store = Store("smoke", root=tmp_path)
    pre, ft = runs[0], runs[1]
    assert (pre.kind, ft.kind, ft.deps()) == ("pretrain", "finetune", (pre,))
    store.put(pre, RESULTS["pretrain"], {"wall_time_s": 4.0})
    store.put(ft, RESULTS["finetune"], {"wall_time_s": 2.0})
    price = experiments.price("phenomenon", "smoke", root=tmp_path, workers=2)
    assert {k: price[k] for k in ("experiment", "profile", "runs", "stored", "workers")} == {
        "experiment": "phenomenon", "profile": "smoke", "runs": 12, "stored": 2, "workers": 2}
    why = {t["key"]: t["why"] for t in price["tasks"]}
    assert why.pop(pre.key) == R.CHECKPOINT_MISSING and ft.key not in why  # its fine-tunings need its weights
    assert set(why.values()) == {R.RECORD_MISSING} and len(why) == 10
    assert {t["kind"]: t["estimated_s"] for t in price["tasks"]} == {"pretrain": 4.0, "finetune": 2.0}
    assert (price["estimated_s"], price["wall_s"]) == (26.0, 14.0)
    assert experiments.price("phenomenon", "smoke", root=tmp_path)["wall_s"] == 26.0  # one worker: the sum
    assert sorted(p.name for p in (tmp_path / "smoke").iterdir()) == ["finetune", "pretrain"]
    assert store.keys("finetune") == {ft.key} and not (tmp_path / "cache").exists()  # nothing computed
    with pytest.raises(ValueError, match="workers=0"):
        experiments.price("phenomenon", "smoke", root=tmp_path, workers=0)


def test_verdict_words_half_width_premise_and_direction_by_hand():
    from cascade import stats

    # 0.35, 0.70, 1.05: mean 0.7, SD 0.35, t(2) = 4.303: half-width 4.303 * 0.35 / sqrt(3) = 0.8695
    v = stats.verdict("X", [0.35, 0.70, 1.05], 0.5, "X {word}", units="")
    assert v.word == "inconclusive" and v.holds is None and v.n_seeds == 3
    assert v.ci95 == pytest.approx((0.7 - 0.8695, 0.7 + 0.8695), abs=2e-4)  # stored to 4 decimals
    assert v.expected_half_width == pytest.approx(0.8695, abs=2e-4)  # no planned SD: the observed one
    assert "positive in 3 of 3 seeds" in v.direction and "leaning toward the claim" in v.direction
    assert v.summary == "X is inconclusive"
    assert stats.verdict("X", [0.35, 0.70, 1.05], 0.5, "", planned_sd=0.1).expected_half_width == \
        pytest.approx(4.303 * 0.1 / 3 ** 0.5, abs=1e-3)
    assert stats.verdict("X", [1.0, 1.1, 1.2], 0.5, "").word == "reproduces"
    assert stats.verdict("X", [0.0, 0.1, 0.2], 0.5, "").word == "does not reproduce"
    low = stats.verdict("X", [0.0, 0.1, 0.2], 0.5, "", above=False)  # the claim's side is below delta
    assert low.word == "reproduces" and "lies below" in low.direction
    absent = stats.Premise.of("cascade E", [-0.1, 0.0, 0.1], 0.5)
    assert absent.present is False and absent.effect == pytest.approx(0.0)
    nt = stats.verdict("X", [1.0, 1.1, 1.2], 0.5, "X {word}", premise=absent)
    assert nt.word == "not testable" and nt.summary == "X is not testable" and "premise is absent" in nt.direction
    row = nt.as_dict()
    assert row["verdict"] == "not testable" and row["premise"]["present"] is False and row["delta"] == 0.5
    assert stats.verdict("X", [1.0, 1.1, 1.2], 0.5, "", premise=stats.Premise.of("E", [1, 1.1, 1.2], 0.5)).word \
        == "reproduces"
    assert stats.seeds_for(0.009, 0.005) == 15  # the half-width t(n-1) 0.009 / sqrt(n) first falls to 0.005 at 15
    assert stats.half_width(0.009, 14) > 0.005 >= stats.half_width(0.009, 15)


def test_welch_interval_and_an_unpaired_verdict_by_hand():
    """a = 1, 2, 3 against b = 0, 0, 0: difference 2, SE = 1 / sqrt(3) (b has no spread), Welch df = 2, so the
    interval is 2 -+ t(2) / sqrt(3) = 2 -+ 2.484. Each replicate of a is shown against b's mean."""
    m, lo, hi = stats.welch([1, 2, 3], [0, 0, 0])
    assert (m, lo, hi) == pytest.approx((2, 2 - 4.3027 / math.sqrt(3), 2 + 4.3027 / math.sqrt(3)), abs=1e-4)
    v = stats.verdict("X", [1, 2, 3], 0.5, "{word}", against=[0, 0, 0], planned_sd=1.0)
    assert v.word == "inconclusive" and v.values == (1, 2, 3) and v.effect == 2
    assert v.expected_half_width == pytest.approx(2.7764 * math.sqrt(2 / 3), abs=1e-3)  # t(4) sqrt(1/3 + 1/3)
    assert stats.verdict("X", [3, 4, 5], 0.5, "{word}", against=[0, 1, 2]).word == "reproduces"
    assert math.isnan(stats.welch([1], [0, 1])[1]) and stats.welch([1], [0, 1])[0] == 0.5


def test_finetune_eval_every_is_checked_before_compute():
    run = REGISTRY["architectures"].all_runs(REGISTRY["architectures"].make_config("smoke"))[-1]
    assert run.kind == "finetune" and run.eval_every == 2 and run.recompute_bn
    with pytest.raises(ValueError, match=r"eval_every=0 is invalid; allowed: an int >= 1"):
        R.FinetuneRun(run.pretrain, run.prune, run.finetune, run.tracker, eval_every=0)


def test_magnitude_training_macs_by_hand():
    """312 steps of batch 128. One-shot: 1,000 kept MACs throughout, 3 x 128 x 312 x 1,000. Scheduled: dense
    (4,000) until step 39, then 3,000 until 78, then 1,000: 3 x 128 x (39 x 4,000 + 39 x 3,000 + 234 x 1,000)."""
    tracker = [[0, 0, "global", "pruned", 0.0], [4, 312, "global", "pruned", 0.8]]  # its last record: step 312
    one = {"result": {"macs": 4000, "macs_kept": 1000, "tracker": tracker}}
    assert magnitude.training_macs(one, 128) == 3 * 128 * 312 * 1000
    path = [[39, 50, 50, 0, 3000], [78, 80, 20, 10, 1000]]
    sched = {"result": {"macs": 4000, "macs_kept": 1000, "prune_path": path, "tracker": tracker}}
    assert magnitude.training_macs(sched, 128) == 3 * 128 * (39 * 4000 + 39 * 3000 + 234 * 1000)


@pytest.mark.parametrize("acc, ratio, word", [
    ((0.02, 0.04), (0.98, 1.02), "reproduces"),  # better at equal compute
    ((-0.005, 0.01), (0.8, 0.9), "reproduces"),  # as good at clearly less compute
    ((0.02, 0.04), (1.06, 1.1), "inconclusive"),  # better, but at more compute
    ((-0.03, -0.02), (0.5, 0.6), "does not reproduce"),  # worse by more than delta, whatever the compute
    ((-0.005, 0.005), (0.99, 1.0), "does not reproduce"),  # not better, and no compute saved
    ((-0.005, 0.02), (0.99, 1.0), "inconclusive"),  # may be better
    ((-0.02, 0.005), (0.8, 0.9), "inconclusive"),  # less compute, but may be worse by more than delta
])
def test_magnitude_c5_rule(acc, ratio, word):
    cfg = REGISTRY["magnitude"].make_config("paper")  # delta 0.01, margin 0.05
    assert magnitude.c5_word(cfg, acc, ratio) == word


def test_magnitude_c4_premise_and_verdict_by_hand():
    """Random sheds (E 0.3, 0.32, 0.34 at the shed point: CI above 0.1), layerwise does not (E 0.0): the effect is
    random's closing only, (0.05, 0.06, 0.07) per seed; its own change is positive, so C4 reproduces. With no cell
    shedding, C4 is not testable, and the effect averages both criteria."""
    cfg = REGISTRY["magnitude"].make_config("paper")
    cell = pd.DataFrame([dict(criterion=c, fraction=0.8, seed=s, e_shed=e, closing=close, own_change=0.01,
                              gap_cold=0.1, gap_shed=0.1 - close, gmp_change=0.0)
                         for c, es, closes in (("layerwise", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
                                               ("random", (0.3, 0.32, 0.34), (0.05, 0.06, 0.07)))
                         for s, e, close in zip(range(3), es, closes)])
    pairs = pd.DataFrame({"fraction": 0.8, "lr_schedule": ["cosine"] * 3 + ["constant"] * 3, "seed": [0, 1, 2] * 2,
                          "accuracy": [0.0, 0.001, -0.001, 0.05, 0.06, 0.07], "compute": 1.0})  # C5 reads cosine
    alive = pd.Series({"shed": True, "cold": True})
    prem = magnitude.premise_cells(cfg, cell)
    assert prem.sheds.tolist() == [False, True]
    c4, c5 = magnitude.verdicts(cfg, cell, prem, alive, pairs)
    assert c4.word == "reproduces" and c4.values == pytest.approx((0.05, 0.06, 0.07)) and c4.premise.present
    assert c5.word == "does not reproduce" and "compute ratio of 1.000" in c5.direction
    c4, _ = magnitude.verdicts(cfg, cell, prem, pd.Series({"shed": False, "cold": True}), pairs)
    assert c4.word == "not testable" and "does not survive" in c4.premise.statistic
    flat = cell.assign(e_shed=0.0)
    c4, _ = magnitude.verdicts(cfg, flat, magnitude.premise_cells(cfg, flat), alive, pairs)
    assert c4.word == "not testable" and c4.values == pytest.approx((0.025, 0.03, 0.035))
    falls = cell.assign(own_change=-0.02)
    c4, _ = magnitude.verdicts(cfg, falls, prem, alive, pairs)
    assert c4.word == "does not reproduce" and "GMP falls further" in c4.direction
    assert c4.summary.startswith("C4 does not hold")


def test_magnitude_config_rejects_bad_values():
    cfg = REGISTRY["magnitude"].make_config("paper")
    assert [cfg.condition(*p) for p in cfg.points().values()] == ["shed", "cold", "constant"]
    assert cfg.tracker().kept_layerwise == cfg.tracker().kept_random == cfg.fractions and cfg.tracker().gmp_jaccard
    # per seed: 2 points x (control + 3 criteria), then 6 schedule arms at each final sparsity, less the one-shot at
    # the shed point and 80%, which is C4's GMP arm
    runs = [r for r in REGISTRY["magnitude"].all_runs(cfg) if r.kind == "finetune"]
    assert len(runs) == len(set(runs)) == 3 * (2 * 4 + 5 + 6)
    with pytest.raises(ValueError, match=r"criteria=\('random', 'gmp'\) is invalid"):
        REGISTRY["magnitude"].make_config("paper", criteria=("random", "gmp"))
    with pytest.raises(ValueError, match=r"explore_targets=\(0.8,\) are invalid; allowed: values in \(0, 1\) other"):
        REGISTRY["magnitude"].make_config("paper", explore_targets=(0.8,))
    with pytest.raises(ValueError, match="target=0.5 is invalid"):
        REGISTRY["magnitude"].make_config("paper", target=0.5)
    with pytest.raises(ValueError, match="allowed: three different points"):
        REGISTRY["magnitude"].make_config("paper", constant_point="0.1/0.0005/cosine")
    with pytest.raises(ValueError, match="compute_margin=0"):
        REGISTRY["magnitude"].make_config("paper", compute_margin=0)
    with pytest.raises(ValueError, match=r"criteria=\('gmp', 'random', 'random'\) is invalid.*each once"):
        REGISTRY["magnitude"].make_config("paper", criteria=("gmp", "random", "random"))
    with pytest.raises(ValueError, match=r"point 0.3/0.005/cosine is invalid; allowed: shed 0.1/0.005/cosine"):
        cfg.condition(0.3, 0.005, "cosine")
