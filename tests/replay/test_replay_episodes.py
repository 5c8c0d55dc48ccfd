"""Replay equals the online gate on real recorded episodes (not only on synthetic traces)."""

from __future__ import annotations

import math

import pytest

from esper_ab.episodes.runner import episode_config, gate_decisions, run_episode
from esper_ab.gate import Gate, GateConfig
from esper_ab.replay import TraceSet, replay_decisions

GATES = [
    GateConfig(strategy="baseline", strategy_params={"legacy_edge_cases": True},
               threshold=0.10, clamp=10.0, min_epochs=3, fail_dead_seeds=False),
    GateConfig(strategy="exponent", strategy_params={"a": 0.2}, threshold=0.05,
               window="mean", ema_decay=0.9, min_epochs=2),
    GateConfig(strategy="per_layer_type", threshold=0.5, window="median", min_epochs=1),
    GateConfig(strategy="mean_abs", threshold=0.3, min_epochs=2, clamp=1.0),
    GateConfig(strategy="first_order_value", strategy_params={"mode": "cosine"},
               threshold=0.0, min_epochs=1),
]


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    config = episode_config("synthetic-cnn", size="tiny")
    return [run_episode(config, replicate=r, cache_dir=cache) for r in (0, 1)]


@pytest.mark.parametrize("config", GATES, ids=[g.strategy for g in GATES])
def test_replay_equals_online_gate_on_recorded_episodes(episodes, config):
    traces = TraceSet.concat([TraceSet.from_episode(e) for e in episodes])
    replayed = replay_decisions(traces, config).decisions.set_index(["replicate", "seed_id"])
    n_compared = 0
    for episode in episodes:
        online = gate_decisions(episode, Gate(config))  # the online tracker, step by step
        for row in online.itertuples(index=False):
            rep = replayed.loc[(episode.replicate, row.seed_id)]
            assert bool(rep["passed"]) == bool(row.passed), row.seed_id
            if row.passed:
                assert int(rep["pass_epoch"]) == int(row.pass_epoch)
            if row.gate_value is None or (isinstance(row.gate_value, float)
                                          and math.isnan(row.gate_value)):
                assert math.isnan(rep["statistic"])
            else:
                assert rep["statistic"] == row.gate_value  # exact
            n_compared += 1
    assert n_compared == len(replayed) > 0
