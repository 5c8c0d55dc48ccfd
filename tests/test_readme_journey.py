"""README's "in your training loop" snippet runs as written against an exported winner."""

from __future__ import annotations

import torch
from torch import nn

import esper_ab
from esper_ab.export import build_winner, write_winner
from esper_ab.gate import GateConfig
from esper_ab.gradients import GradientCollector
from esper_ab.sweeps.spec import load_sweep_spec


def test_training_loop_snippet(tmp_path):
    spec = load_sweep_spec("search_spaces/smoke.yaml")
    doc = build_winner(gate=GateConfig(strategy="exponent", strategy_params={"a": 0.25},
                                       threshold=0.01, min_epochs=2),
                       analysis={}, label="t001-exponent", experiment="smoke",
                       sweep_run_id="r", trial_run_id="t", spec=spec, versions={},
                       git_commit="unknown", forced=True)
    path = write_winner(doc, tmp_path / "winner.yaml")

    torch.manual_seed(0)
    host, seed_module = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), nn.Linear(8, 8)
    gate = esper_ab.load_gate(path)
    collector = GradientCollector({"host": host, "seed": seed_module})
    tracker = gate.tracker("attention")
    decisions = []
    for _epoch in range(3):
        for _step in range(4):
            x = torch.randn(16, 8)
            h = host[0](x)
            y = h + (seed_module(h.detach()) - seed_module(h.detach()).detach())  # STE slot
            loss = nn.functional.cross_entropy(host[2](host[1](y)), torch.randint(0, 2, (16,)))
            host.zero_grad(), seed_module.zero_grad()
            loss.backward()
            stats = collector.measure()
            tracker.observe_step(stats["seed"], stats["host"])
        decisions.append(tracker.end_epoch())
    assert [d.epochs_observed for d in decisions[:2]] == [1, 2]
    assert not decisions[0].passed  # min_epochs = 2
    assert decisions[1].passed and decisions[1].epoch == 2 and decisions[1].value > 0.01
