"""The verdict in winner.yaml: its kind and headline are kept, a degenerate gate is never
exported, and loading a forced export warns with the flag and the verdict it overrode."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import esper_ab
from esper_ab.errors import ConfigError
from esper_ab.export import build_winner, write_winner
from esper_ab.gate import GateConfig
from esper_ab.stats import SimulationDesign, StrategySpec, analyze, simulate_decisions
from esper_ab.study.spec import load_sweep_spec

BPS = ("attention", "conv_light", "depthwise", "norm")


@pytest.fixture(scope="module")
def analysis() -> dict:
    design = SimulationDesign(blueprints=BPS, n_replicates=15, seeds_per_cell=3,
                              strategies=(StrategySpec("baseline", (0.5,) * 4, signal=-0.6),))
    base = simulate_decisions(design, seed=3)
    none = base.assign(strategy="t001-exponent", passed=False, pass_epoch=np.nan)
    return analyze(pd.concat([base, none], ignore_index=True), n_boot=50, n_perm=200).to_dict()


def _build(analysis: dict, label: str):
    return build_winner(gate=GateConfig(strategy="exponent", strategy_params={"a": 0.25},
                                        threshold=0.01, min_epochs=2),
                        analysis=analysis, label=label, experiment="x", sweep_run_id="r",
                        trial_run_id="t", spec=load_sweep_spec("search_spaces/smoke.yaml"),
                        versions={}, git_commit="unknown", forced=True)


def test_a_degenerate_gate_is_never_exported_even_forced(analysis):
    (cand,) = analysis["verdict"]["candidates"]
    assert cand["degenerate"].startswith("admits no seed") and analysis["verdict"]["winner"] is None
    with pytest.raises(ConfigError, match=r"t001-exponent is a degenerate gate \(it admits no "
                                          r"seed.*even with --force"):
        _build(analysis, "t001-exponent")


def test_forced_export_keeps_the_verdict_and_warns_on_load(analysis, tmp_path):
    verdict = dict(analysis["verdict"])
    verdict["candidates"] = []  # a trial the verdict did not exclude as degenerate
    doc = _build({**analysis, "verdict": verdict}, "t002-exponent")
    assert doc.evidence.verdict_kind == "not_better"
    assert doc.evidence.verdict.splitlines()[0] == verdict["headline"]
    path = write_winner(doc, tmp_path / "forced.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        esper_ab.load_gate(path)
    (w,) = [c for c in caught if "--force" in str(c.message)]
    assert "not_better" in str(w.message) and "Verdict: not better" in str(w.message)
