"""The trial core (no Ray, no MLflow), pinned against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from esper_ab.export import calibration_hash
from esper_ab.gate import PRESETS, Gate
from esper_ab.replay import ReplayEvidence, synthetic_traces
from esper_ab.trial import BASELINE_LABEL, TrialParams, iter_trial, metric_key, run_trial

TRACES = synthetic_traces(replicates=range(4), epochs=12, steps_per_epoch=2,
                          seeds_per_blueprint=2, seed=3)
EXP = TrialParams("exponent", {"a": 0.25}, threshold=0.03, window="mean")


@pytest.fixture(scope="module")
def result():
    return run_trial(EXP, ReplayEvidence(TRACES), baseline="esper_lite_baseline",
                     n_boot=50, n_perm=50)


def test_per_blueprint_rates_match_pandas(result):
    cand = result.decisions[result.decisions["strategy"] == "candidate"]
    for bp, g in cand.groupby("blueprint"):
        assert result.metrics[metric_key("pass_rate", bp)] == pytest.approx(g["passed"].mean())
        val = g[g["valuable"]]
        if len(val):
            assert result.metrics[metric_key("tpr", bp)] == pytest.approx(val["passed"].mean())
        else:
            assert math.isnan(result.metrics[metric_key("tpr", bp)])


def test_pooled_metrics_match_sklearn(result):
    cand = result.decisions[result.decisions["strategy"] == "candidate"]
    y, p = cand["valuable"].astype(int), cand["passed"].astype(int)
    tn, fp, fn, tp = confusion_matrix(y, p, labels=[0, 1]).ravel()
    assert result.metrics["g2.tpr"] == pytest.approx(tp / (tp + fn))
    assert result.metrics["g2.fpr"] == pytest.approx(fp / (fp + tn))
    assert result.metrics["g2.balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(y, p))


def test_equalized_odds_gap_by_hand(result):
    cand = result.decisions[result.decisions["strategy"] == "candidate"]
    tpr = cand[cand["valuable"]].groupby("blueprint")["passed"].mean()
    fpr = cand[~cand["valuable"]].groupby("blueprint")["passed"].mean()
    expected = max(tpr.max() - tpr.min(), fpr.max() - fpr.min())
    assert result.metrics["g2.equalized_odds_gap"] == pytest.approx(expected)


def test_decisions_equal_the_online_gate(result):
    """Spot check through the gate's own tracker on one seed's recorded steps."""
    from esper_ab.gate import StepMeasurement
    from esper_ab.gradients import GradStats

    trace = TRACES.trace
    seed_id = "slot0/norm/1"
    rows = trace[(trace["replicate"] == 2) & (trace["seed_id"] == seed_id)]

    def stats(r, prefix):
        return GradStats(sum_sq=r[f"{prefix}sum_sq"], sum_abs=r[f"{prefix}sum_abs"],
                         numel=int(r[f"{prefix}numel"]), n_tensors=int(r[f"{prefix}n_tensors"]),
                         n_with_grad=int(r[f"{prefix}n_with_grad"]))

    epochs = [[StepMeasurement(stats(r, "seed_"), stats(r, "host_"),
                               first_order=r["first_order"]) for _, r in g.iterrows()]
              for _, g in rows.groupby("epoch")]
    online = Gate(EXP.gate_config()).decide(epochs, blueprint="norm")
    d = result.decisions
    row = d[(d["strategy"] == "candidate") & (d["replicate"] == 2) & (d["seed_id"] == seed_id)]
    assert bool(row["passed"].iloc[0]) == online.passed


def test_steps_are_cumulative_over_replicates():
    ev = ReplayEvidence(TRACES)
    steps = list(iter_trial(EXP, ev, baseline="esper_lite_baseline", n_boot=20, n_perm=20))
    assert [s.replicates_evaluated for s in steps] == [1, 2, 3, 4]
    assert [s.final for s in steps] == [False, False, False, True]
    # Step 2 is exactly a trial on the first two replicates alone (common random numbers).
    two = ReplayEvidence(TRACES.subset([0, 1]))
    alone = run_trial(EXP, two, baseline="esper_lite_baseline", n_boot=20, n_perm=20)
    for k in ("g2.pass_rate", "g2.tpr", "g2.fpr", "g2.pass_rate.norm"):
        assert steps[1].metrics[k] == pytest.approx(alone.metrics[k], nan_ok=True)
    resumed = list(iter_trial(EXP, ev, baseline="esper_lite_baseline", start=2, n_boot=20,
                              n_perm=20))
    assert [s.replicates_evaluated for s in resumed] == [3, 4]
    assert resumed[-1].metrics["g2.pass_rate"] == steps[-1].metrics["g2.pass_rate"]


def test_baseline_rows_are_shared_by_every_trial(result):
    other = run_trial(TrialParams("raw", {}, threshold=0.5), ReplayEvidence(TRACES),
                      baseline="esper_lite_baseline", n_boot=20, n_perm=20)
    cols = ["replicate", "seed_id", "passed", "statistic"]
    a = result.decisions[result.decisions["strategy"] == BASELINE_LABEL][cols].reset_index(drop=True)
    b = other.decisions[other.decisions["strategy"] == BASELINE_LABEL][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    base_rate = a["passed"].mean()
    assert result.metrics["g2.pass_rate.baseline"] == pytest.approx(base_rate)
    assert PRESETS["esper_lite_baseline"].threshold == 0.10


def test_calibrating_strategy_cross_fits_then_exports_a_full_fit():
    params = TrialParams("per_blueprint_threshold", {"quantile": 0.4}, threshold=1.0)
    ev = ReplayEvidence(TRACES)
    steps = list(iter_trial(params, ev, baseline="esper_lite_baseline", n_boot=20, n_perm=20))
    assert [s.replicates_evaluated for s in steps] == [2, 3, 4]     # folds = 2
    res = run_trial(params, ev, baseline="esper_lite_baseline", n_boot=20, n_perm=20)
    cal = res.gate_config.calibration
    assert cal is not None and set(cal["thresholds"]) >= {"norm", "attention"}
    # the deployed thresholds are the 0.4-quantiles of every replicate's baseline statistic
    from esper_ab.strategies import Baseline
    arr = TRACES.arrays()
    stat = Baseline().statistic_batch(arr.seed, arr.host, arr.context)
    bp = arr.context.blueprint
    ok = (stat.state == 0) & (bp == "norm")
    assert cal["thresholds"]["norm"] == pytest.approx(np.quantile(stat.value[ok], 0.4))
    assert len(calibration_hash(cal)) == 64


def test_a_strategy_with_no_measurement_gives_defined_rates_and_nan_auc():
    traces = synthetic_traces(replicates=range(2), epochs=12, steps_per_epoch=2,
                              seeds_per_blueprint=1, first_order_signal=None)
    res = run_trial(TrialParams("first_order_value", {"mode": "raw"}, threshold=0.0),
                    ReplayEvidence(traces), baseline="esper_lite_baseline", n_boot=20, n_perm=20)
    cand = res.decisions[res.decisions["strategy"] == "candidate"]
    assert cand["statistic"].isna().all() and not cand["passed"].any()
    assert res.metrics["g2.n_unmeasured"] == res.metrics["g2.n"] == len(cand)
    assert res.metrics["g2.pass_rate"] == 0.0
    pb = res.per_blueprint
    assert pb[pb["strategy"] == "candidate"]["auc"].isna().all()


def test_no_valuable_seed_makes_the_objective_nan():
    traces = synthetic_traces(replicates=range(2), epochs=12, steps_per_epoch=2,
                              seeds_per_blueprint=1, margin_pp=1e9)
    res = run_trial(EXP, ReplayEvidence(traces), baseline="esper_lite_baseline",
                    n_boot=20, n_perm=20)
    assert math.isnan(res.objective("tpr"))
    assert math.isnan(res.objective("balanced_accuracy"))
