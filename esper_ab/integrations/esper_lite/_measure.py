"""Gradient measurements as esper-lite's two G2 code paths take them, as ``GradStats``.

- **Kasmina** (heuristic path, ``kasmina/slot.py``): the host's and the seed's
  ``requires_grad`` parameters, listed once at germination, are the parameter counts N.
  esper-ab's own :class:`~esper_ab.gradients.GradientCollector` measures exactly that.
- **Simic** (PPO path, ``simic/telemetry/gradient_collector.py``): only the tensors whose
  ``.grad`` exists are measured and counted, and the gradients are cast to float64 *before*
  the norm. :class:`Float64Collector` does the same, with the same ops in the same order
  (``torch._foreach_norm`` over float64 copies, then ``stack(norms).pow(2).sum()``).

Both collect without a host sync at each step; ``materialize`` turns many steps into GradStats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from esper_ab.gradients import (
    LAYER_TYPES,
    GradientCollector,
    GradStats,
    TypeStats,
    typed_parameters,
)

TypedParams = list[tuple[nn.Parameter, str]]


def typed(params: Iterable[nn.Parameter], module: nn.Module | None = None) -> TypedParams:
    """``params`` (in their order, each once) with the layer type of the module owning it in
    ``module``; a parameter that ``module`` does not own is ``other``."""
    types = {id(p): t for p, t in typed_parameters(module)} if module is not None else {}
    seen: set[int] = set()
    out: TypedParams = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append((p, types.get(id(p), "other")))
    return out


@dataclass(frozen=True)
class _Pending:
    per_tensor: torch.Tensor | None     # [n_with_grad, 4]: L2, L1, L0, non-finite count
    total_sq: torch.Tensor | None       # stack(L2).pow(2).sum(), as Simic computes it
    types: tuple[int, ...]              # layer type index of each measured tensor
    numels: tuple[int, ...]


class Float64Collector:
    """Simic's measurement of named groups: float64 norms, counts of tensors with a gradient."""

    def __init__(self, groups: Mapping[str, TypedParams]):
        self.names = tuple(groups)
        self._groups = {n: [(p, LAYER_TYPES.index(t)) for p, t in groups[n]] for n in groups}

    @torch.no_grad()
    def collect(self) -> dict[str, _Pending]:
        out = {}
        for name in self.names:
            have = [(p, t) for p, t in self._groups[name] if p.grad is not None]
            if not have:
                out[name] = _Pending(None, None, (), ())
                continue
            g64 = [p.grad.detach().double() for p, _ in have]
            l2 = torch._foreach_norm(g64, 2)
            per = torch.stack([torch.stack(l2), torch.stack(torch._foreach_norm(g64, 1)),
                               torch.stack(torch._foreach_norm(g64, 0)),
                               torch.stack(torch._foreach_norm(torch._foreach_mul(g64, 0.0),
                                                               0))], dim=1)
            out[name] = _Pending(per, torch.stack(l2).pow(2).sum(), tuple(t for _, t in have),
                                 tuple(p.numel() for p, _ in have))
        return out

    def materialize(self, pending: Sequence[dict[str, _Pending]]) -> list[dict[str, GradStats]]:
        return [{name: _build(step[name]) for name in self.names} for step in pending]


def _build(p: _Pending) -> GradStats:
    if p.per_tensor is None:
        return GradStats(sum_sq=0.0, sum_abs=0.0, numel=0, n_tensors=0, n_with_grad=0)
    per = p.per_tensor.cpu().numpy()
    by_type: dict[str, TypeStats] = {}
    for ti, t in enumerate(LAYER_TYPES):
        rows = [i for i, k in enumerate(p.types) if k == ti]
        if rows:
            by_type[t] = TypeStats(float((per[rows, 0] ** 2).sum()), float(per[rows, 1].sum()),
                                   sum(p.numels[i] for i in rows), len(rows))
    numel = sum(p.numels)
    return GradStats(sum_sq=float(p.total_sq.item()), sum_abs=float(per[:, 1].sum()),
                     numel=numel, n_tensors=len(p.numels), n_with_grad=len(p.numels),
                     n_nonfinite=int(round(per[:, 3].sum())),
                     n_zero_elements=int(numel - round(per[:, 2].sum())), by_type=by_type)


class KasminaCollector:
    """Kasmina's measurement: every listed ``requires_grad`` parameter counts toward N."""

    def __init__(self, groups: Mapping[str, TypedParams]):
        self._inner = GradientCollector({n: list(g) for n, g in groups.items()})

    def collect(self):
        return self._inner.collect()

    def materialize(self, pending):
        return self._inner.materialize(list(pending))
