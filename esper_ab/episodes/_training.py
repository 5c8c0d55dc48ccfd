"""Training mechanics shared by the episode phases: data streams, slot hooks, optimizers,
evaluation and the on-disk cache of pretrained hosts. Private to ``esper_ab.episodes.runner``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper_ab.episodes._cache import load_tensors, save_tensors
from esper_ab.episodes.workloads import IGNORE_INDEX, Workload, config_hash
from esper_ab.errors import ConfigError

PHASE_SALT = {"host": 1, "pretrain": 2, "incubate": 3, "value": 4, "seed": 5, "closed": 6}


def phase_seed(replicate: int, phase: str, *extra: str) -> int:
    """A 62-bit RNG seed for one phase of one replicate, stable across processes."""
    text = "|".join([str(replicate), phase, *extra])
    return int(config_hash(text, length=15), 16)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class BatchStream:
    """An endless stream of minibatch indices: a fresh permutation per pass, from its own
    generator. Two streams with the same seed give the same batches (data-order pairing)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self._n, self._bs = n, min(batch_size, n)
        self._gen = generator(seed)
        self._perm = torch.randperm(n, generator=self._gen)
        self._pos = 0

    def next(self) -> Tensor:
        if self._pos + self._bs > self._n:
            self._perm = torch.randperm(self._n, generator=self._gen)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self._bs]
        self._pos += self._bs
        return idx


def adamw(params: Sequence[nn.Parameter], *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # foreach=False keeps the CPU update order independent of the parameter grouping.
    return torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay, foreach=False)


class _StraightThrough(torch.autograd.Function):
    """Forward: exactly ``h``. Backward: ``dL/dy`` to ``h`` and to every seed output.

    This is ``y = h + sum_i (s_i - s_i.detach())`` with the forward made exact even when a
    seed output is NaN or inf (the formula would then poison the host).
    """

    @staticmethod
    def forward(ctx, h: Tensor, *seed_outputs: Tensor) -> Tensor:  # noqa: D102
        ctx.n_seeds = len(seed_outputs)
        return h.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        return (grad,) + (grad,) * ctx.n_seeds


@dataclass
class SlotProbe:
    """What one incubation forward left at one slot, for the first-order term."""

    h: Tensor
    seed_outputs: list[Tensor]
    grad: Tensor | None = None


class IncubationHook:
    """TRAINING stage for every seed at every slot: detached input, straight-through output.

    ``seeds[slot]`` lists the modules incubating there. After ``backward`` the probes hold
    ``dL/dy`` per slot, so ``first_order_terms`` can compute ``-<dL/dy, s - h>``.
    """

    def __init__(self, seeds: Mapping[str, Sequence[nn.Module]]) -> None:
        self.seeds = seeds
        self.probes: dict[str, SlotProbe] = {}

    def __call__(self, slot: str, h: Tensor) -> Tensor:
        modules = self.seeds.get(slot)
        if not modules:
            return h
        h_in = h.detach()
        outputs = [m(h_in) for m in modules]
        y = _StraightThrough.apply(h, *outputs)
        probe = SlotProbe(h_in, [s.detach() for s in outputs])
        if y.requires_grad:
            def keep(grad: Tensor, probe: SlotProbe = probe) -> None:
                probe.grad = grad.detach()
            y.register_hook(keep)
        self.probes[slot] = probe
        return y

    def first_order_terms(self, slot: str) -> Tensor:
        """Per seed at ``slot``: rows (first_order, ||dL/dy||, ||s - h||), on the device."""
        probe = self.probes[slot]
        g = probe.grad if probe.grad is not None else torch.zeros_like(probe.h)
        deltas = torch.stack([(s - probe.h).double() for s in probe.seed_outputs])
        g64 = g.double()
        dot = (deltas * g64).flatten(1).sum(1)
        g_l2 = g64.norm().expand_as(dot)
        d_l2 = deltas.flatten(1).norm(dim=1)
        return torch.stack([-dot, g_l2, d_l2], dim=1)


class BlendHook:
    """BLENDING and after: ``y = h + alpha (s - h)`` with the seed fed the live ``h``."""

    def __init__(self, slot: str, seed: nn.Module) -> None:
        self.slot, self.seed, self.alpha = slot, seed, 0.0

    def __call__(self, slot: str, h: Tensor) -> Tensor:
        if slot != self.slot or self.alpha == 0.0:
            return h
        return h + self.alpha * (self.seed(h) - h)


