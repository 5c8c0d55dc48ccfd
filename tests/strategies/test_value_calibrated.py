"""``value_calibrated``: per-blueprint thresholds fitted to the measured ground truth, checked
against a brute-force fit written here, its fallbacks, cross-fitting, and its export."""

from __future__ import annotations

import math

import numpy as np
import pytest

from esper_ab.errors import ConfigError
from esper_ab.export import load_gate
from esper_ab.gate import (
    GateConfig,
    MetricEvidence,
    WinnerEvidence,
    WinnerFile,
    calibration_hash,
    load_winner,
    write_winner,
)
from esper_ab.gradients import GradStats, TypeStats
from esper_ab.replay import calibration_data, fold_split, replay_decisions, synthetic_traces
from esper_ab.strategies import (
    CalibrationData,
    StatsBatch,
    ValueCalibration,
    get_strategy,
)

HOST = GradStats(9.0, 60.0, 1000, 2, 2, 0, 0, {"conv": TypeStats(9.0, 60.0, 1000, 2)})


def seed_stats(r: float, numel: int = 40) -> GradStats:
    """A seed whose baseline ratio R = RMS_seed / RMS_host is ``r``."""
    host_rms = math.sqrt(9.0 / 1000)
    sq = (r * host_rms) ** 2 * numel
    return GradStats(sq, math.sqrt(sq * numel), numel, 1, 1, 0, 0,
                     {"conv": TypeStats(sq, math.sqrt(sq * numel), numel, 1)})


def calibration(rows: list[tuple[str, list[float], float]], margin: float = 1.0):
    """``rows``: (blueprint, the seed's per-step ratios, its value); one seed per row."""
    records, keys, values = [], [], []
    for i, (bp, ratios, value) in enumerate(rows):
        for r in ratios:
            records.append((bp, seed_stats(r), HOST))
            keys.append(i)
            values.append(value)
    base = CalibrationData.from_records(records)
    v = np.array(values)
    return ValueCalibration(blueprint=base.blueprint, seed=base.seed, host=base.host,
                            seed_key=np.array(keys), value=v, valuable=v >= margin)


def brute_force(scores, valuable, value, objective):
    """The best objective over every admitted set a threshold can make (by hand)."""
    best = -math.inf
    for t in [*sorted(scores), math.inf]:
        admitted = [s >= t for s in scores]
        if objective == "balanced_accuracy":
            tp = sum(a and v for a, v in zip(admitted, valuable, strict=True))
            tn = sum((not a) and (not v) for a, v in zip(admitted, valuable, strict=True))
            score = (tp / sum(valuable) + tn / (len(valuable) - sum(valuable))) / 2
        else:
            score = sum(x for a, x in zip(admitted, value, strict=True) if a)
        best = max(best, score)
    return best


@pytest.mark.parametrize("objective", ["balanced_accuracy", "realized_utility"])
def test_the_fit_reaches_the_brute_force_optimum(objective):
    rng = np.random.default_rng(4)
    rows = []
    for bp in ("norm", "conv_light"):
        for _ in range(25):
            value = float(rng.normal(0.5, 2.0))
            level = math.exp(0.4 * value + rng.normal(0, 0.6)) * (0.1 if bp == "norm" else 2)
            rows.append((bp, list(level * np.exp(rng.normal(0, 0.2, 5))), value))
    strat = get_strategy("value_calibrated", objective=objective, min_seeds=3)
    strat.fit(calibration(rows))
    state = strat.fitted_state()
    for bp in ("norm", "conv_light"):
        mine = [(float(np.median(r)), v) for b, r, v in rows if b == bp]
        scores = [s for s, _ in mine]
        values = [v for _, v in mine]
        valuable = [v >= 1.0 for v in values]
        t = state["thresholds"][bp]
        admitted = [s >= t for s in scores]
        if objective == "balanced_accuracy":
            tp = sum(a and v for a, v in zip(admitted, valuable, strict=True))
            tn = sum((not a) and (not v) for a, v in zip(admitted, valuable, strict=True))
            got = (tp / sum(valuable) + tn / (len(valuable) - sum(valuable))) / 2
        else:
            got = sum(x for a, x in zip(admitted, values, strict=True) if a)
        assert state["rules"][bp] == "fitted"
        assert got == pytest.approx(brute_force(scores, valuable, values, objective))
        assert state["fit_objective"][bp] == pytest.approx(got)


def test_the_statistic_is_the_ratio_over_the_blueprints_threshold():
    rows = [("norm", [0.1], 2.0), ("norm", [0.2], 2.0), ("norm", [0.05], -1.0),
            ("norm", [0.02], -1.0)]
    strat = get_strategy("value_calibrated", min_seeds=2).fit(calibration(rows))
    t = strat.fitted_state()["thresholds"]["norm"]
    assert t == pytest.approx(math.sqrt(0.05 * 0.1))        # geometric midpoint 0.05 | 0.1
    from esper_ab.strategies import StatContext

    got = strat.statistic(seed_stats(0.3), HOST, StatContext(blueprint="norm"))
    assert got.value == pytest.approx(0.3 / t, rel=1e-9)
    assert strat.thresholds(2.0) == {"norm": pytest.approx(2 * t)}


