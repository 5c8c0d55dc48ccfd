"""Batched Tune trials at replay fidelity: the driver-side planner (asks, rows on disk, tells),
the worker-side scoring against the per-config trial path, and one real batched sweep."""

from __future__ import annotations

import json
import math

import mlflow
import optuna
import pandas as pd
import pytest
from sweep_helpers import space

from esper_ab.replay import ReplayEvidence, synthetic_traces
from esper_ab.study.replay_search import rank_trials
from esper_ab.study.resume import SUPERSEDED, SWEEP_RUN, TUNE_TRIAL_ID
from esper_ab.study.space import params_from_flat
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.study.studies import sweep_study_name
from esper_ab.trial import iter_trial
from esper_ab.tune_driver.batches import (
    BATCH_ROWS,
    MIN_BATCHED,
    BatchPlanner,
    batch_size_for,
    read_rows,
    trials_table,
)
from esper_ab.tune_driver.trainables import score_configs

STRATEGIES = [{"name": "exponent", "params": {"a": {"low": 0.0, "high": 1.5}}},
              {"name": "baseline"}, {"name": "zscore"}]


def _spec(**kw):
    return parse_sweep_spec(space(**{"name": "batched", "replicates": 3, "num_samples": 40,
                                     "strategies": STRATEGIES, **kw}))


@pytest.fixture(scope="module")
def evidence():
    return ReplayEvidence(synthetic_traces(replicates=range(3), epochs=12, steps_per_epoch=2,
                                           seeds_per_blueprint=2))


def test_batch_size_rules():
    spec = _spec()
    assert batch_size_for(spec, MIN_BATCHED - 1, slots=2) == 1     # small: a run per config
    assert batch_size_for(spec, 200, slots=8) == 13                 # two batches per slot
    assert batch_size_for(spec, 10_000, slots=2) == 64              # at most MAX_BATCH
    assert batch_size_for(spec, 200, slots=8, requested=5) == 5
    assert batch_size_for(spec.model_copy(update={"fidelity": "closed_loop"}), 200, 8) == 1


def test_scoring_a_batch_equals_the_per_config_trial(evidence):
    spec = _spec()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    from esper_ab.study.space import define_by_run

    run = define_by_run(spec)
    items = []
    for _ in range(6):
        t = study.ask()
        fixed = run(t)
        items.append({"number": t.number, "params": {**t.params, **fixed}})
    rows = score_configs(spec, evidence, items)
    assert [r["number"] for r in rows] == [it["number"] for it in items]
    for row, item in zip(rows, items, strict=True):
        params = params_from_flat(item["params"], spec)
        last = list(iter_trial(params, evidence, baseline=spec.baseline, n_boot=10,
                               n_perm=10))[-1]
        assert not row["reason"]
        for key in ("g2.balanced_accuracy", "g2.pass_rate", "g2.tpr", "g2.fpr",
                    "g2.pass_rate.norm", "g2.pass_rate_gap"):
            a, b = row["metrics"][key], last.metrics[key]
            assert (math.isnan(a) and math.isnan(b)) or a == b, key
    json.dumps(rows, allow_nan=True)       # what the trial reports


def test_planner_writes_rows_before_it_tells(tmp_path, evidence):
    spec = _spec()
    told = []
    planner = BatchPlanner(spec, tmp_path, sweep_run="R", seed=0, batch_size=8, n_configs=20,
                           on_told=told.append)
    configs = [planner.suggest(f"t{i}") for i in range(4)]
    assert [len(c["batch"]) for c in configs[:3]] == [8, 8, 4] and configs[3] is None
    first = configs[0]["batch"]
    trial = planner.study.trials[first[2]["number"]]
    assert trial.user_attrs[TUNE_TRIAL_ID] == "t0#2" and trial.user_attrs[SWEEP_RUN] == "R"
    rows = score_configs(spec, evidence, first)
    planner.complete("t0", {"batch_rows": json.dumps(rows, allow_nan=True)}, error=False)
    planner.complete("t1", None, error=True)             # crashed after its retries
    assert told == [8, 8]
    lines = (tmp_path / BATCH_ROWS).read_text().splitlines()
    assert len(lines) == 16
    states = {t.number: t.state for t in planner.study.trials}
    for row in rows:
        values = row["metrics"]["g2.balanced_accuracy"]
        st = planner.study.trials[row["number"]]
        if math.isfinite(values):
            assert st.state == optuna.trial.TrialState.COMPLETE and st.value == values
    assert all(states[it["number"]] == optuna.trial.TrialState.FAIL
               for it in configs[1]["batch"])
    assert all(states[it["number"]] == optuna.trial.TrialState.RUNNING
               for it in configs[2]["batch"])                  # never completed: no row
    # A re-read of the journal (another process) sees every tell: one fsync per batch.
    again = optuna.load_study(study_name=sweep_study_name(spec.name, "R"), storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))))
    assert {t.number: t.state for t in again.trials} == states
    # Rows that count: final, of this sweep, not superseded.
    again.set_user_attr(SUPERSEDED, [first[0]["number"]])
    kept = read_rows(tmp_path, again, "R")
    assert [r["number"] for r in kept] == sorted(
        it["number"] for it in first[1:] + configs[1]["batch"])
    table, params = trials_table(spec, kept)
    assert len(table) == 15 and set(params) == {it["number"] for it in first[1:]}
    assert set(table["state"]) == {"COMPLETE", "FAIL"}
    assert table.loc[table["state"] == "FAIL", "reason"].str.startswith("trial crashed").all()
    ranked = rank_trials(spec, table)
    assert len(ranked) == (table["state"] == "COMPLETE").sum()


