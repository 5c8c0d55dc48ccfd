"""Gradient statistics: one pass, honest names (stage 1 of the pipeline).

``GradStats`` holds the sufficient statistics of one parameter group's gradients
(sum of squares, sum of absolute values, element and tensor counts) overall and per
layer type. Every metric a strategy needs is *derived* from them, and each derived
metric is named for exactly what it is (ticket B7-PT-08):

- ``total_l2``            sqrt(sum g^2)                      (what clip_grad_norm_ uses)
- ``rms_per_element``     sqrt(sum g^2 / numel)
- ``mean_abs_per_element`` sum |g| / numel
- ``avg_per_tensor_l2``   sqrt(sum g^2) / n_tensors          (esper-lite's "gradient_norm")

``GradientCollector`` measures several groups (host, each seed) after ``backward()``
and *before* clipping. Work is grouped by (device, dtype) and done with fused
``torch._foreach_norm`` calls; results accumulate on the device. Nothing syncs with the
host until ``materialize()``, which turns many steps into ``GradStats`` with one copy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import nn

from esper_ab.errors import ConfigError

LayerType = Literal["conv", "linear", "norm", "embedding", "other"]
LAYER_TYPES: tuple[LayerType, ...] = get_args(LayerType)

# Accumulated quantities per (group, layer type), in this column order on the device.
_SUM_SQ, _SUM_ABS, _N_ZERO, _N_NONFINITE = range(4)
_N_ACC = 4

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
         nn.ConvTranspose3d)
_LINEAR = (nn.Linear, nn.Bilinear)
_NORM = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
         nn.RMSNorm)
_EMBEDDING = (nn.Embedding, nn.EmbeddingBag)
# When a tied parameter is owned by modules of several types, the first type listed wins.
_PRIORITY: tuple[LayerType, ...] = ("embedding", "conv", "linear", "norm", "other")


def classify_layer(module: nn.Module) -> LayerType:
    """The layer type of the parameters *directly* owned by ``module``."""
    if isinstance(module, _CONV):
        return "conv"
    if isinstance(module, _LINEAR):
        return "linear"
    if isinstance(module, _NORM):
        return "norm"
    if isinstance(module, _EMBEDDING):
        return "embedding"
    return "other"


@dataclass(frozen=True)
class TypeStats:
    """Gradient sums for the parameters of one layer type within a group."""

    sum_sq: float = 0.0
    sum_abs: float = 0.0
    numel: int = 0
    n_tensors: int = 0

    @property
    def rms_per_element(self) -> float:
        return math.sqrt(self.sum_sq / self.numel) if self.numel else math.nan


@dataclass(frozen=True)
class GradStats:
    """Sufficient gradient statistics of one parameter group at one step.

    ``numel`` and ``n_tensors`` count the group's parameters (the parameter count N of
    DOMAIN.md), whether or not they received a gradient. ``n_with_grad`` counts tensors
    whose ``.grad`` existed: ``n_with_grad == 0`` means *measured with no gradient*,
    which is not the same as a gradient that is exactly zero (``is_all_zero``).
    ``n_nonfinite`` and ``n_zero_elements`` count gradient *elements*.
    """

    sum_sq: float
    sum_abs: float
    numel: int
    n_tensors: int
    n_with_grad: int
    n_nonfinite: int = 0
    n_zero_elements: int = 0
    by_type: Mapping[str, TypeStats] = field(default_factory=dict)

    # -- derived metrics, each named for what it is -------------------------------
    @property
    def total_l2(self) -> float:
        return math.sqrt(self.sum_sq)

    @property
    def rms_per_element(self) -> float:
        return math.sqrt(self.sum_sq / self.numel) if self.numel else math.nan

    @property
    def mean_abs_per_element(self) -> float:
        return self.sum_abs / self.numel if self.numel else math.nan

    @property
    def avg_per_tensor_l2(self) -> float:
        """sqrt(sum g^2) / n_tensors: esper-lite's telemetry "gradient_norm" (B7-PT-08)."""
        return math.sqrt(self.sum_sq) / self.n_tensors if self.n_tensors else math.nan

    # -- states -------------------------------------------------------------------
    @property
    def has_gradient(self) -> bool:
        return self.n_with_grad > 0

    @property
    def is_finite(self) -> bool:
        return self.n_nonfinite == 0 and math.isfinite(self.sum_sq) and math.isfinite(
            self.sum_abs)

    @property
    def is_all_zero(self) -> bool:
        """Measured, finite, and every gradient element exactly zero (a dead seed)."""
        return self.has_gradient and self.is_finite and self.sum_abs == 0.0

    def type_stats(self, layer_type: str) -> TypeStats:
        return self.by_type.get(layer_type, TypeStats())

    # -- flat rows for columnar tables ----------------------------------------------
    SCALAR_FIELDS = ("sum_sq", "sum_abs", "numel", "n_tensors", "n_with_grad",
                     "n_nonfinite", "n_zero_elements")
    TYPE_FIELDS = ("sum_sq", "sum_abs", "numel", "n_tensors")

    def to_row(self, prefix: str = "") -> dict[str, float | int]:
        row: dict[str, float | int] = {f"{prefix}{f}": getattr(self, f)
                                       for f in self.SCALAR_FIELDS}
        for t in LAYER_TYPES:
            ts = self.type_stats(t)
            for f in self.TYPE_FIELDS:
                row[f"{prefix}{t}_{f}"] = getattr(ts, f)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, object], prefix: str = "") -> GradStats:
        by_type = {}
        for t in LAYER_TYPES:
            vals = {f: row[f"{prefix}{t}_{f}"] for f in cls.TYPE_FIELDS}
            if vals["numel"]:
                by_type[t] = TypeStats(float(vals["sum_sq"]), float(vals["sum_abs"]),
                                       int(vals["numel"]), int(vals["n_tensors"]))
        return cls(
            sum_sq=float(row[f"{prefix}sum_sq"]), sum_abs=float(row[f"{prefix}sum_abs"]),
            numel=int(row[f"{prefix}numel"]), n_tensors=int(row[f"{prefix}n_tensors"]),
            n_with_grad=int(row[f"{prefix}n_with_grad"]),
            n_nonfinite=int(row[f"{prefix}n_nonfinite"]),
            n_zero_elements=int(row[f"{prefix}n_zero_elements"]), by_type=by_type)

    @classmethod
    def column_names(cls, prefix: str = "") -> list[str]:
        cols = [f"{prefix}{f}" for f in cls.SCALAR_FIELDS]
        cols += [f"{prefix}{t}_{f}" for t in LAYER_TYPES for f in cls.TYPE_FIELDS]
        return cols