def test_too_few_labels_fall_back_to_all_or_nothing_and_unseen_to_pooled():
    rows = ([("attention", [0.01], 3.0)] * 3 + [("attention", [0.02], -1.0)]      # 3 vs 1
            + [("bottleneck", [4.0], -2.0)] * 5                                    # none
            + [("norm", [x], v) for x, v in ((0.3, 2), (0.2, 2), (0.1, -1), (0.05, -1))])
    strat = get_strategy("value_calibrated", min_seeds=2).fit(calibration(rows))
    st = strat.fitted_state()
    assert st["rules"] == {"attention": "admit_all", "bottleneck": "admit_none",
                           "norm": "fitted"}
    assert st["thresholds"]["attention"] == 0.0 and st["thresholds"]["bottleneck"] is None
    assert st["n"]["attention"] == [3, 1] and st["n_seeds"] == 13
    from esper_ab.strategies import StatContext

    assert strat.statistic(seed_stats(1e-6), HOST, StatContext("attention")).value > 1
    assert strat.statistic(seed_stats(100.0), HOST, StatContext("bottleneck")).value == 0.0
    pooled = strat.statistic(seed_stats(1.0), HOST, StatContext("never_seen")).value
    t = st["pooled"]
    assert pooled == (0.0 if t is None else pytest.approx(1.0 / t, rel=1e-9))
    scores = [float(np.median(r)) for _, r, _ in rows]
    valuable = [v >= 1.0 for _, _, v in rows]
    admitted = [t is not None and sc >= t for sc in scores]
    tp = sum(a and v for a, v in zip(admitted, valuable, strict=True))
    tn = sum((not a) and (not v) for a, v in zip(admitted, valuable, strict=True))
    got = (tp / sum(valuable) + tn / (len(valuable) - sum(valuable))) / 2
    assert got == pytest.approx(brute_force(scores, valuable, None, "balanced_accuracy"))


def test_it_refuses_a_fit_without_measured_values():
    base = CalibrationData.from_records([("norm", seed_stats(0.1), HOST)] * 3)
    with pytest.raises(ConfigError, match="measured seed values"):
        get_strategy("value_calibrated").fit(base)
    strat = get_strategy("value_calibrated", statistic="mean_abs")
    with pytest.raises(ConfigError, match="statistic 'baseline'"):
        strat.load_fitted_state({"thresholds": {}, "pooled": 1.0, "statistic": "baseline"})


def test_replay_cross_fits_on_the_other_folds_only():
    traces = synthetic_traces(replicates=[0, 1, 2, 3], seeds_per_blueprint=3, seed=2)
    config = GateConfig(strategy="value_calibrated", threshold=1.0, min_epochs=2)
    split = fold_split([0, 1, 2, 3], 2)
    got = replay_decisions(traces, config, split=split).decisions
    for cal, ev in split.folds:
        strat = get_strategy("value_calibrated")
        strat.fit(calibration_data(traces, strat, cal))     # fitted on the other fold only
        fixed = GateConfig(strategy="value_calibrated", threshold=1.0, min_epochs=2,
                           calibration=strat.fitted_state())
        want = replay_decisions(traces.subset(ev), fixed).decisions
        mine = got[got["replicate"].isin(ev)].reset_index(drop=True)
        assert list(mine["passed"]) == list(want["passed"])
        assert np.allclose(mine["statistic"], want["statistic"], equal_nan=True)


def test_winner_yaml_carries_thresholds_and_calibration_hash(tmp_path):
    traces = synthetic_traces(replicates=[0, 1, 2], seeds_per_blueprint=3, seed=5)
    strat = get_strategy("value_calibrated", min_seeds=2)
    strat.fit(calibration_data(traces, strat, [0, 1, 2]))
    gate = GateConfig(strategy="value_calibrated", strategy_params={"min_seeds": 2},
                      threshold=1.5, min_epochs=2, calibration=strat.fitted_state())
    from esper_ab.export import _effective_thresholds

    ev = WinnerEvidence(experiment="e", sweep_run_id="p", trial_run_id="t", trial="t001",
                        fidelity="replay", baseline="esper_lite_baseline", replicates=[4, 5],
                        objective="balanced_accuracy",
                        metrics={"balanced_accuracy": MetricEvidence(estimate=0.7)},
                        pvalue_vs_baseline=0.01, pvalue_adjusted_vs_baseline=0.02,
                        adjustment="holm", verdict="t001 beats the baseline",
                        verdict_kind="winner")
    doc = WinnerFile(exported_at="2026-12-01T00:00:00+0000", gate=gate.to_dict(),
                     per_blueprint_thresholds=_effective_thresholds(gate),
                     selection={"objective": "balanced_accuracy"}, evidence=ev, versions={},
                     git_commit="x")
    path = write_winner(doc, tmp_path / "winner.yaml")
    back = load_winner(path)
    assert back.calibration_sha256 == calibration_hash(gate.calibration)
    assert back.gate["calibration"]["data_sha256"] == strat.fitted_state()["data_sha256"]
    assert back.per_blueprint_thresholds == pytest.approx(
        {bp: 1.5 * t for bp, t in strat.fitted_state()["thresholds"].items() if t is not None})
    assert None in strat.fitted_state()["thresholds"].values()     # an admit-none blueprint
    loaded = load_gate(path)
    a = replay_decisions(traces, gate).decisions
    b = replay_decisions(traces, loaded.config).decisions
    assert list(a["passed"]) == list(b["passed"])
    seeds = StatsBatch.from_stats([seed_stats(0.5)])
    assert loaded.strategy.statistic_batch(seeds, StatsBatch.from_stats([HOST])).value[0] >= 0
