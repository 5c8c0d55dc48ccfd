"""One contract suite over every registered strategy (in the style of Optuna's sampler tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from esper_ab.errors import ConfigError, NotFittedError
from esper_ab.gradients import GradStats, TypeStats
from esper_ab.strategies import (
    CalibrationData,
    StatContext,
    StatsBatch,
    ValueCalibration,
    get_strategy,
    list_strategies,
)

ALL = list_strategies()


def gs(sum_sq, sum_abs, numel, types=("conv",), n_with_grad=None, n_nonfinite=0):
    share = 1.0 / len(types)
    by_type = {t: TypeStats(sum_sq * share, sum_abs * share, numel // len(types), 1)
               for t in types}
    n = len(types)
    return GradStats(sum_sq, sum_abs, numel, n, n if n_with_grad is None else n_with_grad,
                     n_nonfinite, 0, by_type)


HOST = gs(9.0, 60.0, 1000, types=("conv", "linear"))
SEED = gs(0.04, 1.2, 40)
CTX = StatContext(blueprint="conv_light", first_order=0.02, grad_out_norm=2.0, delta_norm=0.5)


def build(name: str, **params):
    strat = get_strategy(name, **params)
    if strat.needs_calibration:
        rng = np.random.default_rng(0)
        records = [(bp, gs(0.04 * rng.lognormal(0, 1), 1.2, 40), HOST)
                   for bp in ("conv_light", "norm") for _ in range(20)]
        cal = CalibrationData.from_records(records)
        if getattr(strat, "needs_labels", False):   # fitted against measured values
            value = rng.normal(0.0, 1.5, len(records))
            cal = ValueCalibration(blueprint=cal.blueprint, seed=cal.seed, host=cal.host,
                                   seed_key=np.arange(len(records)), value=value,
                                   valuable=value >= 1.0)
        strat.fit(cal)
    return strat


def scaled(s: GradStats, c: float) -> GradStats:
    by_type = {t: TypeStats(ts.sum_sq * c * c, ts.sum_abs * c, ts.numel, ts.n_tensors)
               for t, ts in s.by_type.items()}
    return GradStats(s.sum_sq * c * c, s.sum_abs * c, s.numel, s.n_tensors, s.n_with_grad,
                     s.n_nonfinite, s.n_zero_elements, by_type)


@pytest.fixture(params=ALL)
def name(request):
    return request.param


def test_registry_lists_every_strategy_of_domain():
    assert set(ALL) == {"raw", "baseline", "exponent", "mean_abs", "per_layer_type",
                        "per_blueprint_threshold", "zscore", "first_order_value",
                        "value_calibrated"}


def test_healthy_input_gives_a_finite_value(name):
    got = build(name).statistic(SEED, HOST, CTX)
    assert got.state == "value" and math.isfinite(got.value) and got.reason == "ok"


@pytest.mark.parametrize("c", [1e-3, 0.37, 12.0, 1e4])
def test_rescaling_all_gradients(name, c):
    strat = build(name)
    base = strat.statistic(SEED, HOST, CTX).value
    ctx = StatContext(CTX.blueprint, CTX.first_order * c, CTX.grad_out_norm * c, CTX.delta_norm)
    got = strat.statistic(scaled(SEED, c), scaled(HOST, c), ctx).value
    if strat.scale_invariant:
        assert got == pytest.approx(base, rel=1e-9)
    else:  # the raw first-order value scales with dL/dy: it must NOT be invariant
        assert got == pytest.approx(base * c, rel=1e-9)


def test_zero_parameter_seed_is_not_applicable(name):
    noop = GradStats(0.0, 0.0, 0, 0, 0)
    got = build(name).statistic(noop, HOST, CTX)
    assert got.state == "not_applicable" and got.value is None
    assert got.reason == "zero_param_seed"


def test_host_norm_zero_is_unmeasured_not_fail(name):
    if name == "first_order_value":
        got = build(name, mode="cosine").statistic(
            SEED, HOST, StatContext(first_order=0.0, grad_out_norm=0.0, delta_norm=1.0))
    else:
        got = build(name).statistic(SEED, gs(0.0, 0.0, 1000), CTX)
    assert got.state == "unmeasured" and got.value is None
    assert got.reason == "host_norm_zero"


def test_all_zero_seed_is_a_flagged_dead_seed(name):
    dead = gs(0.0, 0.0, 40)
    got = build(name).statistic(dead, HOST, StatContext("conv_light", 0.0, 1.0, 0.0))
    if name == "first_order_value":
        # The first-order value does not read gradients: s - h == 0 gives 0 (raw).
        assert got.state == "value" and got.value == 0.0
        return
    assert got.state == "value" and got.reason == "dead_seed"
    if name == "zscore":
        assert got.value < -10  # log(0) is floored, far below every calibrated mean
    else:
        assert got.value == 0.0


def test_no_gradient_is_unmeasured(name):
    if name == "first_order_value":
        got = build(name).statistic(SEED, HOST, StatContext())
        assert got.state == "unmeasured" and got.reason == "no_first_order"
        return
    got = build(name).statistic(gs(0.0, 0.0, 40, n_with_grad=0), HOST, CTX)
    assert got.state == "unmeasured" and got.reason == "no_seed_gradient"


@pytest.mark.parametrize("where", ["seed", "host"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_input_is_unmeasured(name, where, bad):
    if name == "first_order_value":
        got = build(name).statistic(SEED, HOST, StatContext(first_order=bad))
        assert got.state == "unmeasured"
        return
    broken = gs(bad, bad, 40 if where == "seed" else 1000, n_nonfinite=1)
    seed, host = (broken, HOST) if where == "seed" else (SEED, broken)
    got = build(name).statistic(seed, host, CTX)
    assert got.state == "unmeasured" and got.reason == f"nonfinite_{where}"


def test_clamp_keeps_unclamped_value_and_flag(name):
    got = build(name).statistic(SEED, HOST, CTX)
    limit = got.value - 1.0 if got.value > 0 else got.value - 1.0
    clamped = got.clamp(limit)
    assert clamped.clamped and clamped.value == limit and clamped.unclamped == got.value
    assert got.clamp(got.value + 1.0) == got and not got.clamp(None).clamped


def test_batch_equals_scalar(name):
    strat = build(name)
    rng = np.random.default_rng(1)
    seeds = [gs(rng.lognormal(), rng.lognormal(), 40) for _ in range(7)] + [GradStats(0, 0, 0, 0, 0)]
    batch = strat.statistic_batch(StatsBatch.from_stats(seeds), StatsBatch.from_stats([HOST] * 8),
                                  CTX.batch().__class__(
                                      blueprint=np.array(["conv_light"] * 8, dtype=object),
                                      first_order=np.full(8, 0.02), grad_out_norm=np.full(8, 2.0),
                                      delta_norm=np.full(8, 0.5)))
    for i, s in enumerate(seeds):
        assert batch.item(i) == strat.statistic(s, HOST, CTX)


def test_param_space_is_searchable(name):
    cls = type(get_strategy(name))
    for p in cls.param_space() + (cls.THRESHOLD,):
        if p.kind in ("float", "int"):
            assert p.low is not None and p.high is not None and p.low < p.high
            assert not p.log or p.low > 0
            lo, hi = p.valid_range()
            assert lo <= p.low and p.high <= hi
            p.validate(p.default, name)
        else:
            assert p.default in (p.choices or (True, False))


def test_calibrating_strategies_refuse_to_run_unfitted():
    for name in ("per_blueprint_threshold", "zscore", "value_calibrated"):
        with pytest.raises(NotFittedError, match="fit"):
            get_strategy(name).statistic(SEED, HOST, CTX)


@pytest.mark.parametrize("call,match", [
    (lambda: get_strategy("sqrt_magic"), "sqrt_magic"),
    (lambda: get_strategy("exponent", a=3.5), r"exponent\.a=3\.5"),
    (lambda: get_strategy("exponent", a=-0.1), r"exponent\.a=-0\.1"),
    (lambda: get_strategy("baseline", alpha=1), "alpha"),
    (lambda: get_strategy("baseline").validate_threshold(-0.2), "-0.2"),
    (lambda: get_strategy("first_order_value", mode="sine"), "sine"),
    (lambda: get_strategy("zscore", shrinkage="lots"), "lots"),
])
def test_bad_parameters_name_the_value(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
