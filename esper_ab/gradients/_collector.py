"""The torch side of stage 1: layer types of modules, and ``GradientCollector`` (see the
package docstring)."""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from esper_ab.errors import ConfigError
from esper_ab.gradients._stats import LAYER_TYPES, GradStats, LayerType, TypeStats

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
    for classes, t in ((_CONV, "conv"), (_LINEAR, "linear"), (_NORM, "norm"),
                       (_EMBEDDING, "embedding")):
        if isinstance(module, classes):
            return t  # type: ignore[return-value]
    return "other"


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
    """One step's device-side values; turn many into GradStats with ``materialize``.

    ``values`` holds one float64 tensor per (device, dtype) bucket, on its device (a
    list of Python floats for a CPU bucket, where reading is no sync); ``targets`` says
    where each of its entries lands in the step's accumulator ``[sum_sq per (group, type)
    | sum_abs per (group, type) | zero elements per group | non-finite elements per
    group]`` (added there by ``materialize``, not per step).
    """

    values: tuple[torch.Tensor | list[float], ...]
    targets: tuple[tuple[int, ...], ...]
    n_with_grad: tuple[int, ...]      # per group; known on the host without a sync


@dataclass(frozen=True)
class _Bucket:
    """The cached layout of one (device, dtype): every gradient's place in a flat buffer,
    in (group, type) order, so each (group, type) slot and each group is one segment."""

    pick: Callable[[Sequence[torch.Tensor | None]], tuple[torch.Tensor, ...]]
    buffer: torch.Tensor               # float32 (float64 for float64 gradients)
    views: tuple[torch.Tensor, ...]    # pieces of buffer in each gradient's shape
    slots: tuple[torch.Tensor, ...]    # segment of each slot
    groups: tuple[torch.Tensor, ...]   # segment of each group
    bits: tuple[torch.Tensor, ...]     # the group segments viewed as integers
    all_bits: torch.Tensor             # the whole buffer viewed as integers
    slot_group: tuple[int, ...]        # index in ``groups`` of each slot's group
    sums: torch.Tensor                 # [sum_sq per slot | sum_abs per slot], reused
    sq_out: tuple[torch.Tensor, ...]   # the elements of ``sums`` each slot's sums land in
    abs_out: tuple[torch.Tensor, ...]
    group_numel: torch.Tensor          # float64 element count of each group segment
    targets: tuple[int, ...]           # where the bucket's values land in the accumulator
    branch_free: bool                  # count without reading values (any non-CPU device)
    direct: bool                       # |g| straight into the buffer, one op per gradient


@dataclass(frozen=True)
class _Plan:
    key: tuple                          # (device, dtype) or None of every parameter's .grad
    buckets: tuple[_Bucket, ...]
    n_with_grad: tuple[int, ...]
    targets: tuple[tuple[int, ...], ...]   # each bucket's, in bucket order


