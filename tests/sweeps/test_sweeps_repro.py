"""Reproducible by default: every sweep run is a new Optuna study seeded from the space, and
configs are asked in rounds (``Lockstep``) so that the order trials end in does not change
what a seeded sampler draws."""

from __future__ import annotations

import random

import mlflow
import optuna
import pandas as pd
import pytest
from sweep_helpers import space

from esper_ab.study.spec import parse_sweep_spec
from esper_ab.study.studies import Lockstep, Pipeline, sweep_study_name

WIDTH, TOTAL = 2, 12


def _drive(end_order_seed: int, *, lockstep: bool) -> list[float]:
    """A real TPE study driven as Tune drives it: ``WIDTH`` trials at a time, each asked
    when a slot frees, trials ending in a random order (``end_order_seed``). Returns the
    values of ``x`` in ask order."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0,
                                                                   n_startup_trials=4))
    gate = Lockstep(WIDTH, TOTAL) if lockstep else None
    order = random.Random(end_order_seed)
    running: list[optuna.trial.Trial] = []
    asked: list[float] = []

    def tell(t: optuna.trial.Trial) -> None:
        study.tell(t, (t.params["x"] - 0.3) ** 2)
        if gate is not None:
            gate.told(t.number)

    by_number: dict[int, optuna.trial.Trial] = {}
    while len(asked) < TOTAL or running:
        if len(running) < WIDTH and len(asked) < TOTAL and (gate is None or gate.may_ask()):
            t = study.ask()
            t.suggest_float("x", 0.0, 1.0)
            by_number[t.number] = t
            asked.append(t.params["x"])
            running.append(t)
            for k in (gate.asked(t.number) if gate else []):
                tell(by_number[k])
            continue
        done = running.pop(order.randrange(len(running)))
        for k in (gate.ended(done.number) if gate else [done.number]):
            tell(by_number[k])
    assert len(study.trials) == TOTAL
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return asked


def test_lockstep_draws_do_not_depend_on_the_order_trials_end():
    runs = [_drive(seed, lockstep=True) for seed in range(6)]
    assert all(r == runs[0] for r in runs)


def test_without_lockstep_the_end_order_changes_the_draws():
    """The control: the same study driven without rounds draws other configs when trials end
    in another order (what made two runs of one space disagree)."""
    runs = [_drive(seed, lockstep=False) for seed in range(6)]
    assert any(r != runs[0] for r in runs)
    assert all(r[:4] == runs[0][:4] for r in runs)     # the random startup is seeded


def test_lockstep_holds_an_end_until_its_round_is_asked():
    gate = Lockstep(3, 4)
    assert gate.may_ask() and gate.asked("a") == []
    assert gate.ended("a") == []                       # b, c not asked yet: held
    assert gate.may_ask() and gate.asked("b") == []
    assert gate.may_ask() and gate.asked("c") == ["a"]    # round full: a may be told
    for k in "abc":
        gate.told(k) if k == "a" else None
    assert not gate.may_ask()                          # b, c untold
    assert gate.ended("b") == ["b"] and gate.ended("c") == ["c"]
    gate.told("b")
    gate.told("c")
    assert gate.may_ask() and gate.asked("d") == []    # the last round has one trial
    gate.told("d")
    assert not gate.may_ask()                          # all 4 asked


def _trials(uri: str, experiment: str, parent: str) -> list[tuple]:
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_names=[experiment],
                            filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    cols = sorted(c for c in df.columns                 # Tune's trial id is random
                  if c.startswith("params.") and c != "params.trial_id")
    # sorted: two trials of one round start (and are numbered in MLflow) in either order
    return sorted(tuple(str(r[c]) for c in cols) + (round(float(
        r["metrics.g2.balanced_accuracy"]), 12),) for _, r in df.iterrows())


def _study(out) -> list[tuple]:
    """The sweep's own Optuna study, trial by trial in ask order: params and value."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(out.sweep_dir / "optuna.journal")))
    study = optuna.load_study(study_name=sweep_study_name("repro", out.sweep_run_id),
                              storage=storage)
    return [(t.number, sorted(t.params.items()), t.value) for t in study.trials]


