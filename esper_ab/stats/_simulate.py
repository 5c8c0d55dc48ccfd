"""A simulator of decision tables with planted pass rates, value structure and replicate effects.

Generative model, per replicate r, blueprint b, seed k (all latents standard normal):

- value latent ``y = sqrt(icc) u_r + sqrt(1 - icc) e_rbk``; ``value = value_mean[b] +
  value_sd * y``; ``valuable = value >= margin``;
- strategy s's latent ``x_s = signal_s y + sqrt(icc (1 - signal_s^2)) h_r
  + sqrt((1 - icc)(1 - signal_s^2)) eta_srbk``, with the host effect ``h_r`` shared by every
  strategy and blueprint of the replicate and the noise ``eta`` independent per strategy; so
  ``corr(x_s, y) = signal_s`` and both latents have intra-replicate correlation ``icc``;
- ``passed = x_s >= z_sb`` with ``z_sb = Phi^-1(1 - pass_rate_sb)``, so the planted pass rate
  is exact; ``statistic = scale_s * (x_s - z_sb)`` (passes iff statistic >= 0);
- with probability ``unmeasured_rate`` a seed's statistic is unmeasured (NaN) and it fails.

Two strategies with the same spec are exchangeable within each replicate: an A/A pair.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats as sps

from esper_ab.errors import bad_value


@dataclass(frozen=True)
class StrategySpec:
    """A simulated strategy: planted pass rate per blueprint and the statistic's signal."""

    name: str
    pass_rates: tuple[float, ...]
    signal: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not all(0.0 <= p <= 1.0 for p in self.pass_rates):
            raise bad_value(f"{self.name}.pass_rates", self.pass_rates, "use rates in [0, 1]")
        if not -1.0 <= self.signal <= 1.0:
            raise bad_value(f"{self.name}.signal", self.signal, "use a correlation in [-1, 1]")
        if not self.scale > 0:
            raise bad_value(f"{self.name}.scale", self.scale, "use a positive scale")


@dataclass(frozen=True)
class SimulationDesign:
    """Blueprints, strategies and the design of one simulated sweep."""

    blueprints: tuple[str, ...]
    strategies: tuple[StrategySpec, ...]
    n_replicates: int = 20
    seeds_per_cell: int = 1
    value_means: tuple[float, ...] | None = None
    value_sd: float = 1.0
    margin: float = 0.0
    replicate_correlation: float = 0.3
    unmeasured_rate: float = 0.0

    def __post_init__(self) -> None:
        nb = len(self.blueprints)
        if nb == 0 or len(set(self.blueprints)) != nb:
            raise bad_value("blueprints", self.blueprints, "use distinct blueprint names")
        names = [s.name for s in self.strategies]
        if not names or len(set(names)) != len(names):
            raise bad_value("strategies", names, "use at least one strategy, distinct names")
        for s in self.strategies:
            if len(s.pass_rates) != nb:
                raise bad_value(f"{s.name}.pass_rates", s.pass_rates,
                                f"give one rate per blueprint ({nb})")
        if self.value_means is not None and len(self.value_means) != nb:
            raise bad_value("value_means", self.value_means, f"give one mean per blueprint ({nb})")
        if self.n_replicates < 1 or self.seeds_per_cell < 1:
            raise bad_value("n_replicates/seeds_per_cell", (self.n_replicates, self.seeds_per_cell),
                            "use positive counts")
        if not 0.0 <= self.replicate_correlation < 1.0:
            raise bad_value("replicate_correlation", self.replicate_correlation, "use [0, 1)")
        if not 0.0 <= self.unmeasured_rate < 1.0:
            raise bad_value("unmeasured_rate", self.unmeasured_rate, "use [0, 1)")

    def with_replicates(self, n_replicates: int) -> SimulationDesign:
        return replace(self, n_replicates=n_replicates)


def simulate_decisions(design: SimulationDesign, *, seed: int = 0) -> pd.DataFrame:
    """One decisions table drawn from ``design`` (deterministic given ``seed``)."""
    rng = np.random.default_rng(seed)
    R, B, K = design.n_replicates, len(design.blueprints), design.seeds_per_cell
    icc = design.replicate_correlation
    shape = (R, B, K)
    u = rng.standard_normal(R)[:, None, None]
    h = rng.standard_normal(R)[:, None, None]
    y = np.sqrt(icc) * u + np.sqrt(1 - icc) * rng.standard_normal(shape)
    means = np.zeros(B) if design.value_means is None else np.asarray(design.value_means, float)
    value = means[None, :, None] + design.value_sd * y
    valuable = value >= design.margin
    rep = np.broadcast_to(np.arange(R)[:, None, None], shape).ravel()
    bp = np.broadcast_to(np.asarray(design.blueprints, dtype=object)[None, :, None], shape).ravel()
    seed_id = np.broadcast_to(np.arange(K)[None, None, :], shape).ravel()
    frames = []
    for spec in design.strategies:
        a = spec.signal
        rest = 1 - a * a
        x = a * y + np.sqrt(icc * rest) * h + np.sqrt((1 - icc) * rest) * rng.standard_normal(shape)
        rates = np.clip(np.asarray(spec.pass_rates, dtype=float), 0.0, 1.0)
        z = sps.norm.isf(rates)[None, :, None]  # +inf for rate 0, -inf for rate 1
        passed = x >= z
        stat = spec.scale * (x - np.clip(z, -1e300, 1e300))
        missing = rng.random(shape) < design.unmeasured_rate
        stat = np.where(missing, np.nan, stat)
        passed = passed & ~missing
        epoch = np.where(passed, 10 + rng.poisson(3.0, shape), np.nan)
        frames.append(pd.DataFrame({
            "replicate": rep, "blueprint": bp, "strategy": spec.name,
            "passed": passed.ravel(), "pass_epoch": epoch.ravel(), "statistic": stat.ravel(),
            "value": value.ravel(), "valuable": valuable.ravel(), "seed": seed_id,
        }))
    return pd.concat(frames, ignore_index=True)
