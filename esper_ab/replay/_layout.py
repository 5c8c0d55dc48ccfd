"""The replay layout: a trace as step-first [steps, seeds, epochs] columns, and its caches.

Every per-step column of the trace (the GradStats of seed and host, the first-order terms,
the blueprint) is stored once, in the order of a C-contiguous [K, S, E] array: step k of
every seed-epoch is one contiguous slice, which is what the gate's window reduces over
(``Gate.reduce_steps``). A trace whose seed-epochs do not all have K steps is padded; the
mask says which steps exist. The statistic of any strategy, computed over these columns,
*is* the [K, S, E] array the gate takes: no scatter per config.

What a sweep's configs share is cached here, bounded: the statistic of each strategy setting
(``statistics``), the windowed epochs of each (statistic, window, clamp) (``reductions``)
and parameter-free derived columns (``derived``). Caches never travel with a pickle.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from esper_ab.gradients import LAYER_TYPES
from esper_ab.strategies import CalibrationData, ContextBatch, StatsBatch

TRACE_KEYS = ("replicate", "seed_id", "blueprint", "epoch", "step")
SEED_KEYS = ("replicate", "seed_id", "blueprint")
CONTROL_BLUEPRINTS = frozenset({"placebo"})  # the control is measured against, never gated
_STATS_FIELDS = ("sum_sq", "sum_abs", "numel", "n_with_grad", "n_nonfinite")
_TYPE_FIELDS = ("sum_sq", "sum_abs", "numel")


class BoundedCache:
    """A small least-recently-used mapping: ``get(key, make)`` computes on a miss."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


def _fresh_caches() -> dict[str, Any]:
    # A statistic is 10 bytes per step position; a reduction about 30 per seed-epoch.
    return {"statistics": BoundedCache(6), "reductions": BoundedCache(24), "derived": {},
            "columns": BoundedCache(64)}