ParamGroup = nn.Module | Iterable[nn.Parameter] | Iterable[tuple[nn.Parameter, str]]


def typed_parameters(group: ParamGroup) -> list[tuple[nn.Parameter, LayerType]]:
    """Unique parameters of a group with their layer types; tied parameters once.

    A module is walked module by module so each parameter gets the type of the module
    that owns it; a parameter shared by several modules (tied embedding and output
    head) is counted once, with the type that comes first in ``_PRIORITY``.
    """
    seen: dict[int, tuple[nn.Parameter, LayerType]] = {}
    order: list[int] = []

    def add(p: nn.Parameter, t: LayerType) -> None:
        key = id(p)
        if key not in seen:
            seen[key] = (p, t)
            order.append(key)
        elif _PRIORITY.index(t) < _PRIORITY.index(seen[key][1]):
            seen[key] = (p, t)

    if isinstance(group, nn.Module):
        for module in group.modules():
            t = classify_layer(module)
            for p in module.parameters(recurse=False):
                add(p, t)
    else:
        for item in group:
            if isinstance(item, tuple):
                p, t = item
                if t not in LAYER_TYPES:
                    raise ConfigError(f"layer type {t!r} is unknown: use one of {LAYER_TYPES}")
                add(p, t)
            else:
                add(item, "other")
    return [seen[k] for k in order]


@dataclass(frozen=True)
class PendingStats:
    """One step's device-side accumulators; turn many into GradStats with ``materialize``."""

    acc: torch.Tensor                 # [n_groups * n_types, _N_ACC], float64, on device
    n_with_grad: tuple[int, ...]      # per group; known on the host without a sync