class GradientCollector:
    """Collect ``GradStats`` for named parameter groups with fused, sync-free kernels.

    >>> collector = GradientCollector({"host": host, "seed": seed_module})
    >>> loss.backward()
    >>> pending = collector.collect()          # before any gradient clipping
    >>> stats = collector.materialize([pending])[0]   # {"host": GradStats, "seed": ...}

    Per step and (device, dtype), ``collect`` copies the gradients into one flat buffer with
    a single ``torch._foreach_copy_`` and reduces it in place: ``abs_``, a sum per
    (group, type) slot, element counts per group, ``square_``, a sum per slot. (On the CPU,
    float32/float64 gradients of a large average size are written as ``|g|`` by one ``abs``
    each instead of the copy and ``abs_``: the same values, one pass fewer.) The layout is
    built on the first call and rebuilt only when which parameters have a gradient, or
    their device or dtype, changes; its buffer is one float32 copy of the gradients.
    """

    def __init__(self, groups: Mapping[str, ParamGroup]):
        if not groups:
            raise ConfigError("groups={} is empty: pass at least one named parameter group")
        self.names: tuple[str, ...] = tuple(groups)
        self._params: list[nn.Parameter] = []
        self._slot: list[int] = []          # (group, type) slot of each parameter
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
        self._n_slots = len(self.names) * len(LAYER_TYPES)
        self._plan: _Plan | None = None
        self._branch_free = False  # True: the accelerator path on the CPU too (tests)

    def collect(self) -> PendingStats:
        """Launch the fused reductions for the current ``.grad`` values; no host sync."""
        grads = [p.grad for p in self._params]
        key = tuple(None if g is None else (g.device, g.dtype) for g in grads)
        plan = self._plan
        if plan is None or plan.key != key:
            plan = self._plan = self._make_plan(grads, key)
        # no_grad: after ``backward(create_graph=True)`` (a gradient penalty, second-order
        # methods) each ``.grad`` is part of the graph, and the in-place reductions into the
        # buffer's views are refused under autograd; a measurement never joins the graph.
        with torch.no_grad():
            values = tuple(_reduce(b, b.pick(grads)) for b in plan.buckets)
        return PendingStats(values=values, targets=plan.targets, n_with_grad=plan.n_with_grad)

    def materialize(self, pending: Sequence[PendingStats]) -> list[dict[str, GradStats]]:
        """Turn pending accumulators into GradStats, one dict per step."""
        if not pending:
            return []
        on_device = [v for p in pending for v in p.values if isinstance(v, torch.Tensor)]
        if len({v.device for v in on_device}) > 1:
            on_device = [v.cpu() for v in on_device]
        # SYNC POINT: the collector's only device->host copy, one for all the steps.
        read = iter(torch.cat(on_device).cpu().tolist() if on_device else [])
        flat = iter([x for p in pending for v in p.values
                     for x in (v if isinstance(v, list) else itertools.islice(read, len(v)))])
        n_acc = 2 * (self._n_slots + len(self.names))
        out = []
        for p in pending:
            acc = [0.0] * n_acc
            for targets in p.targets:         # bucket by bucket, as index_add_ added them
                for t in targets:
                    acc[t] += next(flat)
            out.append({name: self._build(acc, g, p.n_with_grad[g])
                        for g, name in enumerate(self.names)})
        return out

    def measure(self) -> dict[str, GradStats]:
        """collect + materialize for one step (convenient; syncs immediately)."""
        return self.materialize([self.collect()])[0]

    def _make_plan(self, grads: list[torch.Tensor | None], key: tuple) -> _Plan:
        n_with_grad = [0] * len(self.names)
        by_key: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, g in enumerate(grads):
            if g is not None:
                n_with_grad[self._group_of[i]] += 1
                by_key.setdefault((g.device, g.dtype), []).append(i)
        ns = self._n_slots
        buckets = []
        for (device, dtype), idx in by_key.items():
            idx.sort(key=lambda i: self._slot[i])      # stable: (group, type) order
            red, bits = ((torch.float64, torch.int64) if dtype == torch.float64
                         else (torch.float32, torch.int32))
            sizes = [grads[i].numel() for i in idx]    # type: ignore[union-attr]
            buffer = torch.empty(sum(sizes), dtype=red, device=device)
            # One ``abs`` per gradient into the buffer replaces the fused copy and a whole
            # pass of ``abs_``, where the gradients already have the buffer's dtype and are
            # large enough on average that per-operator overhead does not eat the pass.
            direct = (dtype == red and device.type == "cpu"
                      and sum(sizes) >= _DIRECT_MIN_AVG_NUMEL * len(idx))
            slot_ids, slot_sizes = _runs([self._slot[i] for i in idx], sizes)
            group_ids, group_sizes = _runs([self._group_of[i] for i in idx], sizes)
            sums = torch.empty(2 * len(slot_ids), dtype=red, device=device)
            target = (slot_ids + [ns + s for s in slot_ids] + [2 * ns + g for g in group_ids]
                      + [2 * ns + len(self.names) + g for g in group_ids])
            buckets.append(_Bucket(
                pick=(operator.itemgetter(*idx) if len(idx) > 1  # a bare item for one index
                      else lambda grads, i=idx[0]: (grads[i],)), buffer=buffer,
                views=tuple(v.view(grads[i].shape)     # type: ignore[union-attr]
                            for v, i in zip(buffer.split(sizes), idx, strict=True)),
                slots=buffer.split(slot_sizes), groups=buffer.split(group_sizes),
                bits=buffer.view(bits).split(group_sizes), all_bits=buffer.view(bits),
                sums=sums,
                slot_group=tuple(group_ids.index(s // len(LAYER_TYPES)) for s in slot_ids),
                sq_out=tuple(sums[:len(slot_ids)]), abs_out=tuple(sums[len(slot_ids):]),
                group_numel=torch.tensor(group_sizes, dtype=torch.float64, device=device),
                targets=tuple(target),
                branch_free=device.type != "cpu" or bool(self._branch_free),
                direct=direct))
        return _Plan(key=key, buckets=tuple(buckets), n_with_grad=tuple(n_with_grad),
                     targets=tuple(b.targets for b in buckets))

    def _build(self, acc, g: int, n_with_grad: int) -> GradStats:
        nt, ns, ng = len(LAYER_TYPES), self._n_slots, len(self.names)
        sum_sq, sum_abs = acc[g * nt:(g + 1) * nt], acc[ns + g * nt:ns + (g + 1) * nt]
        by_type = {t: TypeStats(sum_sq[ti], sum_abs[ti], self._numel[g][ti],
                                self._ntens[g][ti])
                   for ti, t in enumerate(LAYER_TYPES) if self._ntens[g][ti]}
        return GradStats(  # sum() adds left to right, as numpy did over these 5 floats
            sum_sq=sum(sum_sq), sum_abs=sum(sum_abs),
            numel=sum(self._numel[g]), n_tensors=sum(self._ntens[g]),
            n_with_grad=n_with_grad, n_nonfinite=int(round(acc[2 * ns + ng + g])),
            n_zero_elements=int(round(acc[2 * ns + g])), by_type=by_type)


_first = operator.itemgetter(0)
# ``direct`` buckets: at least this many elements per gradient on average. Measured on the
# CPU right after a backward pass: with the GPT host's 52 gradients (16.7k elements each on
# average) a collect takes 0.86-0.92 of the time; for the CNN host's 11 (583 each) one
# ``abs`` per gradient was slower than the fused copy and one ``abs_``.
_DIRECT_MIN_AVG_NUMEL = 4096


def _runs(labels: list[int], sizes: list[int]) -> tuple[list[int], list[int]]:
    """Run-length encoding of consecutive equal labels, with the summed size of each run."""
    runs = [(label, sum(size for _, size in run))
            for label, run in itertools.groupby(zip(labels, sizes, strict=True), key=_first)]
    return [label for label, _ in runs], [size for _, size in runs]


def _reduce(b: _Bucket, grads: Sequence[torch.Tensor]) -> torch.Tensor | list[float]:
    """``[sum_sq per slot | sum_abs per slot | zeros per group | non-finite per group]``:
    one fused copy into the flat buffer, then a fixed number of operators per slot and
    group, never one per parameter. A float64 tensor on the bucket's device with no host
    sync (``branch_free``: any accelerator), or Python floats on the CPU.

    Every sum is a plain ``torch.sum`` over a flat float32 (float64) segment: its cascade
    summation keeps float32 sums of ~1e6 gradients within ~1e-7 of the float64 value.
    (``torch._foreach_norm`` and ``torch._foreach_powsum`` on the gradients themselves
    were measured on the CPU: slower, and ``powsum`` off by ~2e-5 at 0.87M elements.)
    """
    if b.direct:                             # same values: |g| is exact in any float type
        for g, view in zip(grads, b.views, strict=True):
            torch.abs(g, out=view)
    else:
        torch._foreach_copy_(b.views, grads)     # half precision is reduced in float32
        b.buffer.abs_()
    for seg, out in zip(b.slots, b.abs_out, strict=True):
        torch.sum(seg, 0, out=out)           # each sum in place: no stack, no cat
    if not b.branch_free:
        return _counted_on_cpu(b)
    # abs_ cleared the sign bit, so |g| is zero exactly where its integer view is zero
    # (and the integer count_nonzero is much faster on the CPU than the float one).
    zeros = b.group_numel - torch.stack([torch.count_nonzero(s) for s in b.bits])
    nonfinite = b.group_numel - torch.stack([torch.count_nonzero(torch.isfinite(s))
                                             for s in b.groups])
    b.buffer.square_()                       # |g|^2 = g^2
    for seg, out in zip(b.slots, b.sq_out, strict=True):
        torch.sum(seg, 0, out=out)
    return torch.cat([b.sums.double(), zeros, nonfinite])   # a copy: ``sums`` is reused


def _counted_on_cpu(b: _Bucket) -> list[float]:
    """The rest of ``_reduce`` on the CPU, where reading a value is no device sync: two
    reads per bucket (min |g|, then every sum), and a count runs only where a cheap bound
    allows a non-zero result: zeros only where min |g| is not > 0, non-finite elements
    only where a group's sum |g| is not finite (it can overflow with finite values; the
    count then runs and gives 0)."""
    # |g| has no sign bit, so an exact zero is the integer 0 and any other value (NaN
    # included) a positive integer: the integer minimum is a bound without NaN handling.
    low = b.all_bits.amin().item() if len(b.buffer) else 1
    zeros = ([0] * len(b.groups) if low > 0 else
             [len(seg) - int(n) for seg, n in zip(
                 b.groups, torch.stack([torch.count_nonzero(s) for s in b.bits]).tolist(),
                 strict=True)])
    b.buffer.square_()                       # |g|^2 = g^2
    for seg, out in zip(b.slots, b.sq_out, strict=True):
        torch.sum(seg, 0, out=out)
    sums = b.sums.tolist()
    abs_by_group = [0.0] * len(b.groups)
    for g, v in zip(b.slot_group, sums[len(b.slots):], strict=True):
        abs_by_group[g] += v
    nonfinite = [0 if math.isfinite(total) else
                 len(seg) - int(torch.count_nonzero(torch.isfinite(seg)))
                 for seg, total in zip(b.groups, abs_by_group, strict=True)]
    return sums + zeros + nonfinite


def measure_groups(groups: Mapping[str, ParamGroup]) -> dict[str, GradStats]:
    """One-shot measurement of the current gradients of named groups."""
    return GradientCollector(groups).measure()
