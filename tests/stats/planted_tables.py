"""An independent generator of planted count tables for the verdict's error rates.

Written apart from ``esper_ab.stats._simulate`` on purpose: random effects per replicate and
per replicate x blueprint on both the probability that a seed is valuable (and its value)
and the pass probability of every strategy, so seeds that share a replicate, or a replicate
and a blueprint, are not independent. Strategies judge the same seeds (a paired design): a
seed's latent score is shared, with correlation ``rho``, between strategies.

The output is the count array the analysis reduces a table to, ``(R, S, B, 6)`` with fields
(n, passed, valuable, true positives, false positives, realized utility).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri


def planted_counts(rng: np.random.Generator, *, tpr: np.ndarray, fpr: np.ndarray,
                   n_replicates: int, seeds_per_cell: int, p_valuable: float = 0.5,
                   sd_replicate: float = 0.25, sd_cell: float = 0.25, rho: float = 0.5
                   ) -> np.ndarray:
    """Counts for strategies with true rates ``tpr``/``fpr`` of shape (S, B) (at zero random
    effects; the effects are symmetric on the probit scale, so the rates stay equal across
    blueprints where they are planted equal)."""
    tpr, fpr = np.asarray(tpr, float), np.asarray(fpr, float)
    S, B = tpr.shape
    R, K = n_replicates, seeds_per_cell
    # whether a seed is valuable: probit random effects per replicate and per cell
    u = rng.normal(0, sd_replicate, (R, 1, 1)) + rng.normal(0, sd_cell, (R, B, 1))
    valuable = rng.random((R, B, K)) < ndtr(ndtri(p_valuable) + u)
    # value of a seed: valuable ones carry a positive value with replicate / cell effects
    a = rng.normal(0, 0.3, (R, 1, 1)) + rng.normal(0, 0.3, (R, B, 1))
    value = np.where(valuable, np.exp(a + 0.3 * rng.standard_normal((R, B, K))), -0.05)
    # pass: probit threshold with random effects per replicate and per cell (shared by the
    # strategies, so the pair is correlated), seed latent shared with correlation rho
    e = rng.normal(0, sd_replicate, (R, 1, 1, 1)) + rng.normal(0, sd_cell, (R, 1, B, 1))
    z0 = rng.standard_normal((R, 1, B, K))
    z = rho * z0 + np.sqrt(1 - rho * rho) * rng.standard_normal((R, S, B, K))
    rate = np.where(valuable[:, None], tpr[None, :, :, None], fpr[None, :, :, None])
    # a rate planted at exactly 0 or 1 stays there
    passed = np.where(rate <= 0, False, np.where(rate >= 1, True,
                      z < ndtri(np.clip(rate, 1e-12, 1 - 1e-12)) + e))
    val = np.broadcast_to(valuable[:, None], passed.shape)
    fields = [np.ones_like(passed, float), passed, val, passed & val, passed & ~val,
              np.where(passed, value[:, None], 0.0)]
    return np.stack([np.asarray(f, float).sum(axis=-1) for f in fields], axis=-1)
