"""Agreement between replay and the closed loop on hand-made tables (every number by hand)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from esper_ab.study.agreement import (
    agreement_table,
    format_agreement,
    per_seed_agreement,
    rank_agreement,
    render_fidelity_html,
)
from esper_ab.trial import BASELINE_LABEL


def _predicted():
    return pd.DataFrame({
        "strategy": ["A"] * 4, "replicate": [0, 0, 1, 1],
        "seed_id": ["s/x", "s/y", "s/x", "s/y"], "blueprint": ["x", "y", "x", "y"],
        "passed": [True, False, True, False],
        "pass_epoch": pd.array([3, pd.NA, 4, pd.NA], dtype="Int64"),
        "value": [1.0, -2.0, 0.5, 3.0]})


def _closed():
    return pd.DataFrame({
        "strategy": ["A"] * 4, "replicate": [0, 0, 1, 1],
        "seed_id": ["s/x", "s/y", "s/x", "s/y"],
        "passed": [True, False, True, True],          # s/y r1: admitted after the window
        "pass_epoch": pd.array([3, pd.NA, 5, 12], dtype="Int64"),
        "value": [2.0, 0.0, -1.0, 4.0]})


def test_per_seed_agreement_by_hand():
    ps = per_seed_agreement(_predicted(), _closed(), recorded_epochs=10)
    assert list(ps["admit_agree"]) == [True, True, True, False]
    assert list(ps["epoch_agree"].astype(object)) == [True, pd.NA, False, pd.NA]
    assert list(ps["late_admit"]) == [False, False, False, True]
    table = agreement_table(ps, predicted={"A": 1.5}, realized={"A": 5.0},
                            objective="realized_utility", search_rank={"A": 1})
    row = table.iloc[0]
    assert (row["replay_admits"], row["closed_admits"], row["late_admits"]) == (2, 3, 1)
    assert row["admit_agreement"] == 0.75 and row["epoch_agreement"] == 0.5
    assert row["closed_gain_pp_per_admit"] == pytest.approx((2.0 - 1.0 + 4.0) / 3)
    assert row["replay_realized_utility"] == 1.5 and row["closed_realized_utility"] == 5.0


def _table(replay, closed):
    return pd.DataFrame({"config": [BASELINE_LABEL, "t001-a", "t002-b", "t003-c"],
                         "replay_realized_utility": replay,
                         "closed_realized_utility": closed})


def test_rank_agreement_by_hand():
    same = rank_agreement(_table([0.0, 3.0, 2.0, 1.0], [-5.0, 9.0, 4.0, 1.0]),
                          "realized_utility")
    assert same["spearman_rho"] == pytest.approx(1.0)
    assert same["kendall_tau"] == pytest.approx(1.0) and same["same_best"]
    flipped = rank_agreement(_table([0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]),
                             "realized_utility")
    assert flipped["spearman_rho"] == pytest.approx(-1.0) and not flipped["same_best"]
    # one swap among 4: Kendall (6 pairs, 5 concordant, 1 discordant) = 4/6
    one = rank_agreement(_table([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 4.0, 3.0]),
                         "realized_utility")
    assert one["kendall_tau"] == pytest.approx(4 / 6)
    assert one["spearman_rho"] == pytest.approx(1 - 6 * 2 / (4 * 15))
    flat = rank_agreement(_table([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]),
                          "realized_utility")
    assert math.isnan(flat["spearman_rho"])


def test_printed_and_html_sections():
    ps = per_seed_agreement(_predicted(), _closed(), recorded_epochs=10)
    table = agreement_table(ps, predicted={"A": 1.5}, realized={"A": 5.0},
                            objective="realized_utility", search_rank={"A": 1})
    ranks = {"configs": 1, "spearman_rho": math.nan, "kendall_tau": math.nan,
             "same_best": True}
    text = format_agreement(table, ranks, objective="realized_utility")
    assert "closed loop is authoritative" in text and "Spearman n/a" in text
    page = render_fidelity_html(sweep="s", table=table, ranks=ranks, verdict="v<1>",
                                replay_verdict="r", compute={"episode_cpu_s": 1.0},
                                objective="realized_utility")
    assert "v&lt;1&gt;" in page and "episode_cpu_s" in page
