"""The replay engine's fast paths change nothing: the per-batch memo of derived columns (on
for large traces only), the caches shared by a sweep's configs, the padded step-first layout
of ragged traces and the pickled layout all give the online gate's decisions exactly."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from test_replay import TRACES, fitted_gates, online_decisions

from esper_ab.gate import GateConfig
from esper_ab.replay import TraceSet, replay_decisions
from esper_ab.strategies import _ratio

FAST = [
    GateConfig(strategy="exponent", strategy_params={"a": 0.3}, threshold=0.05, window="mean",
               ema_decay=0.9, min_epochs=2, clamp=2.0),
    GateConfig(strategy="exponent", strategy_params={"a": 1.2, "legacy_edge_cases": True},
               threshold=0.5, window="last", min_epochs=1),
    GateConfig(strategy="exponent", strategy_params={"a": 0.0}, threshold=0.02,
               window="median", min_epochs=3),
    GateConfig(strategy="baseline", threshold=0.5, window="median", min_epochs=3),
    GateConfig(strategy="per_layer_type", strategy_params={"exclude_embedding": True},
               threshold=1.0, window="mean", min_epochs=1),
    GateConfig(strategy="mean_abs", threshold=0.8, window="last", min_epochs=4, clamp=1.5),
    GateConfig(strategy="zscore", strategy_params={"shrinkage": 5.0}, threshold=0.2,
               window="mean", ema_decay=0.8, min_epochs=2),
    GateConfig(strategy="per_blueprint_threshold", strategy_params={"quantile": 0.3},
               threshold=1.0, window="median", min_epochs=3),
]


def assert_equal_to_online(traces: TraceSet, config: GateConfig) -> int:
    result = replay_decisions(traces, config, folds=2)
    fitted = fitted_gates(traces, config, result.split) if result.split else None
    online = online_decisions(traces, config, fitted)
    assert len(result.decisions) == len(online)
    passed = 0
    for row in result.decisions.itertuples(index=False):
        d = online[(row.replicate, row.seed_id)]
        assert bool(row.passed) == d.passed, row.seed_id
        passed += d.passed
        if d.passed:
            assert row.pass_epoch == d.epoch
        if d.value is None:
            assert math.isnan(row.statistic)
        else:
            assert row.statistic == d.value          # exact
        assert row.reason == d.reason and row.statistic_state == d.state
    return passed


@pytest.mark.parametrize("config", FAST, ids=[f"{c.strategy}-{c.window}" for c in FAST])
def test_memoized_large_batch_paths_equal_the_online_gate(config, monkeypatch):
    # The trace is small; lowering the size threshold runs the large-batch paths on it
    # (derived columns kept per batch, the exponent's two-pass product, distinct ratios).
    monkeypatch.setattr(_ratio, "_MEMO_MIN_ROWS", 1)
    traces = TraceSet(TRACES.seeds, TRACES.trace)     # a fresh layout
    assert assert_equal_to_online(traces, config) >= 0


def test_ragged_trace_equals_the_online_gate():
    # Steps missing at random (every seed-epoch keeps its first step: an epoch without any
    # step is another matter, the online tracker is then never told it happened).
    rng = np.random.default_rng(7)
    first = TRACES.trace["step"] % 3 == 0
    trace = TRACES.trace[first | (rng.random(len(TRACES.trace)) > 0.4)].reset_index(drop=True)
    traces = TraceSet(TRACES.seeds, trace)
    arr = traces.arrays()
    assert not arr.dense and arr.mask.sum() == (trace["blueprint"] != "placebo").sum()
    n_passed = sum(assert_equal_to_online(traces, c) for c in FAST)
    assert n_passed > 0


def test_shared_caches_do_not_change_a_config(monkeypatch):
    monkeypatch.setattr(_ratio, "_MEMO_MIN_ROWS", 1)
    configs = FAST + [GateConfig(strategy="exponent", strategy_params={"a": a}, threshold=t,
                                 window=w, ema_decay=e, min_epochs=m)
                      for a, t, w, e, m in [(0.3, 0.2, "mean", None, 3),
                                            (0.7, 0.05, "mean", 0.5, 1),
                                            (0.3, 0.05, "last", 0.9, 2)]]
    shared = TraceSet(TRACES.seeds, TRACES.trace)
    for _ in range(2):                 # every config twice, in between the others
        for config in configs:
            fresh = replay_decisions(TraceSet(TRACES.seeds, TRACES.trace), config).decisions
            again = replay_decisions(shared, config).decisions
            assert fresh.equals(again), config


def test_a_pickled_layout_travels_without_its_caches():
    traces = TraceSet(TRACES.seeds, TRACES.trace)
    before = replay_decisions(traces, FAST[0]).decisions
    arr = traces.arrays()
    assert len(arr.caches["statistics"]) == 1
    copy = pickle.loads(pickle.dumps(traces))
    assert len(copy.arrays().caches["statistics"]) == 0        # the layout came along
    assert np.array_equal(copy.arrays().row_pos, arr.row_pos)
    assert replay_decisions(copy, FAST[0]).decisions.equals(before)
