"""The batched Tune path asks a lockstep round from one history, and its TPE sampler builds
the round's split and "below" Parzen estimator once (``tune_driver._round_tpe``): the configs
must be exactly those Optuna's own ``TPESampler`` draws, asked the same way."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import space

from esper_ab.study.space import define_by_run
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.study.studies import Lockstep
from esper_ab.tune_driver._round_tpe import round_cached
from esper_ab.tune_driver.batches import BatchPlanner

STRATEGIES = [{"name": "exponent", "params": {"a": {"low": 0.0, "high": 1.5}}},
              {"name": "baseline"}, {"name": "zscore"}, {"name": "mean_abs"}]
ROUNDS, WIDTH, BATCH = 5, 2, 6


def _spec(**over):
    return parse_sweep_spec(space(name="round_tpe", replicates=3, num_samples=60,
                                  strategies=STRATEGIES, max_concurrent=WIDTH, **over))


def _value(params: dict, k: int) -> float:
    """A deterministic objective of the drawn params (not constant: TPE has to split)."""
    h = sum((i + 1) * (float(v) if isinstance(v, int | float) else len(str(v)))
            for i, v in enumerate(sorted(params.items(), key=lambda kv: kv[0])))
    return math.sin(h * (k + 1.3)) + 0.1 * k


def _rounds(sampler, spec, directions) -> list[dict]:
    """Lockstep rounds as the planner asks them: ``WIDTH`` batches of ``BATCH`` asks from one
    history, then every config told (one in seven failed, one in five pruned)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler, directions=directions)
    fn, drawn = define_by_run(spec), []
    for _ in range(ROUNDS):
        asked = []
        for _ in range(WIDTH * BATCH):
            t = study.ask()
            fixed = fn(t)
            asked.append(t)
            drawn.append({**t.params, **fixed})
        for t in asked:
            _tell(study, t, directions)
    return drawn


def _tell(study, t, directions) -> None:
    if t.number % 7 == 3:
        study.tell(t, state=TrialState.FAIL)
    elif t.number % 5 == 4:
        study.tell(t, state=TrialState.PRUNED)
    else:
        values = [_value(t.params, k) for k in range(len(directions))]
        study.tell(t, values if len(values) > 1 else values[0])


def _pipelined(sampler, spec, directions) -> list[dict]:
    """Batches as the ``Pipeline`` asks them: batch i from batches 0 .. i - WIDTH told, the
    batches in between still running (so "above" holds running trials of several batches)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler, directions=directions)
    fn, drawn, batches = define_by_run(spec), [], []
    for i in range(ROUNDS * WIDTH):
        if i >= WIDTH:
            for t in batches[i - WIDTH]:
                _tell(study, t, directions)
        batch = []
        for _ in range(BATCH):
            t = study.ask()
            fixed = fn(t)
            batch.append(t)
            drawn.append({**t.params, **fixed})
        batches.append(batch)
    return drawn


@pytest.mark.parametrize("pattern", ["rounds", "pipeline"])
@pytest.mark.parametrize("liar", [True, False])
@pytest.mark.parametrize("directions", [["maximize"], ["maximize", "minimize"]])
def test_round_cached_tpe_draws_what_optuna_tpe_draws(liar, directions, pattern):
    spec = _spec()
    drive = {"rounds": _rounds, "pipeline": _pipelined}[pattern]

    def plain():
        return optuna.samplers.TPESampler(seed=3, n_startup_trials=8, constant_liar=liar)

    cached = round_cached(plain())
    assert type(cached) is not optuna.samplers.TPESampler   # the cached sampler is in play
    ours, optunas = drive(cached, spec, directions), drive(plain(), spec, directions)
    assert len(ours) == ROUNDS * WIDTH * BATCH
    assert ours == optunas
    assert len({p["strategy"] for p in ours[-WIDTH * BATCH:]}) >= 1


def test_round_cached_leaves_other_samplers_alone():
    rnd = optuna.samplers.RandomSampler(seed=0)
    assert round_cached(rnd) is rnd and type(rnd) is optuna.samplers.RandomSampler


def test_the_batch_planner_builds_a_rounds_below_estimator_once(tmp_path):
    """A round past TPE's startup: Optuna builds "below" for each parameter of each ask; the
    planner's sampler once per search space of the round."""
    spec = _spec(sampler={"kind": "tpe", "seed": 0, "n_startup_trials": 4})
    planner = BatchPlanner(spec, tmp_path, sweep_run="R", seed=0, batch_size=BATCH,
                           n_configs=3 * WIDTH * BATCH, lockstep=Lockstep(WIDTH, 3 * WIDTH))
    sampler = planner.study.sampler
    calls = {"sample": 0, "below": 0}
    sample, build = sampler._sample, sampler._build_parzen_estimator

    def counted_sample(*a, **k):
        calls["sample"] += 1
        return sample(*a, **k)

    def counted_build(*a, handle_below, **k):
        calls["below"] += bool(handle_below)
        return build(*a, handle_below=handle_below, **k)

    sampler._sample, sampler._build_parzen_estimator = counted_sample, counted_build
    for r in range(3):
        if r == 2:
            calls.update(sample=0, below=0)
        ids = [f"t{r}{i}" for i in range(WIDTH)]
        for tid in ids:
            assert planner.suggest(tid) is not None
        for tid in ids:
            rows = [{"number": n, "flat": {}, "reason": "",
                     "metrics": {"g2.balanced_accuracy": 0.5 + 0.01 * (n % 9)}}
                    for n in planner.open[tid]]
            planner.complete(tid, {"batch_rows": json.dumps(rows)}, False)
    assert calls["sample"] >= WIDTH * BATCH        # every ask of the round sampled by TPE
    assert 0 < calls["below"] < calls["sample"] / 2
