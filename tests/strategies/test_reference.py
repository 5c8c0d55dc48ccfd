"""Every strategy against an independent numpy reference computed from raw gradient arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esper_ab.gradients import LAYER_TYPES, GradStats, TypeStats
from esper_ab.strategies import CalibrationData, StatContext, get_strategy

TYPES = list(LAYER_TYPES)


def stats_from_arrays(arrays: dict[str, list[np.ndarray]]) -> GradStats:
    by_type = {}
    for t, arrs in arrays.items():
        if arrs:
            flat = np.concatenate([a.ravel() for a in arrs])
            by_type[t] = TypeStats(float(np.sum(flat**2)), float(np.sum(np.abs(flat))),
                                   flat.size, len(arrs))
    flat = np.concatenate([a.ravel() for arrs in arrays.values() for a in arrs])
    n = sum(len(a) for a in arrays.values())
    return GradStats(float(np.sum(flat**2)), float(np.sum(np.abs(flat))), flat.size, n, n,
                     0, int(np.sum(flat == 0)), by_type)


def flat(arrays):
    return np.concatenate([a.ravel() for arrs in arrays.values() for a in arrs])


@st.composite
def group(draw, types=TYPES, min_types=1):
    chosen = draw(st.lists(st.sampled_from(types), min_size=min_types, max_size=3, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    out = {}
    for t in chosen:
        scale = 10 ** draw(st.floats(-3, 2))
        out[t] = [rng.normal(0, scale, size=draw(st.integers(1, 40)))
                  for _ in range(draw(st.integers(1, 3)))]
    return out


def ref_raw(s, h):
    return np.linalg.norm(flat(s)) / np.linalg.norm(flat(h))


def ref_baseline(s, h):
    # DOMAIN.md: the baseline equals the ratio of per-element RMS gradients.
    fs, fh = flat(s), flat(h)
    return np.sqrt(np.mean(fs**2)) / np.sqrt(np.mean(fh**2))


def ref_exponent(s, h, a):
    fs, fh = flat(s), flat(h)
    return np.linalg.norm(fs) / np.linalg.norm(fh) * (fh.size / fs.size) ** a


def ref_mean_abs(s, h):
    return np.mean(np.abs(flat(s))) / np.mean(np.abs(flat(h)))


def ref_per_layer_type(s, h, exclude_embedding=False):
    href = {t: np.concatenate([a.ravel() for a in arrs]) for t, arrs in h.items()
            if not (exclude_embedding and t == "embedding")}
    overall = np.sqrt(np.mean(np.concatenate(list(href.values())) ** 2))
    n_seed = flat(s).size
    total = 0.0
    for t, arrs in s.items():
        fs = np.concatenate([a.ravel() for a in arrs])
        ref = np.sqrt(np.mean(href[t] ** 2)) if t in href and np.any(href[t]) else overall
        total += fs.size / n_seed * np.sqrt(np.mean(fs**2)) / ref
    return total


@settings(max_examples=60, deadline=None)
@given(s=group(), h=group(), a=st.floats(0, 2))
def test_ratio_strategies_match_reference(s, h, a):
    seed, host = stats_from_arrays(s), stats_from_arrays(h)
    cases = {
        ("raw", ()): ref_raw(s, h),
        ("baseline", ()): ref_baseline(s, h),
        ("exponent", (("a", a),)): ref_exponent(s, h, a),
        ("mean_abs", ()): ref_mean_abs(s, h),
        ("per_layer_type", ()): ref_per_layer_type(s, h),
    }
    if any(t != "embedding" for t in h):
        cases[("per_layer_type", (("exclude_embedding", True),))] = ref_per_layer_type(s, h, True)
    for (name, params), expected in cases.items():
        got = get_strategy(name, **dict(params)).statistic(seed, host)
        assert got.state == "value", (name, got)
        assert got.value == pytest.approx(expected, rel=1e-9), name


def test_baseline_identity_equals_rms_ratio():
    rng = np.random.default_rng(0)
    s = {"conv": [rng.normal(size=50)]}
    h = {"conv": [rng.normal(size=500) * 3], "linear": [rng.normal(size=70)]}
    seed, host = stats_from_arrays(s), stats_from_arrays(h)
    got = get_strategy("baseline").statistic(seed, host).value
    assert got == pytest.approx(seed.rms_per_element / host.rms_per_element, rel=1e-12)
    assert got == pytest.approx(ref_baseline(s, h), rel=1e-12)


def _calibration(rng, blueprints, n_per):
    records, raw = [], []
    host = {"conv": [rng.normal(size=300)]}
    for bp, scale in blueprints.items():
        for _ in range(n_per[bp]):
            s = {"conv": [rng.normal(size=20) * scale * rng.lognormal(0, 0.5)]}
            records.append((bp, stats_from_arrays(s), stats_from_arrays(host)))
            raw.append((bp, ref_baseline(s, host)))
    return records, raw, host


def test_per_blueprint_threshold_matches_quantiles():
    rng = np.random.default_rng(3)
    records, raw, host = _calibration(rng, {"a": 0.1, "b": 2.0, "c": 1.0},
                                      {"a": 30, "b": 25, "c": 3})
    strat = get_strategy("per_blueprint_threshold", quantile=0.3, min_samples=5)
    strat.fit(CalibrationData.from_records(records))
    vals = {bp: np.array([v for b, v in raw if b == bp]) for bp in "abc"}
    pooled = np.quantile(np.array([v for _, v in raw]), 0.3)
    t = {"a": np.quantile(vals["a"], 0.3), "b": np.quantile(vals["b"], 0.3), "c": pooled}
    s = {"conv": [rng.normal(size=20)]}
    for bp in "abc":  # "c" has 3 < min_samples rows: it falls back to the pooled quantile
        got = strat.statistic(stats_from_arrays(s), stats_from_arrays(host),
                              StatContext(blueprint=bp))
        assert got.value == pytest.approx(ref_baseline(s, host) / t[bp], rel=1e-9)
    assert strat.thresholds() == pytest.approx({"a": t["a"], "b": t["b"]})


def test_zscore_matches_shrunk_moments():
    rng = np.random.default_rng(4)
    records, raw, host = _calibration(rng, {"a": 0.1, "b": 2.0}, {"a": 40, "b": 4})
    k = 7.0
    strat = get_strategy("zscore", shrinkage=k).fit(CalibrationData.from_records(records))
    logs = {bp: np.log([v for b, v in raw if b == bp]) for bp in "ab"}
    pooled = np.log([v for _, v in raw])
    s = {"conv": [rng.normal(size=20)]}
    x = np.log(ref_baseline(s, host))
    for bp in "ab":
        n = len(logs[bp])
        mu = (n * logs[bp].mean() + k * pooled.mean()) / (n + k)
        var = (n * logs[bp].var() + k * pooled.var()) / (n + k)
        got = strat.statistic(stats_from_arrays(s), stats_from_arrays(host),
                              StatContext(blueprint=bp))
        assert got.value == pytest.approx((x - mu) / np.sqrt(var), rel=1e-9)
    # An unseen blueprint is scored against the pooled calibration.
    got = strat.statistic(stats_from_arrays(s), stats_from_arrays(host), StatContext("zzz"))
    assert got.value == pytest.approx((x - pooled.mean()) / pooled.std(), rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(dldy=st.lists(st.floats(-5, 5), min_size=3, max_size=3),
       delta=st.lists(st.floats(-5, 5), min_size=3, max_size=3))
def test_first_order_value_matches_reference(dldy, delta):
    g, d = np.array(dldy), np.array(delta)
    fo = -float(g @ d)
    seed = stats_from_arrays({"conv": [np.ones(4)]})
    ctx = StatContext(first_order=fo, grad_out_norm=float(np.linalg.norm(g)),
                      delta_norm=float(np.linalg.norm(d)))
    assert get_strategy("first_order_value").statistic(seed, seed, ctx).value == fo
    cos = get_strategy("first_order_value", mode="cosine").statistic(seed, seed, ctx)
    if np.linalg.norm(g) > 0 and np.linalg.norm(d) > 0:
        assert cos.value == pytest.approx(fo / (np.linalg.norm(g) * np.linalg.norm(d)),
                                          rel=1e-9, abs=1e-12)
    else:
        assert cos.state == "unmeasured"
