"""``GradStats`` and ``TypeStats``: the sufficient statistics of a parameter group's
gradients and the metrics derived from them (torch-free; see the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

LayerType = Literal["conv", "linear", "norm", "embedding", "other"]
LAYER_TYPES: tuple[LayerType, ...] = get_args(LayerType)


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
