"""What defines a G2 gate (``GateConfig``, validated by pydantic when read from a file) and the
records a gate returns (``GateDecision``, ``DecisionArrays``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from esper_ab.errors import ConfigError
from esper_ab.gradients import GradStats

Window = Literal["last", "mean", "median"]
WINDOWS: tuple[Window, ...] = ("last", "mean", "median")
CHECKS = ("min_epochs", "measured", "alive", "threshold")


@dataclass(frozen=True)
class GateConfig:
    """Everything that defines a G2 gate. Validated when a ``Gate`` is built."""

    strategy: str = "baseline"
    strategy_params: Mapping[str, Any] = field(default_factory=dict)
    threshold: float | None = None               # None: the strategy's default
    thresholds: Mapping[str, float] = field(default_factory=dict)  # per-blueprint overrides
    window: Window = "last"
    ema_decay: float | None = None               # None: no EMA
    ema_start: float | None = None               # None: EMA starts at the first measured
    min_epochs: int = 10                         # epoch; 0.0: from 0 (esper-lite's Simic)
    clamp: float | None = None
    fail_dead_seeds: bool = True                 # a dead seed fails with its own reason
    calibration: Mapping[str, Any] | None = None  # fitted state of calibrating strategies

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "strategy_params": dict(self.strategy_params),
                "threshold": self.threshold, "thresholds": dict(self.thresholds),
                "window": self.window, "ema_decay": self.ema_decay,
                "min_epochs": self.min_epochs, "clamp": self.clamp,
                "fail_dead_seeds": self.fail_dead_seeds,
                "calibration": None if self.calibration is None else dict(self.calibration),
                **({} if self.ema_start is None else {"ema_start": self.ema_start})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, what: str = "gate config") -> GateConfig:
        """A config from a mapping (a YAML file's), validated by pydantic: unknown keys,
        wrong types (``true`` for a number) and out-of-range values give one ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{what} is {type(data).__name__}, not a mapping: write "
                              "'key: value' pairs")
        try:
            model = _GateFields.model_validate(dict(data))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "document"
            if err["type"] == "extra_forbidden":
                raise ConfigError(f"{what}: key {loc!r} is unknown: use "
                                  f"{sorted(_GateFields.model_fields)}") from None
            raise ConfigError(f"{what}: {loc} is invalid ({err['msg']}): fix that value") \
                from None
        return cls(**model.model_dump())


class _GateFields(BaseModel):
    """The schema of a gate file (strict: no silent coercion of booleans or strings)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    strategy: str = "baseline"
    strategy_params: dict[str, Any] = {}
    threshold: float | None = None
    thresholds: dict[str, float] = {}
    window: Window = "last"
    ema_decay: float | None = None
    ema_start: float | None = None
    min_epochs: int = 10
    clamp: float | None = None
    fail_dead_seeds: bool = True
    calibration: dict[str, Any] | None = None

    @field_validator("ema_decay")
    @classmethod
    def _decay(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v < 1.0:
            raise ValueError("use a decay in [0, 1), or null")
        return v

    @field_validator("min_epochs")
    @classmethod
    def _min_epochs(cls, v: int) -> int:
        if v < 0:
            raise ValueError("use a whole number >= 0")
        return v

    @field_validator("clamp")
    @classmethod
    def _clamp(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError("use a positive number, or null")
        return v


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict for one seed, at its pass epoch or at the last epoch seen."""

    blueprint: str | None
    passed: bool
    epoch: int | None               # pass epoch (1-based), None if not passed
    epochs_observed: int
    value: float | None             # the value compared with the threshold
    value_unclamped: float | None
    clamped: bool
    state: str                      # value / unmeasured / not_applicable
    reason: str
    threshold: float
    checks: tuple[Check, ...]

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)


@dataclass(frozen=True)
class StepMeasurement:
    """One step of one seed: its GradStats, the host's, and the first-order terms."""

    seed: GradStats
    host: GradStats
    first_order: float | None = None
    grad_out_norm: float | None = None
    delta_norm: float | None = None


@dataclass(frozen=True)
class DecisionArrays:
    """Vectorized decisions for S seeds over E epochs."""

    passed: np.ndarray          # [S] bool
    pass_epoch: np.ndarray      # [S] int, 1-based, 0 when not passed
    epoch_value: np.ndarray     # [S, E] value compared with the threshold (NaN: none)
    epoch_unclamped: np.ndarray  # [S, E]
    epoch_clamped: np.ndarray   # [S, E] bool
    epoch_state: np.ndarray     # [S, E] int8
    epoch_reason: np.ndarray    # [S, E] int8
    epoch_dead: np.ndarray      # [S, E] bool
    n_epochs: np.ndarray        # [S] int, epochs observed
    threshold: np.ndarray       # [S]


