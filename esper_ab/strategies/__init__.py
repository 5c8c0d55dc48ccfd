"""Normalization strategies (stage 2 of the pipeline): GradStats -> one statistic.

``list_strategies()`` names every registered strategy; ``get_strategy(name, **params)``
builds one with validated, keyword-only parameters.
"""

from __future__ import annotations

from typing import Any

from esper_ab.errors import ConfigError
from esper_ab.strategies._base import (
    HOST_EPS,
    NOT_APPLICABLE,
    REASONS,
    STATE_NAMES,
    UNMEASURED,
    VALUE,
    CalibrationData,
    ContextBatch,
    ParamSpec,
    StatContext,
    Statistic,
    StatisticBatch,
    StatsBatch,
    Strategy,
)
from esper_ab.strategies._base import (
    R as REASON_CODE,
)
from esper_ab.strategies._calibrated import (
    BaselineCalibrated,
    PerBlueprintThreshold,
    ZScore,
    usable_rows,
)
from esper_ab.strategies._first_order import FirstOrderValue
from esper_ab.strategies._ratio import Baseline, Exponent, MeanAbs, PerLayerType, Raw
from esper_ab.strategies._value_calibrated import (
    LabelCalibrated,
    ValueCalibrated,
    ValueCalibration,
)

_REGISTRY: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (Raw, Baseline, Exponent, MeanAbs, PerLayerType, PerBlueprintThreshold, ZScore,
                FirstOrderValue, ValueCalibrated)
}


def list_strategies() -> list[str]:
    """Names of every registered strategy, in registry order."""
    return list(_REGISTRY)


def strategy_class(name: str) -> type[Strategy]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"strategy={name!r} is unknown: use one of {list_strategies()}") from None


def get_strategy(name: str, **params: Any) -> Strategy:
    """Build the strategy ``name`` with validated parameters."""
    return strategy_class(name)(**params)


__all__ = [
    "REASON_CODE",
    "Baseline",
    "BaselineCalibrated",
    "LabelCalibrated",
    "ValueCalibrated",
    "ValueCalibration",
    "usable_rows",
    "HOST_EPS", "NOT_APPLICABLE", "REASONS", "STATE_NAMES", "UNMEASURED", "VALUE",
    "CalibrationData", "ContextBatch", "ParamSpec", "StatContext", "Statistic",
    "StatisticBatch", "StatsBatch", "Strategy", "get_strategy", "list_strategies",
    "strategy_class",
]