@dataclass(frozen=True, eq=False)
class ReplayArrays:
    """The trace of every gated seed in the step-first layout (see the module docstring).

    ``seed``/``host``/``context`` hold one row per position of the [K, S, E] layout;
    ``row_pos`` is the position of each trace row (sorted by replicate, seed, epoch, step:
    "trace order", the order calibration fits see)."""

    seed_table: pd.DataFrame   # one row per gated seed, in seed-index order
    seed: StatsBatch
    host: StatsBatch
    context: ContextBatch
    mask: np.ndarray           # [K, S, E] bool: the step exists
    row_pos: np.ndarray        # [rows] int: layout position of each trace row
    row_replicate: np.ndarray  # [rows]: replicate of each trace row
    shape: tuple[int, int, int]  # (S, E, K)
    dense: bool                # every seed-epoch has K steps: no padding
    seed_blueprints: np.ndarray
    caches: dict[str, Any] = field(default_factory=_fresh_caches, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "caches": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({**state, "caches": _fresh_caches()})

    @classmethod
    def build(cls, traces: Any) -> ReplayArrays:
        """The layout of a ``TraceSet`` (its ``trace`` table; the control excluded)."""
        trace = traces.trace[~traces.trace["blueprint"].isin(CONTROL_BLUEPRINTS)]
        trace = trace.sort_values(["replicate", "seed_id", "epoch", "step"], kind="stable")
        trace = trace.reset_index(drop=True)
        keys = trace[list(SEED_KEYS)].drop_duplicates().reset_index(drop=True)
        seed_index = pd.MultiIndex.from_frame(keys[["replicate", "seed_id"]])
        row_seed = seed_index.get_indexer(pd.MultiIndex.from_frame(
            trace[["replicate", "seed_id"]]))
        epochs = np.sort(trace["epoch"].unique())
        row_epoch = np.searchsorted(epochs, trace["epoch"].to_numpy())
        # Position of each step within its (seed, epoch), in recorded order.
        row_step = trace.groupby([row_seed, row_epoch], sort=False).cumcount().to_numpy()
        s_count, e_count = len(keys), len(epochs)
        k_count = int(row_step.max()) + 1 if len(trace) else 1
        n_pos = k_count * s_count * e_count
        pos = ((row_step * s_count + row_seed) * e_count + row_epoch).astype(np.intp)
        dense = len(trace) == n_pos

        def place(values: Any, fill: float) -> np.ndarray:
            out = np.empty(n_pos) if dense else np.full(n_pos, fill)
            out[pos] = np.asarray(values, dtype=np.float64)
            return out

        def stats(prefix: str) -> StatsBatch:
            def types(name: str) -> np.ndarray:
                cols = [place(trace[f"{prefix}{t}_{name}"], 0.0) for t in LAYER_TYPES]
                return np.asfortranarray(np.stack(cols, axis=1))

            return StatsBatch(**{f: place(trace[prefix + f], 0.0) for f in _STATS_FIELDS},
                              **{f"type_{f}": types(f) for f in _TYPE_FIELDS})

        def opt(col: str) -> np.ndarray:
            return place(trace[col], np.nan) if col in trace.columns else np.full(n_pos, np.nan)

        seed_bps = keys["blueprint"].to_numpy(dtype=object)
        ctx = ContextBatch(blueprint=_broadcast_seeds(seed_bps, k_count, e_count),
                           first_order=opt("first_order"), grad_out_norm=opt("grad_out_norm"),
                           delta_norm=opt("delta_norm"))
        mask = np.ones(n_pos, dtype=bool) if dense else np.zeros(n_pos, dtype=bool)
        mask[pos] = True
        return cls(seed_table=keys, seed=stats("seed_"), host=stats("host_"), context=ctx,
                   mask=mask.reshape(k_count, s_count, e_count), row_pos=pos,
                   row_replicate=trace["replicate"].to_numpy(),
                   shape=(s_count, e_count, k_count), dense=dense, seed_blueprints=seed_bps)

    # -- shapes and rows -----------------------------------------------------------
    @property
    def step_first(self) -> tuple[int, int, int]:
        s, e, k = self.shape
        return k, s, e

    def kse(self, column: np.ndarray) -> np.ndarray:
        """A per-position column as its [K, S, E] array (a view)."""
        return column.reshape(self.step_first)

    @property
    def replicates(self) -> list[int]:
        return self.derived("replicates", lambda: sorted(
            int(r) for r in pd.unique(self.seed_table["replicate"])))

    def rows_of(self, replicates: Sequence[int]) -> np.ndarray:
        """Layout positions of the trace rows of ``replicates``, in trace order."""
        return self.row_pos[np.isin(self.row_replicate, np.asarray(list(replicates)))]

    def calibration(self, rows: np.ndarray) -> CalibrationData:
        """Calibration data from layout positions (``rows_of``), in the order given."""
        def take(b: StatsBatch) -> StatsBatch:
            return StatsBatch(**{f: getattr(b, f)[rows] for f in _STATS_FIELDS},
                              **{f"type_{f}": np.asfortranarray(getattr(b, f"type_{f}")[rows])
                                 for f in _TYPE_FIELDS})

        ctx = self.context
        return CalibrationData(
            blueprint=ctx.blueprint[rows], seed=take(self.seed), host=take(self.host),
            context=ContextBatch(blueprint=ctx.blueprint[rows],
                                 first_order=ctx.first_order[rows],
                                 grad_out_norm=ctx.grad_out_norm[rows],
                                 delta_norm=ctx.delta_norm[rows]))

    # -- caches ------------------------------------------------------------------------
    def statistic(self, key: Hashable, make: Callable[[], Any]) -> Any:
        return self.caches["statistics"].get(key, make)

    def reduction(self, key: Hashable, make: Callable[[], Any]) -> Any:
        return self.caches["reductions"].get(key, make)

    def derived(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """A parameter-free column derived from the trace (kept for the arrays' life)."""
        store = self.caches["derived"]
        if key not in store:
            store[key] = make()
        return store[key]

    def seed_codes(self) -> tuple[list[str], np.ndarray]:
        """Distinct seed blueprints and each seed's index into them."""
        def make() -> tuple[list[str], np.ndarray]:
            codes, uniq = pd.factorize(self.seed_blueprints)
            return [str(u) for u in uniq], codes.astype(np.intp)

        return self.derived("seed_codes", make)


def _broadcast_seeds(per_seed: np.ndarray, k_count: int, e_count: int) -> np.ndarray:
    """A per-seed array repeated over the [K, S, E] layout, flattened."""
    full = np.broadcast_to(per_seed[None, :, None], (k_count, len(per_seed), e_count))
    return np.ascontiguousarray(full).reshape(-1)