def ramp_alpha(step: int, n_steps: int, shape: str) -> float:
    """Blend weight after ``step + 1`` of ``n_steps`` ramp steps (1.0 past the ramp)."""
    if n_steps <= 0 or step + 1 >= n_steps:
        return 1.0
    t = (step + 1) / n_steps
    if shape == "linear":
        return t
    lo, hi = 1 / (1 + math.exp(6.0)), 1 / (1 + math.exp(-6.0))
    return (1 / (1 + math.exp(-12.0 * (t - 0.5))) - lo) / (hi - lo)


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Held-out mean loss, accuracy and per-target correctness (CPU)."""

    loss: float
    acc: float
    correct: np.ndarray  # bool, one entry per scored target, in test-set order


class HeldOut:
    """One model's held-out loss and correctness, accumulated batch by batch on the device
    by the workload's own ``loss``, ``accuracy`` and ``correct``.

    - loss: with the default (``task_loss``) the cross-entropy summed over scored targets
      over their number; a plug-in's own ``loss`` (a batch mean) is averaged over the
      batches weighted by their rows.
    - accuracy: with the defaults argmax over scored targets; else the plug-in's
      ``(n_correct, n_scored)`` summed, its ``correct`` flags kept per target (the two must
      agree).

    With the defaults the operations are exactly those the episodes always ran, so the
    built-in workloads' values (and cached episodes) are unchanged.
    """

    def __init__(self, workload: Workload, device: torch.device) -> None:
        self.plugin = workload.plugin
        self.default_loss = self.plugin.default_loss
        self.default_acc = self.plugin.default_accuracy
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.counts = torch.zeros(3, dtype=torch.int64, device=device)  # correct, scored, rows
        self.flags: list[Tensor] = []

    def add(self, logits: Tensor, y: Tensor) -> None:
        rows = logits.shape[0]
        if self.default_loss:
            flat, fy = logits, y
            if flat.dim() == 3:
                flat, fy = flat.reshape(-1, flat.shape[-1]), fy.reshape(-1)
            scored = fy != IGNORE_INDEX
            self.loss_sum += F.cross_entropy(flat[scored], fy[scored], reduction="sum").double()
            if not self.default_acc:
                self.counts[2] += scored.sum()
        else:
            self.loss_sum += self.plugin.loss(logits, y).detach().double() * rows
            self.counts[2] += rows
        flags = self.plugin.flags(logits, y)          # argmax (correct_flags) by default
        if self.plugin.derived_accuracy:              # correct alone: its sum and count
            self.counts[0] += flags.sum()
            self.counts[1] += flags.numel()
        elif not self.default_acc:
            n_correct, n_scored = self.plugin.counts(logits, y)
            self.counts[0] += n_correct.to(self.counts.device).long()
            self.counts[1] += n_scored.to(self.counts.device).long()
        self.flags.append(flags)

    def result(self) -> Evaluation:
        # SYNC POINT: one copy per evaluation.
        correct = torch.cat(self.flags).cpu().numpy() if self.flags else np.zeros(0, bool)
        n_correct, n_scored, n_loss = (0, 0, 0) if self.default_loss and self.default_acc \
            else (int(v) for v in self.counts.cpu().tolist())
        if self.default_acc:
            acc = float(correct.mean()) if correct.size else 0.0
        else:
            if (int(correct.sum()), correct.size) != (n_correct, n_scored):
                raise ConfigError(
                    f"workload {self.plugin.name}: its correct() marks {int(correct.sum())} "
                    f"of {correct.size} held-out targets correct but its accuracy() counts "
                    f"{n_correct} of {n_scored}: make them agree (accuracy = mean of correct)")
            acc = n_correct / n_scored if n_scored else 0.0
        if self.default_loss:
            n_loss = correct.size if self.default_acc else n_loss
        return Evaluation(float(self.loss_sum.item()) / max(n_loss, 1), acc, correct)


@torch.no_grad()
def evaluate(host: nn.Module, workload: Workload, *, hook=None, device: torch.device,
             batch_size: int = 1024) -> Evaluation:
    """Evaluate ``host`` (eval mode) with ``hook`` in its slots on the held-out split, by
    the workload's own loss and accuracy (``HeldOut``)."""
    was_training = host.training
    host.eval()
    held_out = HeldOut(workload, device)
    n = workload.test_x.shape[0]
    for start in range(0, n, batch_size):
        x = workload.test_x[start:start + batch_size]
        y = workload.test_y[start:start + batch_size]
        held_out.add(host(x, hook), y)
    host.train(was_training)
    return held_out.result()


def train_step(host: nn.Module, workload: Workload, idx: Tensor, *, hook, device) -> Tensor:
    """Forward and backward on one batch (the workload's tensors live on ``device``)."""
    idx = idx.to(workload.train_x.device)
    x, y = workload.train_x[idx], workload.train_y[idx]
    loss = workload.loss(host(x, hook), y)   # the workload's loss (default: task_loss)
    loss.backward()
    return loss.detach()


def clip_(params: Sequence[nn.Parameter], max_norm: float) -> None:
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)


@dataclass(frozen=True)
class HostState:
    """A host and its optimizer at one point in time (CPU copies)."""

    host: dict[str, Tensor]
    optimizer: dict


def pretrain_host(workload: Workload, *, replicate: int, device: torch.device,
                  cache_dir: Path | None) -> tuple[HostState, bool]:
    """Train the host from scratch, or load it from the cache (keyed by a content hash of
    the workload config, the replicate and the device type). Returns (state, loaded)."""
    key = config_hash(workload.config, replicate, device.type, "pretrain-v1")
    path = None if cache_dir is None else Path(cache_dir) / f"host-{key}.pt"
    blob = load_tensors(path) if path is not None else None   # verified, weights only
    if blob is not None:
        return HostState(blob["host"], blob["optimizer"]), True
    cfg = workload.config.pretrain
    host = workload.build_host(generator=generator(phase_seed(replicate, "host"))).to(device)
    opt = adamw(list(host.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    stream = BatchStream(workload.n_train, cfg.batch_size, phase_seed(replicate, "pretrain"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: _cosine(t, cfg.steps, cfg.final_lr_fraction))
    host.train()
    for _ in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        train_step(host, workload, stream.next(), hook=None, device=device)
        opt.step()
        sched.step()
    for group in opt.param_groups:  # the saved state carries no schedule
        group.pop("initial_lr", None)
    state = HostState(to_cpu(host.state_dict()), to_cpu(opt.state_dict()))
    if path is not None:
        save_tensors(path, {"host": state.host, "optimizer": state.optimizer})
    return state, False


def _cosine(step: int, total: int, final_fraction: float) -> float:
    """Cosine decay of the learning-rate factor from 1 to ``final_fraction``."""
    t = min(step / max(total, 1), 1.0)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t))


def to_cpu(obj):
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
