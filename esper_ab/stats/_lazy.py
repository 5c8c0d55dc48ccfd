"""``sps``: ``scipy.stats``, and ``special``: ``scipy.special``, each imported on its first use.

``scipy.stats`` takes most of this package's import time (0.7-1 s in a fresh process, and
``scipy.special`` alone 0.1-0.9 s), and
a Ray Tune trial worker imports the statistics through ``esper_ab.trial`` only to score
configs, which needs none of it (``trial.batch_trial_metrics``: counts, rates, AUC without
a bootstrap). Every module here that uses either takes it from these proxies, so a
process imports it when a test, a p-value or an interval first needs it; the functions are
scipy's own, unchanged.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["special", "sps"]


class _LazyModule:
    """Attribute access imports the module once, then keeps each attribute asked for."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):      # copy / pickle probes: not scipy's
            raise AttributeError(attr)
        value = getattr(importlib.import_module(self._name), attr)
        setattr(self, attr, value)
        return value


sps: Any = _LazyModule("scipy.stats")
special: Any = _LazyModule("scipy.special")
