"""What a gate decides on a recorded episode: the G2 decision of every gated seed, from
the episode's trace, and the per-seed summary the ``episode`` command prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from esper_ab.episodes.blueprints import PLACEBO

if TYPE_CHECKING:
    from esper_ab.episodes.runner import EpisodeResult

__all__ = ["gate_decisions", "summarize"]


def gate_decisions(result: EpisodeResult, gate) -> pd.DataFrame:
    """The G2 decision of ``gate`` for every gated seed of ``result``, from its trace.

    Columns: seed_id, slot, blueprint, passed, pass_epoch, gate_value, gate_state,
    gate_reason, failed_check (the first failed check, None when passed). The placebo is
    the control and is not gated.
    """
    from esper_ab.episodes.tables import step_measurements

    rows = []
    for row in result.seeds.itertuples(index=False):
        if row.blueprint == PLACEBO:
            continue
        decision = gate.decide(step_measurements(result.trace, row.seed_id),
                               blueprint=row.blueprint)
        rows.append({"seed_id": row.seed_id, "slot": row.slot, "blueprint": row.blueprint,
                     "passed": decision.passed, "pass_epoch": decision.epoch,
                     "gate_value": decision.value, "gate_state": decision.state,
                     "gate_reason": decision.reason,
                     "failed_check": (decision.failed_checks[0].name
                                      if decision.failed_checks else None)})
    return pd.DataFrame(rows)


def summarize(result: EpisodeResult, gate) -> pd.DataFrame:
    """Per seed: params, median R_base (= RMS ratio), value +- its standard error,
    valuable, and the G2 decision of ``gate``."""
    decisions = gate_decisions(result, gate).set_index("seed_id")
    out = result.seeds[["slot", "blueprint", "seed_id", "n_params", "rms_ratio_median",
                        "value_acc_pp", "value_acc_se_pp", "value_loss", "valuable",
                        "dead_at_birth"]].copy()
    out["g2_passed"] = out["seed_id"].map(decisions["passed"]).astype("boolean")
    out["g2_pass_epoch"] = out["seed_id"].map(decisions["pass_epoch"])
    out["g2_reason"] = out["seed_id"].map(decisions["gate_reason"])
    out["g2_failed_check"] = out["seed_id"].map(decisions["failed_check"])
    return out.reset_index(drop=True)
