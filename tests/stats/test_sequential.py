"""Sequential confirmation: the e-process by hand, per-replicate differences by hand, and
A/A simulations with a look after every replicate (the rate of declared gains stays <= alpha,
where a naive test repeated at every look does not)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from esper_ab.errors import DataError
from esper_ab.stats import (
    e_process,
    holm_anytime,
    replicate_differences,
    sequential_test,
)
from esper_ab.stats._sequential import LAMBDAS


def test_e_process_by_hand():
    y = [0.5, -0.25, 1.0]
    want = []
    for n in range(1, 4):
        want.append(sum(math.prod(1 + lam * v for v in y[:n]) for lam in LAMBDAS)
                    / len(LAMBDAS))
    assert np.allclose(e_process(np.array(y)), want, rtol=1e-12)
    with pytest.raises(DataError):
        e_process(np.array([1.5]))


def test_replicate_differences_by_hand():
    rows = []
    # replicate 0: 2 valuable (a, b), 2 not (c, d); replicate 1: no valuable seed
    truth = {0: {"a": (True, 2.0), "b": (True, 1.5), "c": (False, -1.0), "d": (False, 0.5)},
             1: {"a": (False, -2.0), "b": (False, 0.0)}}
    cand = {(0, "a"): 1, (0, "b"): 0, (0, "c"): 0, (0, "d"): 1, (1, "a"): 0, (1, "b"): 0}
    base = {(0, "a"): 0, (0, "b"): 0, (0, "c"): 1, (0, "d"): 1, (1, "a"): 1, (1, "b"): 0}
    for (r, s), passed in itertools.chain(((k, ("cand", v)) for k, v in cand.items()),
                                          ((k, ("base", v)) for k, v in base.items())):
        label, p = passed
        valuable, value = truth[r][s]
        rows.append({"strategy": label, "replicate": r, "seed": s, "passed": bool(p),
                     "valuable": valuable, "value": value})
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=3)      # order must not matter
    ba = replicate_differences(table, baseline="base", candidates=["cand"],
                               objective="balanced_accuracy")["cand"]
    # r0: dTP = +1 of P = 2, dTN = +1 (c refused) of N = 2 -> (0.5 + 0.5) / 2
    # r1: no valuable seed; dTN = +1 (a refused) of N = 2 -> 0.5 / 2
    assert np.allclose(ba, [0.5, 0.25])
    ru = replicate_differences(table, baseline="base", candidates=["cand"],
                               objective="realized_utility")["cand"]
    # r0: admitted value cand = 2 + 0.5, base = -1 + 0.5 -> +3 over |v| sum 5
    assert np.allclose(ru, [3.0 / 5.0, 2.0 / 2.0])


def _aa_differences(rng, n_studies, n_reps, seeds=8, p_valuable=0.4, clustered=True):
    """Per-replicate balanced-accuracy differences of two exchangeable gates (A/A): each
    replicate has its own pass propensity (a replicate random effect, shared by both)."""
    shape = (n_studies, n_reps, seeds)
    v = rng.random(shape) < p_valuable
    effect = 0.3 * rng.standard_normal((n_studies, n_reps, 1)) if clustered else 0.0
    p = np.clip(0.5 + effect + 0.2 * v, 0.02, 0.98)
    d = (rng.random(shape) < p).astype(int) - (rng.random(shape) < p).astype(int)
    n_v, n_n = v.sum(axis=-1), (~v).sum(axis=-1)
    tp = np.where(n_v > 0, (d * v).sum(axis=-1) / np.maximum(n_v, 1), 0.0)
    tn = np.where(n_n > 0, -(d * ~v).sum(axis=-1) / np.maximum(n_n, 1), 0.0)
    return (tp + tn) / 2


@pytest.mark.parametrize("clustered", [True, False])
def test_aa_with_a_look_after_every_replicate_keeps_the_rate(clustered):
    rng = np.random.default_rng(11 if clustered else 12)
    n_studies, n_reps, alpha = 2000, 40, 0.05
    x = _aa_differences(rng, n_studies, n_reps, clustered=clustered)
    wealth = e_process(x)                           # [studies, looks]
    rejected = (wealth >= 1 / alpha).any(axis=1)
    rate = rejected.mean()
    hi = sps.beta.ppf(0.975, rejected.sum() + 1, n_studies - rejected.sum())
    assert rate <= alpha and hi < 0.08, (rate, hi)
    # the same data with a naive t-test repeated at every look rejects far more often
    naive = np.zeros(n_studies, dtype=bool)
    for n in range(3, n_reps + 1):
        t = sps.ttest_1samp(x[:, :n], 0.0, axis=1)
        naive |= (t.pvalue < alpha) & (t.statistic > 0)
    assert naive.mean() > 2 * alpha


def test_a_real_gain_is_settled_early_and_no_gain_is_not():
    rng = np.random.default_rng(5)
    reps = list(range(30))
    gain = np.clip(0.3 + 0.1 * rng.standard_normal(30), -1, 1)
    none = np.clip(0.1 * rng.standard_normal(30), -1, 1)
    res = sequential_test({"good": gain, "flat": none}, replicates=reps, alpha=0.05,
                          margin=0.05, min_replicates=4)
    assert res.settled("good") == "gain" and res.pvalue("good") < 0.05 / 2
    assert res.settled("flat") != "gain" and res.pvalue("flat") > 0.05
    only = sequential_test({"good": gain}, replicates=reps, min_replicates=4)
    assert only.stopped_early and 4 <= only.n_used < 30
    first = int(np.argmax(e_process(gain) >= 1 / 0.05)) + 1
    assert only.n_used == max(4, first)
    adj = holm_anytime(res)
    assert adj["good"] == min(1.0, 2 * res.pvalue("good"))
    assert adj["flat"] >= adj["good"]
    d = res.to_dict()
    assert d["n_used"] == res.n_used and d["candidates"]["good"]["settled"] == "gain"
