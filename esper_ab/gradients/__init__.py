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
and *before* clipping. Work is grouped by (device, dtype): one fused copy into a cached
flat buffer, then in-place reductions per (group, layer type) segment; each step's values
stay on the device (Python floats on the CPU). Nothing syncs with the host until
``materialize()``, which turns many steps into ``GradStats`` with one copy. ``benchmarks/telemetry_overhead.py`` measures the cost.

The package splits along its one heavy dependency: ``_stats`` (the statistics, their
derived metrics and table columns; torch-free: all that replay, strategies and the gate
read) and ``_collector`` (the torch side: the layer type of a module, the collector). The
torch names load on first use, so a replay-only process never imports torch.
"""

from __future__ import annotations

from typing import Any

from esper_ab.gradients._stats import LAYER_TYPES, GradStats, LayerType, TypeStats

__all__ = ["LAYER_TYPES", "GradStats", "GradientCollector", "LayerType", "ParamGroup",
           "PendingStats", "TypeStats", "classify_layer", "measure_groups", "typed_parameters"]

_TORCH_NAMES = frozenset({"GradientCollector", "ParamGroup", "PendingStats", "classify_layer",
                          "measure_groups", "typed_parameters"})


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        from esper_ab.gradients import _collector

        return getattr(_collector, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _TORCH_NAMES)
