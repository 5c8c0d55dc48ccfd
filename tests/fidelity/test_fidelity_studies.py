"""esper_ab.study.studies: the batched journal backend against Optuna's own file backend, the lock,
the direction check."""

from __future__ import annotations

import pickle

import optuna
import pytest
from fidelity_helpers import space
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from esper_ab.errors import ConfigError
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.study.studies import (
    BatchedJournalBackend,
    SweepFolderLock,
    optuna_sampler,
    optuna_storage,
)


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -2.0, 2.0)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    return (x - 0.5) ** 2 + (0.1 if kind == "a" else 0.0)


def test_batched_journal_equals_a_plain_journal_once_flushed(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plain = optuna.create_study(study_name="s", sampler=optuna.samplers.RandomSampler(seed=3),
                                storage=JournalStorage(JournalFileBackend(str(tmp_path / "p"))))
    plain.optimize(_objective, n_trials=25)
    backend = BatchedJournalBackend(tmp_path / "b")
    batched = optuna.create_study(study_name="s", storage=JournalStorage(backend),
                                  sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(5):
        trials = [batched.ask() for _ in range(5)]
        for t in trials:
            batched.tell(t, _objective(t))
        if _ == 2:   # nothing reached the file before the first flush
            assert not (tmp_path / "b").exists() or (tmp_path / "b").stat().st_size == 0
            backend.flush()
    backend.flush()
    back = optuna.load_study(study_name="s",
                             storage=JournalStorage(JournalFileBackend(str(tmp_path / "b"))))
    assert [t.params for t in back.trials] == [t.params for t in plain.trials]
    assert [t.value for t in back.trials] == [t.value for t in plain.trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in back.trials)


def test_unflushed_writes_are_lost_and_a_reopened_study_appends(tmp_path):
    backend = BatchedJournalBackend(tmp_path / "j")
    study = optuna.create_study(study_name="s", storage=JournalStorage(backend))
    study.optimize(_objective, n_trials=3)
    backend.flush()
    study.optimize(_objective, n_trials=2)          # never flushed
    again = BatchedJournalBackend(tmp_path / "j")
    reopened = optuna.load_study(study_name="s", storage=JournalStorage(again))
    assert len(reopened.trials) == 3
    reopened.optimize(_objective, n_trials=4)
    again.flush()
    final = optuna.load_study(study_name="s",
                              storage=JournalStorage(JournalFileBackend(str(tmp_path / "j"))))
    assert [t.number for t in final.trials] == list(range(7))


def test_folder_lock_is_exclusive(tmp_path):
    with SweepFolderLock(tmp_path, "x", what="a replay search"):
        with pytest.raises(ConfigError, match="already running"):
            with SweepFolderLock(tmp_path, "x", what="a replay search"):
                pass
    with SweepFolderLock(tmp_path, "x", what="a replay search"):   # released
        pass


def test_storage_refuses_a_study_with_other_directions(tmp_path):
    spec = parse_sweep_spec(space())
    storage = optuna_storage(spec, tmp_path)
    optuna.create_study(study_name=spec.name, storage=storage, direction="minimize")
    with pytest.raises(ConfigError, match="directions"):
        optuna_storage(spec, tmp_path)


@pytest.mark.parametrize("kind,cls", [("tpe", optuna.samplers.TPESampler),
                                      ("nsga2", optuna.samplers.NSGAIISampler),
                                      ("random", optuna.samplers.RandomSampler),
                                      ("grid", optuna.samplers.RandomSampler)])
def test_sampler_kinds(kind, cls):
    spec = parse_sweep_spec(space(sampler={"kind": kind, "seed": 1}))
    assert isinstance(optuna_sampler(spec), cls)


@pytest.mark.parametrize("kind", ["tpe", "nsga2", "random", "grid"])
def test_every_sampler_pickles_after_use_as_ray_tune_pickles_its_searcher(kind):
    """Tune pickles the searcher (sampler included) when a Tuner is built; Optuna 5's NSGA-II
    holds a threading.Lock, which made two-objective sweeps fail to start."""
    spec = parse_sweep_spec(space(sampler={"kind": kind, "seed": 3, **(
        {"population_size": 4} if kind == "nsga2" else {})}))
    sampler = optuna_sampler(spec)
    study = optuna.create_study(sampler=sampler, directions=["maximize", "minimize"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)),
                   n_trials=10)
    again = pickle.loads(pickle.dumps(sampler))
    assert type(again) is type(sampler)
    study2 = optuna.create_study(sampler=again, directions=["maximize", "minimize"])
    study2.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)),
                    n_trials=6)
    assert len(study2.trials) == 6
    if kind == "nsga2":   # the lock came back, a new one
        assert again._thread_lock is not sampler._thread_lock
        assert again._thread_lock.acquire(blocking=False)
        again._thread_lock.release()
