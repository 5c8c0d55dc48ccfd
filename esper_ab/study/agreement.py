"""Where replay and the closed loop agree, and where they disagree (pure: no Ray, no MLflow).

Inputs: the replay predictions (``esper_ab.replay.engine`` of the very gates that ran in the loop, on
the confirmation replicates' recorded traces) and the closed-loop runs
(``esper_ab.study.confirmation``). Up to G2 a closed-loop run reads the same batches as the
recorded episode's incubation, so replay should predict every admit and blend epoch inside
the recorded window exactly; a seed the closed loop admits later than the recorded window
is invisible to replay (``late_admit``). After G2 they differ by design: replay's value is
the placebo-controlled fork value measured at the end of incubation, the closed loop's is
the realized final accuracy gain over the no-seed control after blending at the pass epoch.

- ``per_seed_agreement``: one row per config x seed.
- ``agreement_table``: one row per config: admits, admit agreement, exact blend-epoch
  agreement, late admits, the objective predicted by replay and realized in the loop, and
  both ranks.
- ``rank_agreement``: Spearman and Kendall of the two objectives across configs, and whether
  both pick the same best config.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from esper_ab.gate import GateConfig
from esper_ab.trial import BASELINE_LABEL

__all__ = ["agreement_table", "closed_loop_decisions", "format_agreement", "per_seed_agreement",
           "rank_agreement", "render_fidelity_html", "replay_predictions"]


def closed_loop_decisions(runs: Sequence[Any], seeds: pd.DataFrame) -> pd.DataFrame:
    """The closed-loop runs as a stats decisions table: ``passed`` = admitted,
    ``pass_epoch`` = blend epoch, ``value`` = realized gain over the no-seed control (pp;
    exactly 0 for a seed never admitted), ``valuable`` = the recorded episode's ground truth
    (the placebo-controlled fork), ``statistic`` unmeasured (the loop does not record it)."""
    table = pd.concat([r.table for r in runs], ignore_index=True)
    truth = seeds.drop_duplicates(["replicate", "seed_id"])[
        ["replicate", "seed_id", "valuable", "value_acc_pp"]]
    out = table.merge(truth, on=["replicate", "seed_id"], how="left", validate="m:1")
    if out["valuable"].isna().any():
        bad = out.loc[out["valuable"].isna(), "seed_id"].iloc[0]
        from esper_ab.errors import DataError

        raise DataError(f"closed-loop seed {bad!r} has no recorded episode value: record the "
                        "confirmation replicates ('esper-ab record SPACE.yaml')")
    return pd.DataFrame({
        "replicate": out["replicate"].to_numpy(), "seed": out["seed_id"].to_numpy(),
        "seed_id": out["seed_id"].to_numpy(), "blueprint": out["blueprint"].to_numpy(),
        "strategy": out["label"].to_numpy(), "passed": out["admitted"].astype(bool).to_numpy(),
        "pass_epoch": out["blend_epoch"].array, "statistic": np.nan,
        "value": out["gain_vs_control_pp"].astype(float).to_numpy(),
        "valuable": out["valuable"].astype(bool).to_numpy(),
        "fork_value_pp": out["value_acc_pp"].astype(float).to_numpy()})


def replay_predictions(traces: Any, gates: Mapping[str, GateConfig]) -> pd.DataFrame:
    """Replay of each labelled gate (calibrated gates use their fitted state, as in the loop)."""
    from esper_ab.replay import replay_decisions

    parts = [replay_decisions(traces, gate, label=label).decisions
             for label, gate in gates.items()]
    table = pd.concat(parts, ignore_index=True)
    return table.assign(seed=table["seed_id"])


def per_seed_agreement(predicted: pd.DataFrame, closed: pd.DataFrame, *,
                       recorded_epochs: int) -> pd.DataFrame:
    """One row per config x seed: replay's decision next to the closed loop's."""
    p = predicted.rename(columns={"strategy": "config", "passed": "replay_passed",
                                  "pass_epoch": "replay_pass_epoch",
                                  "value": "fork_value_pp"})[
        ["config", "replicate", "seed_id", "blueprint", "replay_passed", "replay_pass_epoch",
         "fork_value_pp"]]
    c = closed.rename(columns={"strategy": "config", "passed": "closed_admitted",
                               "pass_epoch": "closed_blend_epoch",
                               "value": "closed_gain_pp"})[
        ["config", "replicate", "seed_id", "closed_admitted", "closed_blend_epoch",
         "closed_gain_pp"]]
    out = p.merge(c, on=["config", "replicate", "seed_id"], how="outer", validate="1:1")
    both = out["replay_passed"].fillna(False).astype(bool) & \
        out["closed_admitted"].fillna(False).astype(bool)
    out["admit_agree"] = out["replay_passed"].astype("boolean") == \
        out["closed_admitted"].astype("boolean")
    same = out["replay_pass_epoch"].astype("Float64") == out["closed_blend_epoch"].astype(
        "Float64")
    out["epoch_agree"] = same.where(both, pd.NA).astype("boolean")
    out["late_admit"] = (out["closed_admitted"].fillna(False).astype(bool)
                         & ~out["replay_passed"].fillna(False).astype(bool)
                         & (out["closed_blend_epoch"].astype("Float64") > recorded_epochs)
                         .fillna(False).astype(bool))
    return out.sort_values(["config", "replicate", "seed_id"]).reset_index(drop=True)


def agreement_table(per_seed: pd.DataFrame, *, predicted: Mapping[str, float],
                    realized: Mapping[str, float], objective: str,
                    search_rank: Mapping[str, int]) -> pd.DataFrame:
    """One row per config (the baseline included); ``predicted`` / ``realized`` map each
    config to its objective by replay / in the closed loop on the confirmation replicates."""
    rows = []
    for config, g in per_seed.groupby("config", sort=False):
        epoch = g["epoch_agree"].dropna()
        rows.append({
            "config": config, "search_rank": search_rank.get(config, pd.NA),
            "seeds": len(g), "replay_admits": int(g["replay_passed"].sum()),
            "closed_admits": int(g["closed_admitted"].sum()),
            "admit_agreement": float(g["admit_agree"].astype(float).mean()),
            "epoch_agreement": float(epoch.astype(float).mean()) if len(epoch) else math.nan,
            "late_admits": int(g["late_admit"].sum()),
            f"replay_{objective}": float(predicted.get(config, math.nan)),
            f"closed_{objective}": float(realized.get(config, math.nan)),
            "closed_gain_pp_per_admit": float(g.loc[g["closed_admitted"].astype(bool),
                                                    "closed_gain_pp"].mean())
            if g["closed_admitted"].any() else math.nan})
    table = pd.DataFrame(rows)
    for kind in ("replay", "closed"):
        table[f"{kind}_rank"] = table[f"{kind}_{objective}"].rank(ascending=False,
                                                                  method="min")
    return table.sort_values("closed_rank", kind="stable").reset_index(drop=True)


def rank_agreement(table: pd.DataFrame, objective: str) -> dict[str, Any]:
    """Spearman / Kendall of the replay-predicted vs the closed-loop objective across
    configs, and whether both pick the same best (non-baseline) config."""
    from scipy import stats as sps

    a = table[f"replay_{objective}"].to_numpy(dtype=float)
    b = table[f"closed_{objective}"].to_numpy(dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    rho = tau = math.nan
    if ok.sum() >= 3 and np.unique(a[ok]).size > 1 and np.unique(b[ok]).size > 1:
        rho = float(sps.spearmanr(a[ok], b[ok]).statistic)
        tau = float(sps.kendalltau(a[ok], b[ok]).statistic)
    cands = table[table["config"] != BASELINE_LABEL]
    same = bool(len(cands)) and (
        cands.sort_values(f"replay_{objective}", ascending=False)["config"].iloc[0]
        == cands.sort_values(f"closed_{objective}", ascending=False)["config"].iloc[0])
    return {"configs": int(ok.sum()), "spearman_rho": rho, "kendall_tau": tau,
            "same_best": same}


def format_agreement(table: pd.DataFrame, ranks: Mapping[str, Any], *, objective: str) -> str:
    """The printed agreement section."""
    cols = ["config", "search_rank", "closed_admits", "replay_admits", "admit_agreement",
            "epoch_agreement", "late_admits", f"replay_{objective}", f"closed_{objective}",
            "replay_rank", "closed_rank"]
    from esper_ab.console import render_frame

    lines = [render_frame(table[cols], counts=("search_rank", "closed_admits", "replay_admits",
                                               "late_admits", "replay_rank", "closed_rank"),
                          title="Replay vs closed loop (confirmation replicates; closed loop "
                                "is authoritative):"),
             f"rank agreement over {ranks['configs']} configs: Spearman "
             f"{_f(ranks['spearman_rho'])}, Kendall {_f(ranks['kendall_tau'])}; same best "
             f"config: {'yes' if ranks['same_best'] else 'no'}"]
    return "\n".join(lines)


def _f(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def render_fidelity_html(*, sweep: str, table: pd.DataFrame, ranks: Mapping[str, Any],
                         verdict: str, replay_verdict: str, compute: Mapping[str, Any],
                         objective: str, kind: str = "") -> str:
    """A self-contained page (no images) for the parent run's artifact view; the verdict box
    is coloured by ``kind`` (winner green, not_better grey, undecided amber)."""
    def frame(df: pd.DataFrame) -> str:
        return df.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-",
                          border=0, classes="t")

    esc = html.escape
    compute_rows = pd.DataFrame([{"part": k, "value": v} for k, v in compute.items()])
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>esper-ab multi-fidelity: {esc(sweep)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}} table.t{{border-collapse:collapse}}
table.t td,table.t th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}}
.verdict{{padding:.6em 1em;border-left:6px solid #999;background:#f4f4f4}}
.verdict.winner{{background:#e8f5e9;border-color:#2e7d32}}
.verdict.not_better{{background:#eceff1;border-color:#546e7a}}
.verdict.undecided{{background:#fff8e1;border-color:#ff8f00}}</style>
</head><body><h1>Multi-fidelity sweep <code>{esc(sweep)}</code></h1>
<h2>Verdict (closed loop, authoritative)</h2>
<div class="verdict {esc(kind)}" id="verdict" data-kind="{esc(kind)}">
<b>{esc(kind.replace("_", " ").upper())}</b> <p>{esc(verdict)}</p></div>
<h2>Replay stage</h2><p>{esc(replay_verdict)}</p>
<h2>Where replay and the closed loop agree</h2>
<p>Per config on the confirmation replicates: admits, the share of seeds whose admit decision
agrees, the share of seeds admitted by both whose blend epoch equals replay's pass epoch, the
seeds the loop admits after the recorded window (invisible to replay), and {esc(objective)}
predicted by replay (fork values) vs realized in the loop (final accuracy gain over the
no-seed control).</p>{frame(table)}
<p>Rank agreement over {ranks['configs']} configs: Spearman {_f(ranks['spearman_rho'])},
Kendall {_f(ranks['kendall_tau'])}; same best config: {'yes' if ranks['same_best'] else 'no'}.</p>
<h2>Compute</h2>{frame(compute_rows)}</body></html>"""
