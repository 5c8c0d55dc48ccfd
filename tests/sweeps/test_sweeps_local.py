"""Real sweeps on a local Ray (one per module): tracked in sqlite MLflow and in a real
`mlflow server`, a crashing trial, a strategy that measures nothing (NaN statistics)."""

from __future__ import annotations

import json
import tempfile
import urllib.request
from pathlib import Path

import mlflow
import optuna
import pytest
from sweep_helpers import CrashingEvidence, space

from esper_ab.replay import synthetic_traces
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.study.studies import sweep_study_name
from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

pytestmark = pytest.mark.slow
BLUEPRINTS = ["noop", "norm", "attention", "conv_small", "depthwise", "conv_light",
              "conv_heavy", "bottleneck"]


def test_local_smoke_sweep(ray_local, tmp_path):
    """Real (tiny) synthetic-cnn episodes, recorded once in a Ray task, replayed by 4 trials."""
    spec = parse_sweep_spec(space(name="local_smoke", num_samples=4, replicates=3,
                                  workloads=[{"name": "synthetic-cnn",
                                              "episode": {"size": "tiny"}}],
                                  traces={"source": "record"},
                                  objectives=[{"metric": "realized_utility"}],
                                  scheduler={"kind": "asha", "grace_period": 1}))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = run_sweep(spec, options=SweepOptions(tracking_uri=uri, n_boot=100, n_perm=100))
    assert out.status == "FINISHED"
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_names=["local_smoke"])
    assert set(df["status"]) == {"FINISHED"}                          # nothing RUNNING
    parents = df[df["tags.esper_ab.role"] == "sweep"]
    kids = df[df["tags.esper_ab.role"] == "trial"]
    assert list(parents["run_id"]) == [out.sweep_run_id]
    assert len(kids) == 4 and set(kids["tags.mlflow.parentRunId"]) == {out.sweep_run_id}
    assert kids["tags.esper_ab.trial_id"].nunique() == 4
    assert set(kids["tags.esper_ab.device"]) == {"cpu"}
    complete = kids[kids["metrics.replicates_evaluated"] == 3]
    assert len(complete) >= 1                                           # ASHA keeps one
    for bp in BLUEPRINTS:
        assert complete[f"metrics.g2.pass_rate.{bp}"].notna().all()
    early = kids[kids["metrics.replicates_evaluated"] < 3]
    assert (early["tags.esper_ab.stopped_early"] == "true").all()
    assert all(r.startswith(("completed", "stopped early"))
               for r in kids["tags.esper_ab.end_reason"])
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(client.download_artifacts(out.sweep_run_id, "report.html", tmp)).read_text()
    assert page.count("data:image/png;base64,") == 3   # incl. statistic vs value; no Pareto
    journal = optuna.storages.journal.JournalFileBackend(
        str(out.sweep_dir / "optuna.journal"))
    study = optuna.load_study(study_name=sweep_study_name("local_smoke", out.sweep_run_id),
                              storage=optuna.storages.JournalStorage(journal))
    assert len(study.trials) == 4
    assert out.fit_wall_s > 0 and out.trial_compute_s > 0
    assert (out.sweep_dir.parent / ".esper_ab_cache").is_dir()       # traces cached


def test_demo_prints_the_table_the_verdict_and_the_ui(ray_local, tmp_path, monkeypatch,
                                                       capsys):
    from esper_ab.cli import main

    path = tmp_path / "demo_space.yaml"
    import yaml
    path.write_text(yaml.safe_dump(space(name="demo_space", replicates=4, num_samples=2,
                                         strategies=[{"name": "first_order_value",
                                                      "threshold": 0.0}])))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "winner.yaml").write_text("the user's own gate\n")
    assert main(["demo", "--space", str(path)]) == 0
    out = capsys.readouterr().out
    demo = tmp_path / "esper_ab_demo"
    assert "Per blueprint" in out and "Verdict:" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{demo / 'mlflow.db'}" in out
    last = out.rstrip().splitlines()[-1]      # the console ends with the run's address
    assert last.endswith("?workflowType=machine_learning") and "/#/experiments/" in last
    assert ("winner.yaml: " in out) == (demo / "winner.yaml").is_file()
    assert (demo / "winner.yaml").is_file() or "No winner.yaml written" in out
    assert (demo / "mlflow.db").is_file() and (demo / "esper_ab_sweeps").is_dir()
    # the demo writes into its own folder only: the user's winner.yaml is untouched
    assert (tmp_path / "winner.yaml").read_text() == "the user's own gate\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["demo_space.yaml", "esper_ab_demo", "winner.yaml"])


