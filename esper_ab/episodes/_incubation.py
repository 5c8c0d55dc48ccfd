"""Germinate every seed and incubate all of them at once on one host trajectory.

Private to ``esper_ab.episodes.runner``. The host trains exactly as it would with no seed: each seed
reads the detached slot activation and joins the graph through a straight-through estimator,
so the forward value is ``h`` bit for bit and the host gradients are unchanged. Seeds have
their own optimizers. Per step the trace keeps the host's and every seed's ``GradStats``
(before clipping) and the first-order term ``-<dL/dy, s - h>``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from esper_ab.episodes._stacked import merged_adamw
from esper_ab.episodes._training import (
    BatchStream,
    HostState,
    IncubationHook,
    adamw,
    clip_,
    generator,
    phase_seed,
    to_cpu,
    train_step,
)
from esper_ab.episodes.blueprints import build_seed
from esper_ab.episodes.workloads import Workload
from esper_ab.gradients import GradientCollector, GradStats


@dataclass(frozen=True)
class SeedKey:
    """One germinated seed: its slot and blueprint. ``seed_id`` is ``slot/blueprint``."""

    slot: str
    blueprint: str

    @property
    def seed_id(self) -> str:
        return f"{self.slot}/{self.blueprint}"


@dataclass(frozen=True)
class IncubationSettings:
    steps_per_epoch: int
    epochs: int
    batch_size: int
    host_lr: float
    seed_lr: float
    weight_decay: float
    grad_clip: float


@dataclass(frozen=True)
class StepRecord:
    """One incubation step for all seeds (materialized, CPU)."""

    epoch: int
    step: int
    train_loss: float
    host: GradStats
    seeds: dict[str, GradStats]
    first_order: torch.Tensor  # (n_seeds, 3): -<g, s-h>, ||g||, ||s-h||


@dataclass(frozen=True)
class Incubated:
    """The decision point: host, seeds and their optimizers (CPU copies) plus the trace."""

    keys: tuple[SeedKey, ...]
    host: HostState
    seed_states: dict[str, dict[str, torch.Tensor]]
    seed_optimizers: dict[str, dict]
    steps: tuple[StepRecord, ...]


def germinate(keys: Sequence[SeedKey], host: nn.Module, *, topology: str, replicate: int,
              device: torch.device) -> dict[str, nn.Module]:
    """One fresh seed per key; each initialization depends only on (replicate, slot,
    blueprint), so adding or removing other blueprints changes nothing else."""
    return {
        k.seed_id: build_seed(
            k.blueprint, topology=topology, width=host.slot_width(k.slot),  # type: ignore[arg-type]
            generator=generator(phase_seed(replicate, "seed", k.slot, k.blueprint)),
        ).to(device)
        for k in keys
    }


def load_host(workload: Workload, state: HostState, *, settings_lr: float, weight_decay: float,
              device: torch.device):
    host = workload.build_host().to(device)
    host.load_state_dict(state.host)
    opt = adamw(list(host.parameters()), lr=settings_lr, weight_decay=weight_decay)
    # load_state_dict aliases CPU tensors; a deep copy keeps the snapshot immutable
    opt.load_state_dict(copy.deepcopy(state.optimizer))
    for group in opt.param_groups:
        group["lr"], group["weight_decay"] = settings_lr, weight_decay
    host.train()
    return host, opt


EpochCallback = Callable[[int, Sequence[StepRecord]], None]


def incubate(
    workload: Workload,
    start: HostState,
    keys: Sequence[SeedKey],
    settings: IncubationSettings,
    *,
    replicate: int,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
) -> Incubated:
    """Incubate every seed in ``keys`` for ``settings.epochs`` epochs (empty ``keys``: the
    seedless control run, used to check bit-identity)."""
    host, host_opt = load_host(workload, start, settings_lr=settings.host_lr,
                               weight_decay=settings.weight_decay, device=device)
    seeds = germinate(keys, host, topology=workload.topology, replicate=replicate, device=device)
    seed_opts = {sid: adamw(list(m.parameters()), lr=settings.seed_lr,
                            weight_decay=settings.weight_decay)
                 for sid, m in seeds.items() if any(True for _ in m.parameters())}
    seed_params = [list(seeds[sid].parameters()) for sid in seed_opts]
    # one optimizer steps every seed (the same update bit for bit, far fewer calls); the
    # per-seed optimizers share its state and export it
    seeds_opt = merged_adamw(list(seed_opts.values()), lr=settings.seed_lr,
                             weight_decay=settings.weight_decay)
    slots = list(dict.fromkeys(k.slot for k in keys))
    hook = IncubationHook({s: [seeds[k.seed_id] for k in keys if k.slot == s] for s in slots})
    # first-order rows come out grouped by slot; this puts them back in ``keys`` order
    grouped = [k for s in slots for k in keys if k.slot == s]
    back = torch.tensor([grouped.index(k) for k in keys], dtype=torch.long)
    collector = GradientCollector({"host": host, **seeds})
    host_params = list(host.parameters())
    stream = BatchStream(workload.n_train, settings.batch_size, phase_seed(replicate, "incubate"))
    records: list[StepRecord] = []
    step = 0
    for epoch in range(settings.epochs):
        pending, first_order, losses = [], [], []
        for _ in range(settings.steps_per_epoch):
            host_opt.zero_grad(set_to_none=True)
            if seeds_opt is not None:
                seeds_opt.zero_grad(set_to_none=True)
            losses.append(train_step(host, workload, stream.next(), hook=hook, device=device))
            pending.append(collector.collect())  # before clipping
            if slots:
                first_order.append(torch.cat([hook.first_order_terms(s) for s in slots]))
            clip_(host_params, settings.grad_clip)
            host_opt.step()
            for params in seed_params:   # each seed on its own, as clip_grad_norm_ does
                clip_(params, settings.grad_clip)
            if seeds_opt is not None:
                seeds_opt.step()
        # SYNC POINT: one device->host copy per epoch for stats, losses and first-order terms.
        stats = collector.materialize(pending)
        loss_cpu = torch.stack(losses).double().cpu().tolist()
        fo_cpu = (torch.stack(first_order).cpu()[:, back] if first_order
                  else torch.zeros(len(stats), 0, 3, dtype=torch.float64))
        epoch_records = []
        for i, st in enumerate(stats):
            epoch_records.append(StepRecord(
                epoch=epoch, step=step, train_loss=loss_cpu[i], host=st["host"],
                seeds={k.seed_id: st[k.seed_id] for k in keys}, first_order=fo_cpu[i]))
            step += 1
        records.extend(epoch_records)
        if on_epoch is not None:
            on_epoch(epoch, epoch_records)
    return Incubated(
        keys=tuple(keys),
        host=HostState(to_cpu(host.state_dict()), to_cpu(host_opt.state_dict())),
        seed_states={sid: to_cpu(m.state_dict()) for sid, m in seeds.items()},
        seed_optimizers={sid: to_cpu(o.state_dict()) for sid, o in seed_opts.items()},
        steps=tuple(records),
    )
