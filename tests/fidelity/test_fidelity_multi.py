"""The multi-fidelity sweep end to end on a tiny real space: replay search, closed-loop
confirmation as Ray tasks on a real local Ray, sqlite MLflow; agreement checked exactly."""

from __future__ import annotations

import dataclasses
import tempfile

import mlflow
import pandas as pd
import pytest
from fidelity_helpers import space

from esper_ab.fidelity.multi import MultiFidelityOptions, run_multi_fidelity
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.trial import BASELINE_LABEL

pytestmark = pytest.mark.slow


def test_multi_fidelity_end_to_end(recorded, ray_local, tmp_path):
    spec = parse_sweep_spec(space(name="fid_multi", fidelity="multi", num_samples=150,
                                  replicates={"search": [0, 1], "confirm": [2, 3]},
                                  confirm={"top_k": 1}))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    options = MultiFidelityOptions(tracking_uri=uri, storage_dir=str(recorded.root),
                                   n_boot=100, n_perm=200)
    out = run_multi_fidelity(spec, options=options)
    assert out.status == "FINISHED"
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_names=["fid_multi"])
    assert set(df["status"]) == {"FINISHED"}                        # nothing left RUNNING
    roles = df.groupby("tags.esper_ab.role")["tags.esper_ab.fidelity"].agg(set).to_dict()
    assert roles == {"sweep": {"multi"}, "trial": {"replay"}, "confirmation": {"closed_loop"}}
    kids = df[df["tags.esper_ab.role"] == "confirmation"]
    assert len(kids) == 2 and set(kids["tags.esper_ab.device"]) == {"cpu"}
    assert set(kids["tags.esper_ab.label"]) == {BASELINE_LABEL, out.agreement["config"].iloc[
        (out.agreement["config"] != BASELINE_LABEL).to_numpy().argmax()]}

    # The search saw only its replicates; the closed loop ran only the held-out ones.
    conf = out.confirmation
    assert set(out.search.trials["strategy"]) and out.search.n_replicates == 2
    assert set(out.replay_summary.decisions["replicate"]) == {0, 1}
    assert set(conf.replicates) == {2, 3} and set(conf.decisions["replicate"]) == {2, 3}

    # Replay predicts every admit and blend epoch inside the recorded window exactly.
    ps = out.per_seed
    assert len(ps) == 2 * 2 * 4                                     # configs x reps x seeds
    assert set(ps["replicate"]) == {2, 3}
    inside = ~ps["late_admit"]
    assert ps.loc[inside, "admit_agree"].all()
    assert ps["epoch_agree"].dropna().all()
    base = out.agreement.set_index("config").loc[BASELINE_LABEL]
    assert base["closed_admits"] > 0 and base["epoch_agreement"] == 1.0
    # A seed the loop never admits leaves the control host: its gain is exactly 0.
    assert (ps.loc[~ps["closed_admitted"].astype(bool), "closed_gain_pp"] == 0.0).all()
    # The authoritative analysis is the closed loop's, on the confirmation replicates.
    assert out.closed_loop.n_replicates == 2
    assert set(out.closed_loop.metrics.overall.index) == set(out.agreement["config"])
    c = out.compute
    assert c["closed_loop_runs"] + c["closed_loop_runs_cached"] == 4
    assert c["episodes_cached"] == 4 and c["replay_configs"] == 150

    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        agreement = pd.read_csv(client.download_artifacts(out.sweep_run_id,
                                                          "fidelity/agreement.csv", tmp))
        page = open(client.download_artifacts(out.sweep_run_id, "fidelity/report.html",
                                              tmp)).read()
        replay_analysis = client.download_artifacts(out.sweep_run_id,
                                                     "replay/analysis.json", tmp)
    assert list(agreement["config"]) == list(out.agreement["config"])
    assert "authoritative" in page and replay_analysis
    tags = df[df["tags.esper_ab.role"] == "sweep"].iloc[0]
    assert tags["tags.esper_ab.verdict"] == out.closed_loop.verdict.reason
    assert tags["tags.esper_ab.replay_verdict"]

    # export reads the closed-loop analysis: the confirmed config is the one exported
    from esper_ab.commands.export import NoWinner, export_winner
    from esper_ab.tracking import SweepTracker

    tracker = SweepTracker(uri)
    if out.winner is None:
        with pytest.raises(NoWinner):
            export_winner(tracker, "fid_multi", out.sweep_run_id, str(tmp_path / "w.yaml"))
    candidates = out.confirmation.verdict.to_dict()["candidates"]
    if all(c["degenerate"] for c in candidates):
        # The tiny episodes may hold no valuable seed: then every gate is degenerate and
        # nothing is exported, not even with --force (and no file is written).
        with pytest.raises(NoWinner, match="degenerate"):
            export_winner(tracker, "fid_multi", out.sweep_run_id, str(tmp_path / "w.yaml"),
                          force=True)
        assert not (tmp_path / "w.yaml").exists()
    else:
        path, doc = export_winner(tracker, "fid_multi", out.sweep_run_id,
                                  str(tmp_path / "w.yaml"), force=True)
        assert doc.evidence.fidelity == "multi"
        assert doc.evidence.trial in set(out.agreement["config"]) - {BASELINE_LABEL}

    # Run again (a fresh sweep folder, so a fresh search that picks the same finalists, and
    # the same cache): every closed-loop run now comes from the cache.
    again = run_multi_fidelity(spec, options=dataclasses.replace(
        options, storage_dir=str(tmp_path / "again"),
        cache_dir=str(out.sweep_dir.parent / ".esper_ab_cache")))
    assert again.compute["closed_loop_runs"] == 0
    assert again.compute["closed_loop_runs_cached"] == 4
