"""``esper-ab demo``: what exists so far (replaced by the smoke sweep when sweeps land)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo on embedded defaults")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from esper_ab.commands.strategies import format_table, strategy_table
    from esper_ab.gate import Gate, GateConfig, StepMeasurement
    from esper_ab.gradients import GradStats

    print(format_table(strategy_table()))
    host = GradStats(sum_sq=4.0, sum_abs=150.0, numel=6400, n_tensors=12, n_with_grad=12)
    # Example per-step seed measurements (C=16 slot): a small seed with modest gradients
    # and a large one with big ones; 12 epochs of 4 steps each.
    seeds = {"norm (33 params)": GradStats(2e-4, 0.05, 33, 3, 3),
             "conv_heavy (4672 params)": GradStats(0.9, 50.0, 4672, 4, 4)}
    gates = {"esper_lite_baseline": Gate.from_preset("esper_lite_baseline"),
             "exponent a=0.25": Gate(GateConfig(strategy="exponent",
                                                strategy_params={"a": 0.25},
                                                threshold=0.02))}
    print("\nG2 on example measurements:")
    for seed_name, stats in seeds.items():
        epochs = [[StepMeasurement(stats, host)] * 4] * 12
        for gate_name, gate in gates.items():
            d = gate.decide(epochs, blueprint=seed_name.split()[0])
            print(f"  {seed_name:<26} {gate_name:<20} passed={d.passed!s:<5} "
                  f"epoch={d.epoch} value={d.value:.4g}")
    return 0
