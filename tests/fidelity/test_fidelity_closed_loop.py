"""Up to G2 a closed-loop run is the recorded episode's incubation (same batches, same seed
init), so replay predicts its admits and blend epochs exactly."""

from __future__ import annotations

import pytest
import torch
from fidelity_helpers import space

from esper_ab.episodes.runner import run_closed_loop, run_episode
from esper_ab.gate import PRESETS, GateConfig
from esper_ab.replay import TraceSet, replay_decisions
from esper_ab.study.spec import parse_sweep_spec

GATES = {
    # cosine of the first-order term: its pass epoch moves with the batches read
    "first_order_cosine": GateConfig(strategy="first_order_value",
                                     strategy_params={"mode": "cosine"}, threshold=0.0,
                                     min_epochs=1),
    "baseline_ema": GateConfig(strategy="baseline", threshold=1.0, window="mean",
                               ema_decay=0.5, min_epochs=1),
    "esper_lite": PRESETS["esper_lite_baseline"],
}


@pytest.mark.parametrize("name", list(GATES))
def test_replay_predicts_the_closed_loop_blend_epoch_exactly(recorded, name):
    torch.set_num_threads(1)
    config = parse_sweep_spec(space()).workloads[0].episode_config()
    gate = GATES[name]
    episode = run_episode(config, replicate=1, cache_dir=recorded.cache)
    predicted = replay_decisions(TraceSet.from_episode(episode), gate).decisions.set_index("seed_id")
    loop = run_closed_loop(config, replicate=1, gate=gate,
                           cache_dir=recorded.cache).table.set_index("seed_id")
    assert len(loop) == 4
    for seed_id, row in loop.iterrows():
        rep = predicted.loc[seed_id]
        if row["admitted"] and row["blend_epoch"] > config.incubation_epochs:
            assert not rep["passed"]          # later than the recorded window: unseen
            continue
        assert bool(row["admitted"]) == bool(rep["passed"]), seed_id
        if row["admitted"]:
            assert int(row["blend_epoch"]) == int(rep["pass_epoch"]), seed_id
    if name == "first_order_cosine":   # the case that tells the batches apart
        epochs = loop["blend_epoch"].dropna().astype(int)
        assert len(set(epochs)) > 1 or epochs.max() > 1
