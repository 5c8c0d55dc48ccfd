"""The batched Tune path asks in a pipeline (``Pipeline``; rounds, ``Lockstep``, before): a
seeded sampler draws the same configs whatever order the batches end in, and the i-th batch
is asked from exactly the batches up to i - SLOTS.

The driver side is driven here as Tune drives it (``BatchPlanner.suggest`` whenever a slot is
free, ``complete`` when a batch ends), with real Optuna journal storage and the worker's real
scoring (``trainables.score_configs``), so the end order can be chosen: first-started first,
last-started first, and a seeded shuffle."""

from __future__ import annotations

import json
import random

import pytest
from sweep_helpers import space

from esper_ab.replay import ReplayEvidence, synthetic_traces
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.study.studies import Lockstep, Pipeline
from esper_ab.tune_driver.batches import BatchPlanner
from esper_ab.tune_driver.trainables import score_configs

STRATEGIES = [{"name": "exponent", "params": {"a": {"low": 0.0, "high": 1.5}}},
              {"name": "baseline"}, {"name": "zscore"}]
N_CONFIGS, BATCH, SLOTS = 16, 2, 2


def _spec():
    return parse_sweep_spec(space(
        name="lockstep_batched", replicates=3, num_samples=N_CONFIGS, strategies=STRATEGIES,
        max_concurrent=SLOTS, sampler={"kind": "tpe", "seed": 0, "n_startup_trials": 2}))


@pytest.fixture(scope="module")
def evidence():
    return ReplayEvidence(synthetic_traces(replicates=range(3), epochs=12, steps_per_epoch=2,
                                           seeds_per_blueprint=2))


GATES = {"pipeline": Pipeline, "rounds": Lockstep, "none": None}


def _drive(spec, evidence, folder, *, order: str, gate: str = "pipeline",
           seen: list | None = None) -> dict[int, dict]:
    """A Tune-like loop over ``SLOTS`` slots: fill free slots, end one running batch (chosen
    by ``order``), repeat. Returns Optuna number -> the config it drew; ``seen`` gets, per
    batch asked, the numbers of the trials Optuna knew finished when it was asked."""
    folder.mkdir()
    kind = GATES[gate]
    planner = BatchPlanner(
        spec, folder, sweep_run="R", seed=0, batch_size=BATCH, n_configs=N_CONFIGS,
        lockstep=kind(SLOTS, -(-N_CONFIGS // BATCH)) if kind else None)
    rng = random.Random(7)
    running: list[tuple[str, list[dict]]] = []
    drawn: dict[int, dict] = {}
    next_id = 0
    for _ in range(10 * N_CONFIGS):            # bounded: a stuck lockstep fails, not hangs
        while len(running) < SLOTS:
            known = {t.number for t in planner.study.trials if t.state.is_finished()}
            config = planner.suggest(f"tune{next_id}")
            if config is None:
                break
            if seen is not None:
                seen.append(known)
            running.append((f"tune{next_id}", config["batch"]))
            drawn.update({it["number"]: it["params"] for it in config["batch"]})
            next_id += 1
        if not running:
            assert planner.done, "the lockstep waited with no batch running"
            break
        i = {"first": 0, "last": len(running) - 1,
             "shuffled": rng.randrange(len(running))}[order]
        tid, items = running.pop(i)
        rows = score_configs(spec, evidence, items)
        planner.complete(tid, {"batch_rows": json.dumps(rows, allow_nan=True)}, error=False)
    assert planner.done and not running
    assert len(drawn) == N_CONFIGS
    finished = [t for t in planner.study.trials if t.state.is_finished()]
    assert len(finished) == N_CONFIGS          # every held end was told in the end
    return drawn


@pytest.mark.parametrize("gate", ["pipeline", "rounds"])
def test_batched_draws_do_not_depend_on_the_end_order(tmp_path, evidence, gate):
    spec = _spec()
    runs = {order: _drive(spec, evidence, tmp_path / order, order=order, gate=gate)
            for order in ("first", "last", "shuffled")}
    assert runs["first"] == runs["last"] == runs["shuffled"]
    # TPE learned from the told batches: not every draw is the first strategy's prior draw
    assert len({p["strategy"] for p in runs["first"].values()}) > 1


@pytest.mark.parametrize("order", ["first", "last", "shuffled"])
def test_the_ith_batch_is_asked_from_exactly_the_batches_up_to_i_minus_the_slots(
        tmp_path, evidence, order):
    """The pipeline's history, batch by batch (the rounds' for contrast: a round's batches
    share one history, the batches of the previous rounds)."""
    spec, seen = _spec(), []
    drawn = _drive(spec, evidence, tmp_path / "p", order=order, seen=seen)
    numbers = sorted(drawn)
    batches = [set(numbers[i:i + BATCH]) for i in range(0, N_CONFIGS, BATCH)]
    assert len(seen) == len(batches)
    for i, known in enumerate(seen):
        assert known == set().union(*batches[:max(0, i - SLOTS + 1)]), f"batch {i}"
    seen_rounds = []
    _drive(spec, evidence, tmp_path / "r", order=order, gate="rounds", seen=seen_rounds)
    for i, known in enumerate(seen_rounds):
        assert known == set().union(*batches[:i - i % SLOTS]), f"rounds, batch {i}"


def test_without_the_lockstep_the_end_order_changes_the_draws(tmp_path, evidence):
    """The control: the same loop, the planner asking whenever a slot is free (the batched
    path before it had a lockstep) draws other configs when the batches end in another
    order, so the test above can tell the two apart."""
    spec = _spec()
    first = _drive(spec, evidence, tmp_path / "first", order="first", gate="none")
    last = _drive(spec, evidence, tmp_path / "last", order="last", gate="none")
    assert first != last
