"""The replay search on recorded tiny episodes: metrics equal the trial's own path and a
hand computation, the journal holds the study, grid / multi-objective / batching."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from fidelity_helpers import space
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from esper_ab.replay import replay_decisions
from esper_ab.study.replay_search import rank_trials, replay_study_name, search_replay
from esper_ab.study.space import grid_points
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.trial import run_trial


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9 * max(1.0, abs(b))


@pytest.fixture(scope="module")
def searched(evidence, tmp_path_factory):
    spec = parse_sweep_spec(space(num_samples=150))
    folder = tmp_path_factory.mktemp("search")
    return spec, folder, search_replay(spec, evidence, folder=folder, batch_size=32)


def test_every_config_is_scored_and_kept_in_the_journal(searched):
    spec, folder, s = searched
    assert s.n_configs == 150 and s.n_replicates == 3
    assert set(s.trials["state"]) <= {"COMPLETE", "FAIL"}
    assert (s.trials.loc[s.trials["state"] == "FAIL", "reason"] != "").all()
    assert s.wall_s > 0 and s.configs_per_s > 0
    assert set(s.trials["strategy"]) == {e.name for e in spec.strategies}
    study = optuna.load_study(study_name=replay_study_name(spec), storage=JournalStorage(
        JournalFileBackend(str(folder / "optuna-replay.journal"))))
    assert len(study.trials) == 150
    done = {t.number: t.value for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE}
    table = s.trials.set_index("number")
    for number, value in done.items():
        assert value == table.loc[number, "g2.realized_utility"]


def test_metrics_equal_the_trial_path_and_a_hand_computation(searched, evidence):
    spec, _, s = searched
    ok = s.trials[s.trials["state"] == "COMPLETE"]
    picks = [ok[ok["strategy"] == name].iloc[0] for name in
             ("baseline", "exponent", "per_blueprint_threshold", "first_order_value")]
    for row in picks:
        params = s.params[int(row["number"])]
        ref = run_trial(params, evidence, baseline=spec.baseline, n_boot=10, n_perm=10)
        for key, value in ref.metrics.items():
            if key.startswith("g2.") and "pvalue" not in key and "_ci_" not in key:
                assert _close(float(row[key]), value), (params.label(), key)
        if params.strategy != "per_blueprint_threshold":   # not cross-fitted: plain numpy
            d = replay_decisions(evidence.traces, params.gate_config()).decisions
            passed = d["passed"].to_numpy(bool)
            assert _close(row["g2.realized_utility"], float(d["value"].to_numpy()[passed].sum()))
            assert _close(row["g2.pass_rate"], float(passed.mean()))


def test_a_second_search_appends_to_the_same_study(evidence, tmp_path):
    spec = parse_sweep_spec(space(num_samples=20))
    search_replay(spec, evidence, folder=tmp_path)
    again = search_replay(spec, evidence, folder=tmp_path)
    assert sorted(again.trials["number"]) == list(range(20, 40))


def test_batch_size_does_not_change_the_scores(evidence, tmp_path):
    spec = parse_sweep_spec(space(num_samples=40))   # random: params independent of tells
    one = search_replay(spec, evidence, folder=tmp_path / "a", batch_size=1)
    many = search_replay(spec, evidence, folder=tmp_path / "b", batch_size=40)
    a, b = one.trials.set_index("number"), many.trials.set_index("number")
    assert list(a["label"]) == list(b["label"])
    for col in ("g2.realized_utility", "g2.balanced_accuracy", "g2.pass_rate_gap"):
        assert all(_close(x, y) for x, y in zip(a[col], b[col], strict=True))


def test_grid_evaluates_every_point_once(evidence, tmp_path):
    spec = parse_sweep_spec(space(
        strategies=[{"name": "exponent", "params": {"a": {"low": 0.0, "high": 1.0,
                                                          "grid_points": 3}},
                     "threshold": {"low": 0.05, "high": 0.5, "grid_points": 2}}],
        gate={"window": ["last", "mean"], "min_epochs": 2}, sampler={"kind": "grid"}))
    s = search_replay(spec, evidence, folder=tmp_path)
    points = grid_points(spec)
    assert s.n_configs == len(points) == 12
    seen = {(p.strategy_params["a"], p.threshold, p.window) for p in s.params.values()}
    assert seen == {(p["exponent.a"], p["exponent.threshold"], p["gate.window"])
                    for p in points}


def test_nsga2_two_objectives_rank_the_front_first(evidence, tmp_path):
    spec = parse_sweep_spec(space(
        num_samples=60, sampler={"kind": "nsga2", "seed": 0, "population_size": 20},
        objectives=[{"metric": "realized_utility"}, {"metric": "pass_rate_gap"}]))
    s = search_replay(spec, evidence, folder=tmp_path)
    ranked = rank_trials(spec, s.trials)
    v = ranked[["g2.realized_utility", "g2.pass_rate_gap"]].to_numpy(float)
    signed = v * np.array([1.0, -1.0])

    def dominated(i):
        return any((signed[j] >= signed[i]).all() and (signed[j] > signed[i]).any()
                   for j in range(len(signed)))

    front = [not dominated(i) for i in range(len(signed))]   # a brute-force Pareto front
    k = sum(front)
    assert k >= 1 and all(front[:k]) and not any(front[k:])


def test_degenerate_configs_rank_after_every_other_config():
    """The ranking puts a gate that admits no seed, every seed or no valuable seed last,
    whatever its objective: it can never win, so it never takes a finalist's place."""
    import pandas as pd

    spec = parse_sweep_spec(space(name="rank_degenerate"))   # objective: realized_utility
    trials = pd.DataFrame({
        "number": [0, 1, 2, 3, 4], "state": ["COMPLETE"] * 5,
        "g2.realized_utility": [9.0, 8.0, 7.0, 1.0, 0.5],
        "g2.pass_rate": [0.0, 1.0, 0.5, 0.4, 0.3],    # admits none / every seed
        "g2.tpr": [0.0, 1.0, 0.0, 0.5, 0.5],          # #2 admits no valuable seed
        "g2.n": [8, 8, 8, 8, 8]})
    assert list(rank_trials(spec, trials)["number"]) == [3, 4, 0, 1, 2]