def test_crashing_and_nan_trials_are_recorded(ray_local, tmp_path):
    spec = parse_sweep_spec(space(
        name="failures", replicates=2, sampler={"kind": "grid"}, max_concurrent=2,
        strategies=[{"name": "raw", "threshold": 0.1},
                    {"name": "mean_abs", "threshold": 0.1},
                    {"name": "first_order_value", "threshold": 0.0}],
        failure={"max_failures": 1}))
    traces = synthetic_traces(replicates=[0, 1], epochs=12, steps_per_epoch=2,
                              seeds_per_blueprint=1, first_order_signal=None)
    evidence = CrashingEvidence(traces, always=("raw",), once=("mean_abs",),
                                marker_dir=str(tmp_path))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = run_sweep(spec, evidence=evidence,
                    options=SweepOptions(tracking_uri=uri, n_boot=50, n_perm=50))
    assert out.status == "FINISHED"
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_names=["failures"])
    kids = df[df["tags.esper_ab.role"] == "trial"].set_index("params.strategy")
    assert len(kids) == 3                              # one run per trial, retries included
    raw = kids.loc["raw"]
    assert raw["status"] == "FAILED"
    assert "injected crash for raw" in raw["tags.esper_ab.end_reason"]
    assert raw["tags.esper_ab.attempts"] == "2"        # first try + one retry
    retried = kids.loc["mean_abs"]
    assert retried["status"] == "FINISHED" and retried["tags.esper_ab.attempts"] == "2"
    assert "one-off crash" in retried["tags.esper_ab.last_error"]
    nan = kids.loc["first_order_value"]
    assert nan["status"] == "FINISHED"
    assert nan["metrics.g2.n_unmeasured"] == nan["metrics.g2.n"] > 0
    assert nan["metrics.g2.pass_rate"] == 0.0
    parent = df[df["tags.esper_ab.role"] == "sweep"].iloc[0]
    assert parent["status"] == "FINISHED"


def _rest(url: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"},
                                 method="POST" if body else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_sweep_against_a_real_mlflow_server(ray_local, mlflow_server, tmp_path):
    """Also the multi-objective path: NSGA-II over two objectives, a Pareto front."""
    spec = parse_sweep_spec(space(name="served", num_samples=3, replicates=2,
                                  objectives=[{"metric": "balanced_accuracy"},
                                              {"metric": "pass_rate_gap"}],
                                  sampler={"kind": "nsga2", "seed": 0, "population_size": 2}))
    out = run_sweep(spec, options=SweepOptions(tracking_uri=mlflow_server,
                                               storage_dir=str(tmp_path / "state"),
                                               n_boot=50, n_perm=50))
    assert out.status == "FINISHED"
    exp_id = _rest(mlflow_server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name="
                   "served")["experiment"]["experiment_id"]       # the server is shared
    runs = _rest(mlflow_server, "/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [exp_id], "max_results": 100})["runs"]
    assert len(runs) == 4 and {r["info"]["status"] for r in runs} == {"FINISHED"}
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    assert sum(t.get("mlflow.parentRunId") == out.sweep_run_id for t in tags) == 3
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    assert "report.html" in {a.path for a in client.list_artifacts(out.sweep_run_id)}
    assert "plots/pareto_front.png" in {a.path for a in
                                        client.list_artifacts(out.sweep_run_id, "plots")}
    study = optuna.load_study(study_name=sweep_study_name("served", out.sweep_run_id), storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out.sweep_dir / "optuna.journal"))))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert len(study.trials) == 3 and len(study.best_trials) >= 1   # the Pareto front