class GradientCollector:
    """Collect ``GradStats`` for named parameter groups with fused, sync-free kernels.

    >>> collector = GradientCollector({"host": host, "seed": seed_module})
    >>> loss.backward()
    >>> pending = collector.collect()          # before any gradient clipping
    >>> stats = collector.materialize([pending])[0]   # {"host": GradStats, "seed": ...}
    """

    def __init__(self, groups: Mapping[str, ParamGroup]):
        if not groups:
            raise ConfigError("groups={} is empty: pass at least one named parameter group")
        self.names: tuple[str, ...] = tuple(groups)
        self._params: list[nn.Parameter] = []
        self._slot: list[int] = []          # accumulator row of each parameter
        self._group_of: list[int] = []
        numel = [[0] * len(LAYER_TYPES) for _ in self.names]
        ntens = [[0] * len(LAYER_TYPES) for _ in self.names]
        for g, name in enumerate(self.names):
            for p, t in typed_parameters(groups[name]):
                ti = LAYER_TYPES.index(t)
                self._params.append(p)
                self._slot.append(g * len(LAYER_TYPES) + ti)
                self._group_of.append(g)
                numel[g][ti] += p.numel()
                ntens[g][ti] += 1
        self._numel = numel
        self._ntens = ntens

    def collect(self) -> PendingStats:
        """Launch the fused reductions for the current ``.grad`` values; no host sync."""
        n_rows = len(self.names) * len(LAYER_TYPES)
        buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        n_with_grad = [0] * len(self.names)
        for i, p in enumerate(self._params):
            if p.grad is not None:
                buckets.setdefault((p.grad.device, p.grad.dtype), []).append(i)
                n_with_grad[self._group_of[i]] += 1
        acc: torch.Tensor | None = None
        for (device, dtype), idx in buckets.items():
            grads = [self._params[i].grad for i in idx]
            # Half-precision gradients are reduced in float32; float64 stays float64.
            red = torch.float64 if dtype == torch.float64 else torch.float32
            # Four fused passes: L2, L1, L0 (non-zero count, NaN/inf included) and the
            # L0 of g*0, which is NaN exactly where g is non-finite.
            l2 = torch._foreach_norm(grads, 2, dtype=red)
            l1 = torch._foreach_norm(grads, 1, dtype=red)
            l0 = torch._foreach_norm(grads, 0, dtype=red)
            nonfinite = torch._foreach_norm(torch._foreach_mul(grads, 0.0), 0,
                                            dtype=red)
            l2s = torch.stack(l2).double()
            per_tensor = torch.stack(
                [l2s * l2s, torch.stack(l1).double(),
                 torch.tensor([g.numel() for g in grads], dtype=torch.float64,
                              device=device) - torch.stack(l0).double(),
                 torch.stack(nonfinite).double()], dim=1)
            # L0 counts NaN/inf as non-zero, so numel - L0 is exactly the zero count.
            rows = torch.tensor([self._slot[i] for i in idx], device=device)
            if acc is None:
                acc = torch.zeros(n_rows, _N_ACC, dtype=torch.float64, device=device)
            acc.index_add_(0, rows.to(acc.device), per_tensor.to(acc.device))
        if acc is None:
            acc = torch.zeros(n_rows, _N_ACC, dtype=torch.float64)
        return PendingStats(acc=acc, n_with_grad=tuple(n_with_grad))

    def materialize(self, pending: Sequence[PendingStats]) -> list[dict[str, GradStats]]:
        """Turn pending accumulators into GradStats, one dict per step."""
        if not pending:
            return []
        # SYNC POINT: the only device->host copy of the collector.
        host = torch.stack([p.acc.cpu() for p in pending]).numpy()
        out = []
        for step, p in enumerate(pending):
            out.append({name: self._build(host[step], g, p.n_with_grad[g])
                        for g, name in enumerate(self.names)})
        return out

    def measure(self) -> dict[str, GradStats]:
        """collect + materialize for one step (convenient; syncs immediately)."""
        return self.materialize([self.collect()])[0]

    def _build(self, acc, g: int, n_with_grad: int) -> GradStats:
        nt = len(LAYER_TYPES)
        rows = acc[g * nt:(g + 1) * nt]
        by_type = {}
        for ti, t in enumerate(LAYER_TYPES):
            if self._ntens[g][ti]:
                by_type[t] = TypeStats(float(rows[ti, _SUM_SQ]), float(rows[ti, _SUM_ABS]),
                                       self._numel[g][ti], self._ntens[g][ti])
        return GradStats(
            sum_sq=float(rows[:, _SUM_SQ].sum()), sum_abs=float(rows[:, _SUM_ABS].sum()),
            numel=sum(self._numel[g]), n_tensors=sum(self._ntens[g]),
            n_with_grad=n_with_grad,
            n_nonfinite=int(round(rows[:, _N_NONFINITE].sum())),
            n_zero_elements=int(round(rows[:, _N_ZERO].sum())), by_type=by_type)


def measure_groups(groups: Mapping[str, ParamGroup]) -> dict[str, GradStats]:
    """One-shot measurement of the current gradients of named groups."""
    return GradientCollector(groups).measure()
