"""First-order value: -<dL/dy, s - h>, minus dL/dalpha at alpha = 0.

It targets the seed's value directly rather than its gradient size. It comes from the
same backward pass (the slot's output gradient and the seed's output), so recording it
costs one dot product per seed and step. Untested in esper-lite and possibly optimistic.
"""

from __future__ import annotations

import numpy as np

from esper_ab.strategies._base import (
    NOT_APPLICABLE,
    UNMEASURED,
    VALUE,
    ContextBatch,
    ParamSpec,
    R,
    StatisticBatch,
    StatsBatch,
    Strategy,
)


class FirstOrderValue(Strategy):
    name = "first_order_value"
    formula = ("-<dL/dy, s - h> (raw), or its cosine -<dL/dy, s-h> / (||dL/dy|| ||s-h||); "
               "pass when >= threshold")
    PARAMS = (ParamSpec("mode", "categorical", "raw", choices=("raw", "cosine")),)
    THRESHOLD = ParamSpec("threshold", "float", 0.0, low=-0.5, high=0.5,
                          domain=(-float("inf"), float("inf")),
                          doc="pass when the first-order value >= threshold")

    @property
    def scale_invariant(self) -> bool:
        return self.params["mode"] == "cosine"

    def _compute(self, seed: StatsBatch, host: StatsBatch, ctx: ContextBatch) -> StatisticBatch:
        n = len(seed)
        nan = np.full(n, np.nan)
        fo = nan if ctx.first_order is None else np.asarray(ctx.first_order, np.float64)
        state = np.full(n, VALUE, dtype=np.int8)
        reason = np.full(n, R["ok"], dtype=np.int8)
        open_ = np.ones(n, dtype=bool)

        def mark(mask, st, why):
            m = open_ & mask
            state[m], reason[m], open_[m] = st, R[why], False

        mark(seed.numel == 0, NOT_APPLICABLE, "zero_param_seed")
        mark(~np.isfinite(fo), UNMEASURED, "no_first_order")
        value = fo
        if self.params["mode"] == "cosine":
            g = nan if ctx.grad_out_norm is None else np.asarray(ctx.grad_out_norm, np.float64)
            d = nan if ctx.delta_norm is None else np.asarray(ctx.delta_norm, np.float64)
            mark(~np.isfinite(g) | ~np.isfinite(d), UNMEASURED, "no_first_order")
            mark(g == 0, UNMEASURED, "host_norm_zero")
            mark(d == 0, UNMEASURED, "zero_delta")
            value = fo / (g * d)
        value = np.where(state == VALUE, value, np.nan)
        return StatisticBatch(value=value.astype(np.float64), state=state, reason=reason)
