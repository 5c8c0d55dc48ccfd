"""Closed-loop mode: the gate decides when each seed blends. Private to ``esper_ab.episodes.runner``.

Each (slot, blueprint) runs alone from the same pretrained host, reading the same batches --
those of the recorded episode's incubation, so that up to the gate's pass a closed-loop run
is that episode's TRAINING phase and replay predicts its blend epoch exactly (same device
type and thread settings; tests/test_multi_fidelity.py checks it):
TRAINING (detached input, straight-through output, the gate observing every epoch) until the
gate passes, then BLENDING over the configured ramp, then the seed stays in. Every run
trains for the same total number of steps, so a seed the gate never admits leaves a host
that is bit-identical to the no-seed control.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from esper_ab.episodes._incubation import SeedKey, germinate, load_host
from esper_ab.episodes._memory import reused_buffers
from esper_ab.episodes._training import (
    BatchStream,
    BlendHook,
    IncubationHook,
    adamw,
    clip_,
    evaluate,
    phase_seed,
    pretrain_host,
    ramp_alpha,
    train_step,
)
from esper_ab.episodes.blueprints import PLACEBO
from esper_ab.episodes.workloads import Workload, build_workload
from esper_ab.gate import StepMeasurement
from esper_ab.gradients import GradientCollector


def _run(workload: Workload, start, key: SeedKey | None, config, *, gate, replicate: int,
         device: torch.device) -> dict:
    host, host_opt = load_host(workload, start, settings_lr=config.host_lr,
                               weight_decay=config.weight_decay, device=device)
    spe = config.steps_per_epoch
    total = (config.incubation_epochs + config.blend_epochs + config.horizon_epochs) * spe
    ramp_steps = config.blend_epochs * spe
    # The incubation stream of the recorded episode: until the gate passes, a closed-loop run
    # is that episode's TRAINING phase, so replay predicts its blend epoch exactly.
    stream = BatchStream(workload.n_train, config.batch_size, phase_seed(replicate, "incubate"))
    host_params = list(host.parameters())
    seed = None
    if key is not None:
        seed = germinate([key], host, topology=workload.topology, replicate=replicate,
                         device=device)[key.seed_id]
    params = list(seed.parameters()) if seed is not None else []
    seed_opt = adamw(params, lr=config.seed_lr, weight_decay=config.weight_decay) if params \
        else None
    tracker = gate.tracker(key.blueprint) if key is not None else None
    incubating = IncubationHook({key.slot: [seed]}) if key is not None else None
    blending = BlendHook(key.slot, seed) if key is not None else None
    collector = GradientCollector({"host": host, "seed": seed}) if seed is not None else None
    blend_start: int | None = None
    pass_epoch: int | None = None
    pending, first_order = [], []
    for t in range(total):
        training = key is not None and blend_start is None
        hook = incubating if training else blending
        if blending is not None and blend_start is not None:
            blending.alpha = ramp_alpha(t - blend_start, ramp_steps, config.ramp)
        host_opt.zero_grad(set_to_none=True)
        if seed_opt is not None:
            seed_opt.zero_grad(set_to_none=True)
        train_step(host, workload, stream.next(), hook=hook, device=device)
        if training:
            pending.append(collector.collect())
            first_order.append(incubating.first_order_terms(key.slot)[0])
        clip_(host_params, config.grad_clip)
        clip_(params, config.grad_clip)
        host_opt.step()
        if seed_opt is not None:
            seed_opt.step()
        # The gate may pass only where a full ramp still fits before the end.
        if training and (t + 1) % spe == 0 and t + 1 + ramp_steps <= total:
            stats = collector.materialize(pending)  # SYNC POINT: once per epoch
            fo = torch.stack(first_order).double().cpu()
            steps = [StepMeasurement(s["seed"], s["host"], float(f[0]), float(f[1]),
                                     float(f[2])) for s, f in zip(stats, fo, strict=True)]
            pending, first_order = [], []
            decision = tracker.observe_epoch(steps)
            if decision.passed:
                pass_epoch, blend_start = decision.epoch, t + 1
        elif training and (t + 1) % spe == 0:
            pending, first_order = [], []
    final = evaluate(host, workload, hook=blending if blend_start is not None else None,
                     device=device, batch_size=config.eval_batch_size)
    return {"admitted": blend_start is not None, "blend_epoch": pass_epoch,
            "steps_to_blend": blend_start, "final_heldout_acc": final.acc,
            "final_heldout_loss": final.loss}


@reused_buffers()
def closed_loop(config, *, replicate: int, gate, device: torch.device,
                cache_root: Path | None, progress=None) -> pd.DataFrame:
    workload = build_workload(config.workload, seed=replicate).to(device)
    start, _ = pretrain_host(workload, replicate=replicate, device=device,
                             cache_dir=None if cache_root is None else cache_root / "hosts")
    keys = [SeedKey(slot, bp) for slot, bp in config.seed_keys() if bp != PLACEBO]
    control = _run(workload, start, None, config, gate=gate, replicate=replicate, device=device)
    rows = []
    for i, key in enumerate(keys):
        out = _run(workload, start, key, config, gate=gate, replicate=replicate, device=device)
        rows.append({"replicate": replicate, "workload": config.workload.name,
                     "slot": key.slot, "blueprint": key.blueprint, "seed_id": key.seed_id,
                     **out, "control_heldout_acc": control["final_heldout_acc"],
                     "control_heldout_loss": control["final_heldout_loss"],
                     "gain_vs_control_pp": 100.0 * (out["final_heldout_acc"]
                                                    - control["final_heldout_acc"])})
        if progress is not None:
            progress("closed-loop", i + 1, len(keys))
    table = pd.DataFrame(rows)
    table["blend_epoch"] = table["blend_epoch"].astype("Int64")
    table["steps_to_blend"] = table["steps_to_blend"].astype("Int64")
    return table