def test_planner_times_its_first_batch_of_asks(tmp_path):
    planner = BatchPlanner(_spec(), tmp_path, sweep_run="R", seed=0, batch_size=4, n_configs=12)
    assert planner.first_ask_s == 0.0
    planner.suggest("t0")
    first = planner.first_ask_s
    assert first > 0 and first == planner.ask_s
    planner.suggest("t1")
    assert planner.first_ask_s == first and planner.ask_s > first
    t = planner.timings()       # what run_sweep puts in its phases
    assert t == {"first_ask_s": first, "asks_s": planner.ask_s, "tells_s": 0.0}


def test_the_tune_searcher_writes_and_tells_a_batch_at_its_report(tmp_path, evidence):
    """Rows on disk and Optuna told when the batch reports, before its Tune trial ends (Tune
    then stages the next round while the actor lives); the trial's end is then a no-op."""
    from esper_ab.tune_driver.tune_runner import _BatchSearch

    spec = _spec()
    planner = BatchPlanner(spec, tmp_path, sweep_run="R", seed=0, batch_size=4, n_configs=8)
    search = _BatchSearch(planner)
    batch = search.suggest("t0")["batch"]
    rows = score_configs(spec, evidence, batch)
    search.on_trial_result("t0", {"configs": 4})              # no rows: nothing happens
    assert not (tmp_path / BATCH_ROWS).exists()
    search.on_trial_result("t0", {"batch_rows": json.dumps(rows, allow_nan=True)})
    lines = (tmp_path / BATCH_ROWS).read_text().splitlines()
    assert [json.loads(x)["number"] for x in lines] == [it["number"] for it in batch]
    assert all(planner.study.trials[it["number"]].state.is_finished() for it in batch)
    search.on_trial_complete("t0", {"batch_rows": json.dumps(rows, allow_nan=True)})
    assert (tmp_path / BATCH_ROWS).read_text().splitlines() == lines   # not written twice


def test_the_sweep_setup_hook_records_its_imports():
    from esper_ab.tune_driver import trainables

    before = len(trainables._SETUP_S)
    trainables.warm_worker()
    assert len(trainables._SETUP_S) == before + 1 and trainables._SETUP_S[-1] >= 0


@pytest.mark.slow
def test_a_batched_sweep_on_local_ray(ray_local, tmp_path):
    from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

    spec = parse_sweep_spec(space(name="batched_sweep", num_samples=MIN_BATCHED, replicates=2,
                                  strategies=STRATEGIES, scheduler={"kind": "none"},
                                  selection={"top_k": 2}))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = run_sweep(spec, options=SweepOptions(tracking_uri=uri, n_boot=50, n_perm=50,
                                               batch_size=8))
    assert out.status == "FINISHED"
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_names=["batched_sweep"])
    assert set(df["status"]) == {"FINISHED"}
    parent = df[df["run_id"] == out.sweep_run_id].iloc[0]
    assert parent["tags.esper_ab.search"] == "ray-tune-batched"
    assert parent["metrics.replay.configs"] == MIN_BATCHED
    kids = df[df["tags.esper_ab.role"] == "trial"]
    assert len(kids) == 2 and set(kids["tags.mlflow.parentRunId"]) == {out.sweep_run_id}
    path = mlflow.MlflowClient().download_artifacts(out.sweep_run_id, "replay/trials.parquet",
                                                    str(tmp_path))
    trials = pd.read_parquet(path)
    assert len(trials) == MIN_BATCHED and trials["number"].is_unique
    study = optuna.load_study(study_name=sweep_study_name(spec.name, out.sweep_run_id),
                              storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out.sweep_dir / "optuna.journal"))))
    mine = [t for t in study.trials if t.user_attrs.get(SWEEP_RUN) == out.sweep_run_id]
    assert len(mine) == MIN_BATCHED and all(t.state.is_finished() for t in mine)
    assert len({t.user_attrs[TUNE_TRIAL_ID].split("#")[0] for t in mine}) == 4   # 4 batches
    # The start's parts: every phase timed, in order within Tuner.fit.
    ph = out.phases
    assert set(ph) == {"connect_s", "tracking_storage_s", "evidence_s", "schedulable_tuner_s",
                       "fit_started_at", "first_result_s", "first_ask_s", "asks_s", "tells_s"}
    assert all(v >= 0 for v in ph.values()) and ph["first_result_s"] <= out.fit_wall_s
    assert ph["asks_s"] >= ph["first_ask_s"] and ph["tells_s"] > 0
    results = [r for p in (out.sweep_dir / "tune").rglob("result.json")
               for r in map(json.loads, p.read_text().splitlines())]
    firsts = [r for r in results if r["worker_start_s"] > 0]
    assert firsts and all(r["worker_setup_s"] >= 0 and r["evidence_fetch_s"] >= 0
                          for r in firsts)
    # every batch's scoring timed, within Tuner.fit (the benchmark's lockstep rounds)
    assert len(results) == 4 and all(
        ph["fit_started_at"] <= r["batch_began_at"] <= r["batch_ended_at"]
        <= ph["fit_started_at"] + out.fit_wall_s for r in results)
