"""The strategy contract: tri-state statistics computed over batches of GradStats.

Every strategy computes its statistic in numpy over *batches* (``StatsBatch``): the
online gate calls it with a batch of one, the replay engine with every recorded step at
once. One code path for both is what makes replay exactly equal to the online gate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from esper_ab.errors import ConfigError, NotFittedError, bad_value
from esper_ab.gradients import LAYER_TYPES, GradStats

StateName = Literal["value", "unmeasured", "not_applicable"]
VALUE, UNMEASURED, NOT_APPLICABLE = 0, 1, 2
STATE_NAMES: tuple[StateName, ...] = ("value", "unmeasured", "not_applicable")

# Why a statistic has the state it has. Index = reason code in StatisticBatch.reason.
REASONS: tuple[str, ...] = (
    "ok",
    "dead_seed",            # measured, every seed gradient exactly 0: a blueprint defect
    "zero_param_seed",      # the seed has no parameters: the statistic does not apply
    "no_seed_gradient",     # the seed's parameters received no gradient at all
    "nonfinite_seed",       # NaN or inf in the seed gradient
    "nonfinite_host",       # NaN or inf in the host gradient
    "host_norm_zero",       # host gradient norm < host_eps: unmeasurable, not "fail"
    "no_first_order",       # the first-order term was not recorded
    "zero_delta",           # s - h == 0: the cosine is undefined
    "legacy_host_norm_zero",  # esper-lite semantics: host norm < 1e-8 forced to 0
    "legacy_zero_param",    # esper-lite semantics: zero-parameter seed uses the raw ratio
)
R = {name: i for i, name in enumerate(REASONS)}

HOST_EPS = 1e-8  # esper-lite's host-norm floor


@dataclass(frozen=True)
class Statistic:
    """One strategy statistic: a value, *unmeasured*, or *not applicable*, with a reason."""

    state: StateName
    value: float | None
    reason: str
    unclamped: float | None = None
    clamped: bool = False

    @property
    def is_value(self) -> bool:
        return self.state == "value"

    def clamp(self, limit: float | None) -> Statistic:
        """Clamp at ``limit``, keeping the unclamped value and a flag."""
        if limit is None or not self.is_value or self.value is None or self.value <= limit:
            return self
        return Statistic(self.state, float(limit), self.reason, self.value, True)


@dataclass(frozen=True)
class StatisticBatch:
    """Vector form of ``Statistic``: value is NaN wherever state != VALUE."""

    value: np.ndarray   # float64
    state: np.ndarray   # int8: VALUE / UNMEASURED / NOT_APPLICABLE
    reason: np.ndarray  # int8: index into REASONS

    def __len__(self) -> int:
        return len(self.value)

    def item(self, i: int = 0) -> Statistic:
        st = STATE_NAMES[int(self.state[i])]
        v = float(self.value[i]) if st == "value" else None
        return Statistic(st, v, REASONS[int(self.reason[i])], v, False)


def _arr(values: Sequence[float] | np.ndarray, dtype=np.float64) -> np.ndarray:
    return np.asarray(values, dtype=dtype)


@dataclass(frozen=True)
class StatsBatch:
    """Columns of many GradStats (one row each) as float64 numpy arrays."""

    sum_sq: np.ndarray
    sum_abs: np.ndarray
    numel: np.ndarray
    n_with_grad: np.ndarray
    n_nonfinite: np.ndarray
    type_sum_sq: np.ndarray    # [n, len(LAYER_TYPES)], column-major
    type_sum_abs: np.ndarray   # [n, len(LAYER_TYPES)]
    type_numel: np.ndarray     # [n, len(LAYER_TYPES)]

    def __len__(self) -> int:
        return len(self.sum_sq)

    @classmethod
    def from_stats(cls, stats: Sequence[GradStats]) -> StatsBatch:
        ts = [[s.type_stats(t) for t in LAYER_TYPES] for s in stats]
        shape = (len(stats), len(LAYER_TYPES))
        return cls(
            sum_sq=_arr([s.sum_sq for s in stats]), sum_abs=_arr([s.sum_abs for s in stats]),
            numel=_arr([s.numel for s in stats]), n_with_grad=_arr([s.n_with_grad for s in stats]),
            n_nonfinite=_arr([s.n_nonfinite for s in stats]),
            type_sum_sq=_arr([[x.sum_sq for x in r] for r in ts]).reshape(shape),
            type_sum_abs=_arr([[x.sum_abs for x in r] for r in ts]).reshape(shape),
            type_numel=_arr([[x.numel for x in r] for r in ts]).reshape(shape))

    @classmethod
    def from_columns(cls, table: Mapping[str, Any], prefix: str) -> StatsBatch:
        """From a column mapping (a DataFrame works) written by ``GradStats.to_row``."""

        def col(name: str) -> np.ndarray:
            return np.asarray(table[f"{prefix}{name}"], dtype=np.float64)

        def types(name: str) -> np.ndarray:
            # Column-major: each layer type's column is contiguous for per-type loops.
            return np.asfortranarray(np.stack([col(f"{t}_{name}") for t in LAYER_TYPES], axis=1))

        return cls(sum_sq=col("sum_sq"), sum_abs=col("sum_abs"), numel=col("numel"),
                   n_with_grad=col("n_with_grad"), n_nonfinite=col("n_nonfinite"),
                   type_sum_sq=types("sum_sq"), type_sum_abs=types("sum_abs"),
                   type_numel=types("numel"))

    @property
    def total_l2(self) -> np.ndarray:
        return np.sqrt(self.sum_sq)


@dataclass(frozen=True)
class ContextBatch:
    """Per-row context: the seed's blueprint and the first-order terms, when recorded.

    ``first_order`` is -<dL/dy, s - h>; ``grad_out_norm`` = ||dL/dy|| and
    ``delta_norm`` = ||s - h|| make its cosine. NaN means *not recorded*.
    """

    blueprint: np.ndarray | None = None      # object array of str
    first_order: np.ndarray | None = None
    grad_out_norm: np.ndarray | None = None
    delta_norm: np.ndarray | None = None


@dataclass(frozen=True)
class StatContext:
    """Scalar context for ``Strategy.statistic``."""

    blueprint: str | None = None
    first_order: float | None = None
    grad_out_norm: float | None = None
    delta_norm: float | None = None

    def batch(self) -> ContextBatch:
        def one(v: float | None) -> np.ndarray:
            return _arr([math.nan if v is None else v])

        return ContextBatch(blueprint=np.array([self.blueprint], dtype=object),
                            first_order=one(self.first_order),
                            grad_out_norm=one(self.grad_out_norm), delta_norm=one(self.delta_norm))


@dataclass(frozen=True)
class CalibrationData:
    """Calibration measurements: one row per (seed, step) on calibration replicates."""

    blueprint: np.ndarray  # object array of str
    seed: StatsBatch
    host: StatsBatch
    context: ContextBatch = field(default_factory=ContextBatch)

    @classmethod
    def from_records(cls, records: Sequence[tuple[str, GradStats, GradStats]]) -> CalibrationData:
        return cls(blueprint=np.array([r[0] for r in records], dtype=object),
                   seed=StatsBatch.from_stats([r[1] for r in records]),
                   host=StatsBatch.from_stats([r[2] for r in records]))


@dataclass(frozen=True)
class ParamSpec:
    """One searchable parameter: its valid domain and its default search range."""

    name: str
    kind: Literal["float", "int", "categorical", "bool"]
    default: Any
    low: float | None = None         # search range
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    domain: tuple[float, float] | None = None  # valid values; defaults to (low, high)
    doc: str = ""

    def validate(self, value: Any, owner: str) -> Any:
        name = f"{owner}.{self.name}"
        if self.kind in ("categorical", "bool"):
            choices = self.choices or (True, False)
            if value not in choices:
                raise bad_value(name, value, f"use one of {list(choices)}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad_value(name, value, f"use a number in {self.valid_range()}")
        lo, hi = self.valid_range()
        if not (lo <= value <= hi) or (isinstance(value, float) and math.isnan(value)):
            raise bad_value(name, value, f"use a value in [{lo}, {hi}]")
        return int(value) if self.kind == "int" else float(value)

    def valid_range(self) -> tuple[float, float]:
        if self.domain is not None:
            return self.domain
        return (self.low if self.low is not None else -math.inf,
                self.high if self.high is not None else math.inf)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "default": self.default, "low": self.low,
                "high": self.high, "log": self.log, "choices": list(self.choices),
                "domain": list(self.valid_range()) if self.kind in ("float", "int") else None,
                "doc": self.doc}


class Strategy:
    """Base contract of every normalization strategy.

    Subclasses set the class attributes and implement ``_compute``; the public methods
    are thin wrappers. Options are keyword-only and validated against ``PARAMS``.
    """

    name: ClassVar[str]
    formula: ClassVar[str]
    PARAMS: ClassVar[tuple[ParamSpec, ...]] = ()
    THRESHOLD: ClassVar[ParamSpec]
    needs_calibration: ClassVar[bool] = False

    def __init__(self, **params: Any):
        known = {p.name: p for p in self.PARAMS}
        for key in params:
            if key not in known:
                raise bad_value(f"{self.name}.{key}", params[key],
                                f"unknown parameter; {self.name} takes {sorted(known) or 'none'}")
        self.params: dict[str, Any] = {
            p.name: p.validate(params.get(p.name, p.default), self.name) for p in self.PARAMS}
        self._fitted: dict[str, Any] | None = None

    # -- public contract -----------------------------------------------------------
    @property
    def scale_invariant(self) -> bool:
        """Whether multiplying every gradient by c > 0 leaves the statistic unchanged."""
        return True

    @property
    def is_fitted(self) -> bool:
        return not self.needs_calibration or self._fitted is not None

    def statistic(self, seed: GradStats, host: GradStats,
                  ctx: StatContext | None = None) -> Statistic:
        ctx = ctx or StatContext()
        batch = self.statistic_batch(StatsBatch.from_stats([seed]),
                                     StatsBatch.from_stats([host]), ctx.batch())
        return batch.item(0)

    def statistic_batch(self, seed: StatsBatch, host: StatsBatch,
                        ctx: ContextBatch | None = None) -> StatisticBatch:
        if not self.is_fitted:
            raise NotFittedError(
                f"strategy {self.name!r} is not calibrated: call fit(calibration) first, "
                "or load a fitted strategy from an exported winner.yaml")
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self._compute(seed, host, ctx or ContextBatch())

    def fit(self, calibration: CalibrationData) -> Strategy:
        """Calibrate on held-out replicates (no-op for strategies that need none)."""
        if self.needs_calibration:
            self._fitted = self._fit(calibration)
        return self

    def fitted_state(self) -> dict[str, Any] | None:
        return None if self._fitted is None else dict(self._fitted)

    def load_fitted_state(self, state: Mapping[str, Any]) -> Strategy:
        if not self.needs_calibration:
            raise ConfigError(f"strategy {self.name!r} takes no calibration state: remove it")
        self._fitted = self._validate_fitted(dict(state))
        return self

    def validate_threshold(self, threshold: float) -> float:
        return self.THRESHOLD.validate(threshold, f"{self.name}.threshold")

    @classmethod
    def param_space(cls) -> tuple[ParamSpec, ...]:
        return cls.PARAMS

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, "formula": cls.formula,
                "needs_calibration": cls.needs_calibration,
                "params": [p.to_dict() for p in cls.PARAMS],
                "threshold": cls.THRESHOLD.to_dict()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # -- for subclasses ------------------------------------------------------------
    def _compute(self, seed: StatsBatch, host: StatsBatch, ctx: ContextBatch) -> StatisticBatch:
        raise NotImplementedError

    def _fit(self, calibration: CalibrationData) -> dict[str, Any]:
        raise NotImplementedError

    def _validate_fitted(self, state: dict[str, Any]) -> dict[str, Any]:
        return state
