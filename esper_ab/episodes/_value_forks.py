"""Ground-truth value of every seed: fork at the decision point, blend, train a fixed
horizon, and compare held-out loss and accuracy with a placebo fork. Private to
``esper_ab.episodes.runner``.

Every fork starts from the same host and optimizer state, reads the same batches in the
same order (one stream seed for all forks) and uses no other randomness, so the placebo
fork differs from a seed fork only by the seed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from esper_ab.episodes import _stacked as stacked
from esper_ab.episodes._incubation import Incubated, IncubationSettings, SeedKey, load_host
from esper_ab.episodes._training import (
    BatchStream,
    BlendHook,
    adamw,
    clip_,
    evaluate,
    phase_seed,
    ramp_alpha,
    train_step,
)
from esper_ab.episodes.blueprints import PLACEBO, build_seed
from esper_ab.episodes.workloads import Workload


@dataclass(frozen=True)
class ForkSettings:
    blend_steps: int
    horizon_steps: int
    ramp: str
    eval_batch_size: int


@dataclass(frozen=True, eq=False)
class ForkOutcome:
    """Held-out results at the end of one fork (CPU floats)."""

    heldout_loss: float
    heldout_acc: float
    heldout_acc_seed_off: float  # same fork, seed switched off (alpha = 0)
    correct: np.ndarray  # per held-out target, for the paired standard error


def _fork_seed(workload: Workload, incubated: Incubated, key: SeedKey | None,
               incubation: IncubationSettings, *, width: int, device: torch.device,
               seed_state: dict | None = None, seed_optimizer: dict | None = None):
    """(slot, seed module, its parameters, its optimizer or None) of one fork, restored at
    the decision point; ``key=None`` is a fresh placebo at the first slot."""
    slot = key.slot if key is not None else incubated.keys[0].slot
    blueprint = key.blueprint if key is not None else PLACEBO
    seed = build_seed(blueprint, topology=workload.topology,  # type: ignore[arg-type]
                      width=width).to(device)
    if key is not None:
        seed.load_state_dict(incubated.seed_states[key.seed_id] if seed_state is None
                             else seed_state)
    params = list(seed.parameters())
    seed_opt = (adamw(params, lr=incubation.seed_lr, weight_decay=incubation.weight_decay)
                if params else None)
    saved_opt = seed_optimizer
    if saved_opt is None and key is not None:
        saved_opt = incubated.seed_optimizers.get(key.seed_id)
    if seed_opt is not None and saved_opt is not None:
        seed_opt.load_state_dict(copy.deepcopy(saved_opt))  # never alias the snapshot
    return slot, seed, params, seed_opt


def run_fork(workload: Workload, incubated: Incubated, key: SeedKey | None,
             incubation: IncubationSettings, forks: ForkSettings, *, replicate: int,
             device: torch.device, seed_state: dict | None = None,
             seed_optimizer: dict | None = None, blend_at: int = 0,
             total_steps: int | None = None) -> ForkOutcome:
    """Continue training from the decision point with the seed of ``key`` blending in.

    ``key=None`` is the control: a placebo at the first slot. ``blend_at`` delays the ramp
    (closed-loop mode); ``total_steps`` defaults to ramp + horizon.
    """
    host, host_opt = load_host(workload, incubated.host, settings_lr=incubation.host_lr,
                               weight_decay=incubation.weight_decay, device=device)
    slot0 = key.slot if key is not None else incubated.keys[0].slot
    slot, seed, params, seed_opt = _fork_seed(
        workload, incubated, key, incubation, width=host.slot_width(slot0), device=device,
        seed_state=seed_state, seed_optimizer=seed_optimizer)
    hook = BlendHook(slot, seed)
    host_params = list(host.parameters())
    stream = BatchStream(workload.n_train, incubation.batch_size, phase_seed(replicate, "value"))
    n_steps = forks.blend_steps + forks.horizon_steps if total_steps is None else total_steps
    for t in range(n_steps):
        hook.alpha = 0.0 if t < blend_at else ramp_alpha(t - blend_at, forks.blend_steps,
                                                         forks.ramp)
        host_opt.zero_grad(set_to_none=True)
        if seed_opt is not None:
            seed_opt.zero_grad(set_to_none=True)
        train_step(host, workload, stream.next(), hook=hook, device=device)
        clip_(host_params, incubation.grad_clip)
        clip_(params, incubation.grad_clip)
        host_opt.step()
        if seed_opt is not None:
            seed_opt.step()
    on = evaluate(host, workload, hook=hook, device=device, batch_size=forks.eval_batch_size)
    alpha, hook.alpha = hook.alpha, 0.0
    off = evaluate(host, workload, hook=hook, device=device, batch_size=forks.eval_batch_size)
    hook.alpha = alpha
    return ForkOutcome(on.loss, on.acc, off.acc, on.correct)


def measure_values(workload: Workload, incubated: Incubated, incubation: IncubationSettings,
                   forks: ForkSettings, *, replicate: int, device: torch.device,
                   on_fork: Callable[[], None] | None = None, batched: bool = False,
                   ) -> tuple[ForkOutcome, dict[str, ForkOutcome]]:
    """(control placebo fork, one fork per seed) — no seed is skipped (no censoring).

    ``batched=True`` trains every fork together as one wide network (``_stacked``; the CNN
    host only, other hosts run one at a time); ``False`` runs them one at a time. The two
    agree up to float32 rounding grown over the fork's optimizer steps (values within
    ~1.3 pp; the tolerance is pinned by ``tests/episodes/test_batched_forks.py``), which is
    not equality: the episode's format (``runner.episode_format``, in its cache key) says
    which path computed it, so a cached episode and a fresh one never differ silently.
    """
    keys: Sequence[SeedKey] = incubated.keys
    if batched and not stacked.supports(workload.build_host()):
        batched = False                       # only the CNN host can be stacked
    if batched:
        results = _measure_stacked(workload, incubated, incubation, forks,
                                   replicate=replicate, device=device)
        for _ in results:
            if on_fork is not None:
                on_fork()
        return results[0], {key.seed_id: out for key, out in zip(keys, results[1:],
                                                                  strict=True)}
    control = run_fork(workload, incubated, None, incubation, forks, replicate=replicate,
                       device=device)
    if on_fork is not None:
        on_fork()
    outcomes = {}
    for key in keys:
        outcomes[key.seed_id] = run_fork(workload, incubated, key, incubation, forks,
                                         replicate=replicate, device=device)
        if on_fork is not None:
            on_fork()
    return control, outcomes


def _measure_stacked(workload: Workload, incubated: Incubated, incubation: IncubationSettings,
                     forks: ForkSettings, *, replicate: int, device: torch.device,
                     ) -> list[ForkOutcome]:
    """The control fork and one fork per key, trained together (see ``_stacked``): what
    ``run_fork`` gives for each, in that order."""
    host, host_opt = load_host(workload, incubated.host, settings_lr=incubation.host_lr,
                               weight_decay=incubation.weight_decay, device=device)
    fork_keys: list[SeedKey | None] = [None, *incubated.keys]
    k = len(fork_keys)
    model = stacked.StackedCNN(host, k).to(device)  # type: ignore[arg-type]
    host_params = model.host_parameters()
    opt = adamw(host_params, lr=incubation.host_lr, weight_decay=incubation.weight_decay)
    opt.load_state_dict(stacked.stacked_optimizer_state(host_opt.state_dict(), k))
    placed: dict[str, list[tuple[int, torch.nn.Module]]] = {}
    seed_params, seed_opts = [], []
    for j, key in enumerate(fork_keys):
        slot0 = key.slot if key is not None else incubated.keys[0].slot
        slot, seed, params, seed_opt = _fork_seed(workload, incubated, key, incubation,
                                                  width=host.slot_width(slot0), device=device)
        placed.setdefault(slot, []).append((j, seed))
        if params:
            seed_params.append(params)
        if seed_opt is not None:
            seed_opts.append(seed_opt)
    seed_opt = stacked.merged_adamw(seed_opts, lr=incubation.seed_lr,
                                    weight_decay=incubation.weight_decay)
    clip_seeds = stacked.GroupClipper(seed_params, incubation.grad_clip)  # each seed alone
    hook = stacked.StackedBlendHook(placed, {s: host.slot_width(s) for s in placed})
    stream = BatchStream(workload.n_train, incubation.batch_size, phase_seed(replicate, "value"))
    n_steps = forks.blend_steps + forks.horizon_steps
    # every batch's indices on the device at once: no host-to-device copy per step
    batches = (torch.stack([stream.next() for _ in range(n_steps)]).to(
        workload.train_x.device).unbind() if n_steps else ())
    for t in range(n_steps):
        hook.alpha = ramp_alpha(t, forks.blend_steps, forks.ramp)
        opt.zero_grad(set_to_none=True)
        if seed_opt is not None:
            seed_opt.zero_grad(set_to_none=True)
        idx = batches[t]
        stacked.stacked_loss(model(workload.train_x[idx], hook), workload.train_y[idx],
                             loss=workload.plugin.loss).backward()   # the workload's own
        stacked.clip_per_fork_(host_params, incubation.grad_clip)
        clip_seeds()
        opt.step()
        if seed_opt is not None:
            seed_opt.step()
    on = stacked.evaluate_stacked(model, workload, hook=hook, batch_size=forks.eval_batch_size)
    alpha, hook.alpha = hook.alpha, 0.0
    off = stacked.evaluate_stacked(model, workload, hook=hook, batch_size=forks.eval_batch_size)
    hook.alpha = alpha
    return [ForkOutcome(a.loss, a.acc, b.acc, a.correct) for a, b in zip(on, off, strict=True)]
