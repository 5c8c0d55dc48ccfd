"""The conditional Optuna space: sampled values stay in the spec's ranges, one strategy's
parameters at a time; the grid enumerates the product; flat configs become valid gates."""

from __future__ import annotations

import math

import optuna
from sweep_helpers import space

from esper_ab.gate import Gate
from esper_ab.strategies import strategy_class
from esper_ab.study.space import define_by_run, grid_points, params_from_flat
from esper_ab.study.spec import parse_sweep_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC = parse_sweep_spec(space(
    strategies=[{"name": "exponent", "params": {"a": {"low": 0.2, "high": 0.8}},
                 "threshold": {"low": 0.01, "high": 1.0, "log": True}},
                {"name": "per_blueprint_threshold", "params": {"quantile": "declared",
                                                                "min_samples": 3}},
                {"name": "first_order_value", "params": {"mode": {"choices": ["cosine"]}}}],
    gate={"window": ["last", "median"], "ema_decay": [None, 0.5], "min_epochs": 10}))


def test_sampled_values_respect_the_spec():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    fn = define_by_run(SPEC)
    seen = set()
    for _ in range(60):
        trial = study.ask()
        flat = {**fn(trial), **trial.params}
        s = flat["strategy"]
        seen.add(s)
        own = {k for k in flat if "." in k and not k.startswith("gate.")}
        assert {k.split(".")[0] for k in own} == {s}     # only the chosen strategy's names
        if s == "exponent":
            assert 0.2 <= flat["exponent.a"] <= 0.8
            assert 0.01 <= flat["exponent.threshold"] <= 1.0
        elif s == "per_blueprint_threshold":
            assert flat["per_blueprint_threshold.min_samples"] == 3        # fixed
            decl = strategy_class(s).PARAMS[0]
            assert decl.low <= flat["per_blueprint_threshold.quantile"] <= decl.high
            thr = strategy_class(s).THRESHOLD
            assert thr.low <= flat["per_blueprint_threshold.threshold"] <= thr.high
        else:
            assert flat["first_order_value.mode"] == "cosine"
        assert flat["gate.window"] in ("last", "median")
        assert flat["gate.ema_decay"] in (None, 0.5)
        params = params_from_flat(flat, SPEC)
        Gate(params.gate_config())                                     # valid gate
        study.tell(trial, 0.0)
    assert seen == {"exponent", "per_blueprint_threshold", "first_order_value"}


def test_log_range_samples_spread_over_decades():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn = define_by_run(parse_sweep_spec(space(strategies=[{
        "name": "baseline", "threshold": {"low": 1e-3, "high": 10.0, "log": True}}])))
    values = []
    for _ in range(200):
        t = study.ask()
        fn(t)
        values.append(t.params["baseline.threshold"])
        study.tell(t, 0.0)
    below = sum(v < 0.1 for v in values) / len(values)   # log-uniform: P(v < 0.1) = 2/4
    assert 0.35 < below < 0.65


def test_grid_is_the_full_product():
    spec = parse_sweep_spec(space(
        strategies=[{"name": "exponent", "params": {"a": {"low": 0, "high": 1,
                                                          "grid_points": 3}},
                     "threshold": {"choices": [0.05, 0.1]}},
                    {"name": "raw", "threshold": 0.2}],
        gate={"window": ["last", "mean"]}, sampler={"kind": "grid"}))
    pts = grid_points(spec)
    # exponent: 3 a x 2 thresholds x 2 windows; raw: 1 x 2 windows
    assert len(pts) == 3 * 2 * 2 + 2
    assert len({tuple(sorted((k, str(v)) for k, v in p.items())) for p in pts}) == len(pts)
    exps = [p for p in pts if p["strategy"] == "exponent"]
    assert sorted({p["exponent.a"] for p in exps}) == [0.0, 0.5, 1.0]
    for p in pts:
        g = params_from_flat(p, spec).gate_config()
        assert math.isfinite(g.threshold)