@pytest.mark.slow
def test_same_space_and_seed_give_the_same_trials_and_answer(ray_local, tmp_path):
    """Two fresh folders, and a second sweep in the first folder (a new study, not a warm
    start of the first): the same configs, metrics and verdict each time. Four trials: a
    round of two seeded random startup draws, then a round of two TPE draws from that
    history (``max_concurrent`` 2), so both kinds of draw are compared."""
    from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

    spec = parse_sweep_spec(space(name="repro", num_samples=4, replicates=3,
                                  sampler={"kind": "tpe", "seed": 3, "n_startup_trials": 2}))
    outs = []
    for folder in ("a", "b", "a"):
        uri = f"sqlite:///{tmp_path / folder}/mlflow.db"
        (tmp_path / folder).mkdir(exist_ok=True)
        out = run_sweep(spec, options=SweepOptions(tracking_uri=uri, n_boot=50, n_perm=50))
        assert out.status == "FINISHED"
        outs.append((uri, out))
    trials = [_trials(uri, "repro", o.sweep_run_id) for uri, o in outs]
    assert len(trials[0]) == 4 and len(set(trials[0])) == 4
    assert trials[1] == trials[0] and trials[2] == trials[0]
    studies = [_study(o) for _, o in outs]
    assert len(studies[0]) == 4 and studies[1] == studies[0] and studies[2] == studies[0]
    assert outs[1][1].reason == outs[0][1].reason == outs[2][1].reason
    assert outs[0][1].analysis.winner == outs[1][1].analysis.winner
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(outs[0][1].sweep_dir / "optuna.journal")))
    names = {s.study_name for s in storage.get_all_studies()}
    assert names == {sweep_study_name("repro", outs[0][1].sweep_run_id),
                     sweep_study_name("repro", outs[2][1].sweep_run_id)}
    for s in storage.get_all_studies():
        assert len(storage.get_all_trials(s._study_id)) == 4


def test_lockstep_pickles_with_its_state():
    import pickle

    gate = Lockstep(2, 3)
    gate.asked("a")
    copy = pickle.loads(pickle.dumps(gate))
    assert copy.may_ask() and copy.asked("b") == [] and not copy.may_ask()


def test_the_pipeline_holds_an_end_until_the_last_ask_that_must_not_see_it():
    """Width 2: key i is asked from keys 0 .. i-2; key j told only after key j+1 was asked."""
    gate = Pipeline(2, 5)
    assert gate.may_ask() and gate.asked("a") == []
    assert gate.ended("a") == []                     # b not asked yet: b must not see a
    assert gate.may_ask() and gate.asked("b") == ["a"]
    assert not gate.may_ask()                        # c needs a told
    gate.told("a")
    assert gate.may_ask() and gate.asked("c") == []
    assert not gate.may_ask()                        # d needs b told
    assert gate.ended("c") == []                     # d not asked: held (the order flipped)
    assert gate.ended("b") == ["b"]                  # c was asked: b may be told
    gate.told("b")
    assert gate.may_ask() and gate.asked("d") == ["c"]
    gate.told("c")
    assert gate.may_ask() and gate.asked("e") == []  # the last key
    assert not gate.may_ask()                        # all 5 asked
    assert gate.ended("e") == ["e"] and gate.ended("d") == ["d"]   # no ask left to spoil


def test_the_pipeline_pickles_with_its_state():
    import pickle

    gate = Pipeline(2, 3)
    gate.asked("a")
    gate.asked("b")
    copy = pickle.loads(pickle.dumps(gate))
    assert not copy.may_ask() and copy.ended("a") == ["a"]
    copy.told("a")
    assert copy.may_ask() and copy.asked("c") == [] and not copy.may_ask()


@pytest.mark.slow
def test_a_second_replay_sweep_in_the_same_folder_is_a_new_study(tmp_path):
    """The in-process replay search too: a second sweep of the same space in the same
    folder gets its own study (not a warm start), hence the same configs and answer."""
    from esper_ab.fidelity.replay_sweep import ReplaySweepOptions, run_replay_sweep
    from esper_ab.replay import ReplayEvidence, synthetic_traces
    from esper_ab.study.replay_search import replay_study_name

    spec = parse_sweep_spec(space(name="rrepro", num_samples=12, replicates=3,
                                  sampler={"kind": "tpe", "seed": 1, "n_startup_trials": 4}))
    ev = ReplayEvidence(synthetic_traces(replicates=range(3), epochs=12, steps_per_epoch=2,
                                         seeds_per_blueprint=1))
    opts = ReplaySweepOptions(tracking_uri=f"sqlite:///{tmp_path}/m.db",
                              storage_dir=str(tmp_path), n_boot=50, n_perm=50)
    outs = [run_replay_sweep(spec, evidence=ev, options=opts) for _ in range(2)]
    cols = [c for c in outs[0].search.trials.columns if c not in ("wall_s", "cpu_s")]
    a, b = (o.search.trials[cols].reset_index(drop=True) for o in outs)
    pd.testing.assert_frame_equal(a, b)
    assert outs[0].reason.split("configs/s)")[1] == outs[1].reason.split("configs/s)")[1]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(outs[0].sweep_dir / "optuna-replay.journal")))
    assert {s.study_name for s in storage.get_all_studies()} == {
        replay_study_name(spec, o.sweep_run_id) for o in outs}
