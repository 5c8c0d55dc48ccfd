"""The replay sweep tracked in a real sqlite MLflow store: one parent tagged fidelity=replay,
the finalists as full child runs, the trial table, the report; every run ends."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from fidelity_helpers import space

from esper_ab.fidelity.replay_sweep import ReplaySweepOptions, run_replay_sweep
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.trial import BASELINE_LABEL


def _runs(uri: str, experiment: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


def test_replay_sweep_logs_like_any_sweep(evidence, tmp_path):
    spec = parse_sweep_spec(space(name="fid_track", num_samples=200))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = run_replay_sweep(spec, evidence=evidence, options=ReplaySweepOptions(
        tracking_uri=uri, finalists=3, n_boot=50, n_perm=50))
    assert out.status == "FINISHED" and out.search.n_configs == 200
    df = _runs(uri, "fid_track")
    assert set(df["status"]) == {"FINISHED"}
    parent = df[df["tags.esper_ab.role"] == "sweep"]
    kids = df[df["tags.esper_ab.role"] == "trial"]
    assert list(parent["run_id"]) == [out.sweep_run_id]
    assert set(df["tags.esper_ab.fidelity"]) == {"replay"}
    assert parent["tags.esper_ab.search"].iloc[0] == "optuna-in-process"
    assert float(parent["metrics.replay.configs"].iloc[0]) == 200
    assert float(parent["metrics.replay.configs_per_s"].iloc[0]) > 0
    assert len(kids) == 3 and set(kids["tags.mlflow.parentRunId"]) == {out.sweep_run_id}
    assert sorted(kids["tags.esper_ab.replay_rank"].astype(int)) == [1, 2, 3]
    assert (kids["metrics.replicates_evaluated"] == 3).all()
    assert kids["metrics.g2.pvalue.realized_utility_vs_baseline"].notna().all()
    # the finalists' logged metrics are the search's own scores of those configs
    table = out.search.trials.set_index("number")
    for _, kid in kids.iterrows():
        number = int(kid["params.optuna_trial"])
        assert kid["metrics.g2.realized_utility"] == pytest.approx(
            table.loc[number, "g2.realized_utility"], rel=1e-9, abs=1e-9)
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        trials = pd.read_parquet(client.download_artifacts(out.sweep_run_id,
                                                           "replay/trials.parquet", tmp))
        page = Path(client.download_artifacts(out.sweep_run_id, "report.html", tmp)).read_text()
        kid = kids["run_id"].iloc[0]
        decisions = pd.read_csv(client.download_artifacts(kid, "trial/decisions.csv", tmp))
    assert len(trials) == 200 and "g2.realized_utility" in trials.columns
    assert "data:image/png;base64," in page
    assert set(decisions["strategy"]) == {"candidate", BASELINE_LABEL}
    assert out.analysis is not None and out.reason.startswith("replay search of 200 configs")


class _Exploding:
    """Evidence whose decisions fail after the baseline: the sweep must end FAILED."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    replicates = property(lambda self: self.inner.replicates)
    min_replicates_for_calibration = property(lambda self: 2)

    def decisions(self, gate, *, label, replicates):
        self.calls += 1
        if self.calls > 3:
            raise RuntimeError("disk on fire")
        return self.inner.decisions(gate, label=label, replicates=replicates)

    def fit_calibration(self, gate, *, replicates):
        return self.inner.fit_calibration(gate, replicates=replicates)


def test_a_failing_search_ends_its_parent_failed(evidence, tmp_path):
    spec = parse_sweep_spec(space(name="fid_fail", num_samples=10))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_replay_sweep(spec, evidence=_Exploding(evidence),
                         options=ReplaySweepOptions(tracking_uri=uri))
    df = _runs(uri, "fid_fail")
    assert list(df["status"]) == ["FAILED"]
    assert "disk on fire" in df["tags.esper_ab.end_reason"].iloc[0]
