"""A simulator of decision tables with planted pass rates, value structure and replicate effects.

Generative model, per replicate r, blueprint b, seed k (all latents standard normal):

- value latent ``y = sqrt(icc) u_r + sqrt(cc) c_rb + sqrt(1 - icc - cc) e_rbk``; ``value =
  value_mean[b] + value_sd * y``; ``valuable = value >= margin`` (``icc`` is
  ``replicate_correlation``, ``cc`` is ``cell_correlation``);
- strategy s's latent ``x_s = signal_s y + sqrt(icc (1 - signal_s^2)) h_r
  + sqrt(cc (1 - signal_s^2)) g_rb + sqrt((1 - icc - cc)(1 - signal_s^2)) eta_srbk``, with the
  host effect ``h_r`` and the cell effect ``g_rb`` shared by every strategy and the noise
  ``eta`` independent per strategy; so ``corr(x_s, y) = signal_s``;
- with ``strategy_replicate_sd = t > 0`` each strategy also gets its own shift per replicate
  (``x_s <- (x_s + t d_sr) / sqrt(1 + t^2)``, e.g. a threshold calibrated per replicate): the
  seeds of one replicate then err together, which breaks every test that counts seeds as
  independent, while copies of one strategy stay exchangeable within each replicate;
- ``passed = x_s >= z_sb`` with ``z_sb = Phi^-1(1 - pass_rate_sb)``, so the planted pass rate
  is exact; ``statistic = scale_s * (x_s - z_sb)`` (passes iff statistic >= 0);
- a strategy given ``tpr`` and ``fpr`` (per blueprint) instead of pass rates carries no signal
  term: ``z`` is ``Phi^-1(1 - tpr_b)`` for valuable seeds and ``Phi^-1(1 - fpr_b)`` for the
  others, so its planted TPR and FPR are exact in every blueprint;
- with probability ``unmeasured_rate`` a seed's statistic is unmeasured (NaN) and it fails.

Two strategies with the same spec are exchangeable within each replicate: an A/A pair.
:func:`simulate_counts` draws the same tables as :func:`simulate_decisions` but returns only the
per-replicate counts (the fast path of the power planner).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from esper_ab.errors import bad_value
from esper_ab.stats._counts import N_FIELDS
from esper_ab.stats._lazy import sps


@dataclass(frozen=True)
class StrategySpec:
    """A simulated strategy: planted pass rate per blueprint and the statistic's signal, or
    planted ``tpr`` and ``fpr`` per blueprint (then ``pass_rates`` may be empty)."""

    name: str
    pass_rates: tuple[float, ...] = ()
    signal: float = 0.0
    scale: float = 1.0
    tpr: tuple[float, ...] | None = None
    fpr: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if (self.tpr is None) != (self.fpr is None):
            raise bad_value(f"{self.name}.tpr/fpr", (self.tpr, self.fpr), "give both or neither")
        for label, rates in (("pass_rates", self.pass_rates), ("tpr", self.tpr or ()),
                             ("fpr", self.fpr or ())):
            if not all(0.0 <= p <= 1.0 for p in rates):
                raise bad_value(f"{self.name}.{label}", rates, "use rates in [0, 1]")
        if not -1.0 <= self.signal <= 1.0:
            raise bad_value(f"{self.name}.signal", self.signal, "use a correlation in [-1, 1]")
        if not self.scale > 0:
            raise bad_value(f"{self.name}.scale", self.scale, "use a positive scale")

    @property
    def planted_rates(self) -> bool:
        return self.tpr is not None


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
    cell_correlation: float = 0.0
    strategy_replicate_sd: float = 0.0

    def __post_init__(self) -> None:
        nb = len(self.blueprints)
        if nb == 0 or len(set(self.blueprints)) != nb:
            raise bad_value("blueprints", self.blueprints, "use distinct blueprint names")
        names = [s.name for s in self.strategies]
        if not names or len(set(names)) != len(names):
            raise bad_value("strategies", names, "use at least one strategy, distinct names")
        for s in self.strategies:
            rates = {"tpr": s.tpr, "fpr": s.fpr} if s.planted_rates else {"pass_rates": s.pass_rates}
            for label, r in rates.items():
                if len(r or ()) != nb:
                    raise bad_value(f"{s.name}.{label}", r, f"give one rate per blueprint ({nb})")
        if self.value_means is not None and len(self.value_means) != nb:
            raise bad_value("value_means", self.value_means, f"give one mean per blueprint ({nb})")
        if self.n_replicates < 1 or self.seeds_per_cell < 1:
            raise bad_value("n_replicates/seeds_per_cell", (self.n_replicates, self.seeds_per_cell),
                            "use positive counts")
        if not 0.0 <= self.replicate_correlation < 1.0:
            raise bad_value("replicate_correlation", self.replicate_correlation, "use [0, 1)")
        if not (0.0 <= self.cell_correlation
                and self.replicate_correlation + self.cell_correlation < 1.0):
            raise bad_value("cell_correlation", self.cell_correlation,
                            "use [0, 1 - replicate_correlation)")
        if not self.strategy_replicate_sd >= 0.0:
            raise bad_value("strategy_replicate_sd", self.strategy_replicate_sd, "use an SD >= 0")
        if not 0.0 <= self.unmeasured_rate < 1.0:
            raise bad_value("unmeasured_rate", self.unmeasured_rate, "use [0, 1)")

    def with_replicates(self, n_replicates: int) -> SimulationDesign:
        return replace(self, n_replicates=n_replicates)


@dataclass(frozen=True)
class _Draw:
    value: np.ndarray      # (R, B, K)
    valuable: np.ndarray   # (R, B, K) bool
    passed: np.ndarray     # (S, R, B, K) bool
    statistic: np.ndarray  # (S, R, B, K), NaN where unmeasured
    epoch: np.ndarray      # (S, R, B, K), NaN where failed


def _draw(design: SimulationDesign, rng: np.random.Generator) -> _Draw:
    R, B, K = design.n_replicates, len(design.blueprints), design.seeds_per_cell
    icc, cc = design.replicate_correlation, design.cell_correlation
    shape = (R, B, K)
    u = rng.standard_normal(R)[:, None, None]
    h = rng.standard_normal(R)[:, None, None]
    resid = 1.0 - icc - cc
    y = np.sqrt(icc) * u + np.sqrt(resid) * rng.standard_normal(shape)
    g = np.zeros((R, B, 1))
    if cc > 0:
        y = y + np.sqrt(cc) * rng.standard_normal((R, B, 1))
        g = rng.standard_normal((R, B, 1))
    means = np.zeros(B) if design.value_means is None else np.asarray(design.value_means, float)
    value = means[None, :, None] + design.value_sd * y
    valuable = value >= design.margin
    t = design.strategy_replicate_sd
    passed, stats, epochs = [], [], []
    for spec in design.strategies:
        a = 0.0 if spec.planted_rates else spec.signal
        rest = 1 - a * a
        x = (a * y + np.sqrt(icc * rest) * h + np.sqrt(cc * rest) * g
             + np.sqrt(resid * rest) * rng.standard_normal(shape))
        if t > 0:
            x = (x + t * rng.standard_normal(R)[:, None, None]) / np.sqrt(1 + t * t)
        if spec.planted_rates:
            z_val = sps.norm.isf(np.asarray(spec.tpr, dtype=float))[None, :, None]
            z_not = sps.norm.isf(np.asarray(spec.fpr, dtype=float))[None, :, None]
            z = np.where(valuable, z_val, z_not)
        else:
            z = sps.norm.isf(np.asarray(spec.pass_rates, dtype=float))[None, :, None]
        ok = x >= z  # z is +inf for rate 0, -inf for rate 1
        stat = spec.scale * (x - np.clip(z, -1e300, 1e300))
        missing = rng.random(shape) < design.unmeasured_rate
        passed.append(ok & ~missing)
        stats.append(np.where(missing, np.nan, stat))
        epochs.append(np.where(passed[-1], 10 + rng.poisson(3.0, shape), np.nan))
    return _Draw(value=value, valuable=valuable, passed=np.stack(passed),
                 statistic=np.stack(stats), epoch=np.stack(epochs))


def simulate_decisions(design: SimulationDesign, *, seed: int = 0) -> pd.DataFrame:
    """One decisions table drawn from ``design`` (deterministic given ``seed``)."""
    d = _draw(design, np.random.default_rng(seed))
    R, B, K = d.value.shape
    shape = (R, B, K)
    rep = np.broadcast_to(np.arange(R)[:, None, None], shape).ravel()
    bp = np.broadcast_to(np.asarray(design.blueprints, dtype=object)[None, :, None], shape).ravel()
    seed_id = np.broadcast_to(np.arange(K)[None, None, :], shape).ravel()
    frames = [pd.DataFrame({
        "replicate": rep, "blueprint": bp, "strategy": spec.name,
        "passed": d.passed[i].ravel(), "pass_epoch": d.epoch[i].ravel(),
        "statistic": d.statistic[i].ravel(), "value": d.value.ravel(),
        "valuable": d.valuable.ravel(), "seed": seed_id,
    }) for i, spec in enumerate(design.strategies)]
    return pd.concat(frames, ignore_index=True)


def simulate_counts(design: SimulationDesign, *, seed: int = 0) -> np.ndarray:
    """The per-replicate counts ``(R, S, B, N_FIELDS)`` of the table that
    :func:`simulate_decisions` draws with the same ``seed``, strategies in design order and
    blueprints sorted by name (the layout of the analysis' count arrays)."""
    d = _draw(design, np.random.default_rng(seed))
    order = np.argsort(np.asarray(design.blueprints, dtype=object).astype(str), kind="stable")
    val = d.valuable[None]                      # (1, R, B, K)
    passed = d.passed
    util = np.where(passed, d.value[None], 0.0)
    fields = [np.ones_like(passed, dtype=float), passed, np.broadcast_to(val, passed.shape),
              passed & val, passed & ~val, util]
    counts = np.stack([np.asarray(f, dtype=float).sum(axis=-1) for f in fields], axis=-1)
    assert counts.shape[-1] == N_FIELDS
    return np.moveaxis(counts, 0, 1)[:, :, order]  # (R, S, B, F)
