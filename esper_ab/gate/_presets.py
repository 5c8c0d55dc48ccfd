"""Named gates: esper-lite's own G2 checks, one per code path.

- ``esper_lite_kasmina`` (alias ``esper_lite_baseline``): the Kasmina / heuristic path,
  ``kasmina/slot.py``: ratio ``(||g_S||/||g_H||) * sqrt(N_H/N_S)`` on the last batch of the
  epoch, clamped at 10, no EMA, host norm < 1e-8 gives 0, a zero-parameter seed uses the raw
  ratio; ``requires_grad`` parameter counts taken at germination.
- ``esper_lite_simic``: the Simic / PPO path, ``simic/telemetry/gradient_collector.py`` and
  ``vectorized_trainer.py``: the same ratio on the last measured batch, no clamp, an EMA
  with decay 0.9 once per epoch that starts from 0.0 (set at an episode's reset). esper-lite
  drops a slot's EMA when the slot holds no active seed at an epoch's end; the plug-in then
  starts the next seed there from its first ratio, as esper-lite does. Simic's float64 norms and counts of the
  tensors that have a gradient are how the measurement is taken: the plug-in's ``simic``
  path (``esper_ab.integrations.esper_lite``) measures that way.
- ``esper_lite_ema``: deprecated. A clamp at 10 with an EMA started at the first measured
  epoch: neither esper-lite path. Looking it up warns and names the replacements.
"""

from __future__ import annotations

import warnings

from esper_ab.gate._config import GateConfig

_LEGACY = {"legacy_edge_cases": True}

KASMINA = GateConfig(
    strategy="baseline", strategy_params=_LEGACY, threshold=0.10, window="last",
    ema_decay=None, min_epochs=10, clamp=10.0, fail_dead_seeds=False)
SIMIC = GateConfig(
    strategy="baseline", strategy_params=_LEGACY, threshold=0.10, window="last",
    ema_decay=0.9, ema_start=0.0, min_epochs=10, clamp=None, fail_dead_seeds=False)
_EMA = GateConfig(
    strategy="baseline", strategy_params=_LEGACY, threshold=0.10, window="last",
    ema_decay=0.9, min_epochs=10, clamp=10.0, fail_dead_seeds=False)

DEPRECATED: dict[str, str] = {
    "esper_lite_ema": "gate preset 'esper_lite_ema' is deprecated: it is Kasmina's clamp at "
                      "10 with an EMA (decay 0.9) started at the first measured epoch, which "
                      "models neither esper-lite path; use 'esper_lite_simic' (the PPO path: "
                      "no clamp, EMA from 0.0) or 'esper_lite_kasmina' (the heuristic path: "
                      "clamp, no EMA)",
}


class _Presets(dict[str, GateConfig]):
    """The preset table; looking up a deprecated name warns (DeprecationWarning)."""

    def __getitem__(self, name: str) -> GateConfig:
        if name in DEPRECATED:
            warnings.warn(DEPRECATED[name], DeprecationWarning, stacklevel=2)
        return super().__getitem__(name)

    def get(self, name: str, default: GateConfig | None = None) -> GateConfig | None:
        return self[name] if name in self else default


PRESETS: dict[str, GateConfig] = _Presets({
    "esper_lite_kasmina": KASMINA,
    "esper_lite_baseline": KASMINA,          # the name it had first; kept as an alias
    "esper_lite_simic": SIMIC,
    "esper_lite_ema": _EMA,                  # deprecated, see DEPRECATED
})
