"""MLflow tracking of sweeps: the only module that imports ``mlflow``.

Layout: one experiment per sweep name (opening in MLflow's model-training view); one parent
run per sweep invocation (tag ``esper_ab.role=sweep``): the resolved spec, the search space,
versions, git commit and, at the end, the result (``sweeps.outcome``: the baseline's and the
winner's metrics, per-blueprint tables, the verdict as the run's note); one nested child run
per trial (tag ``mlflow.parentRunId``), named by strategy and key parameters.

Every run is written from the sweep's *driver* through ``MlflowClient`` with explicit run
ids, so no worker needs to reach the tracking store (an embedded sqlite store serves a
multi-node cluster) and every run ends FINISHED or FAILED with a reason (tag
``esper_ab.end_reason``). Logging goes through ``BackgroundWriter``: one ordered queue and
one thread, so Tune never waits on the store and a run's end is written after everything
logged to it. (MLflow's own ``synchronous=False`` queue cost ~1 s per run end.)
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import mlflow
import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag

from esper_ab.errors import ConfigError
from esper_ab.gate import GateConfig
from esper_ab.study.analysis import SweepAnalysis, SweepRecord, TrialRecord
from esper_ab.study.outcome import (
    child_run_name,
    parent_metrics,
    parent_params,
    parent_tables,
    parent_tags,
)
from esper_ab.study.provenance import git_commit, package_versions
from esper_ab.study.report import png_bytes
from esper_ab.study.spec import SweepSpec, parse_sweep_spec
from esper_ab.study.studies import store_dir
from esper_ab.study.writer import BackgroundWriter
from esper_ab.trial import as_reference

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__all__ = ["DEFAULT_TRACKING_URI", "ML_VIEW", "BackgroundWriter", "SweepTracker", "git_commit",
           "package_versions", "resolve_tracking_uri", "rounded", "ui_url"]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ROLE, TRIAL_ID, END_REASON = "esper_ab.role", "esper_ab.trial_id", "esper_ab.end_reason"
PARENT = "mlflow.parentRunId"
# The experiment's kind, for MLflow clients that read it. MLflow 3.17's own UI does not: its
# view (GenAI or model training) is the URL's ``workflowType``, else the browser's last choice
# (localStorage ``mlflow.workflowType``, default ``genai``; its bundled JS, the workflow-type
# context). Hence ``ui_url`` links carry ``?workflowType=machine_learning``.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
ML_VIEW = "workflowType=machine_learning"
KIND_WORDS = {"winner": "winner", "not_better": "not better", "undecided": "undecided"}
TRIAL_DIR = "trial"
EndStatus = Literal["FINISHED", "FAILED"]


def ui_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's address of an experiment (or run), in the model-training view."""
    page = f"{base.rstrip('/')}/#/experiments/{experiment_id}"
    return f"{page}/runs/{run_id}?{ML_VIEW}" if run_id else f"{page}?{ML_VIEW}"


def rounded(x: float, digits: int = 4) -> float:
    """A summary number as it is shown: ``digits`` significant digits."""
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def resolve_tracking_uri(uri: str | None, *, cwd: Path | None = None) -> str:
    """The tracking URI with a relative sqlite path made absolute (default: ./mlflow.db)."""
    uri = uri or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        return f"sqlite:///{path}"
    if uri.startswith(("http://", "https://", "sqlite:////", "databricks")):
        return uri
    raise ConfigError(f"--tracking-uri={uri!r} is not supported: use sqlite:///PATH.db "
                      "(embedded) or http://HOST:PORT (an mlflow server)")


def _flat_metrics(metrics: Mapping[str, Any], step: int, ts: int) -> list[Metric]:
    out = []
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        out.append(Metric(k, float(v), ts, step))
    return out


class SweepTracker:
    """Driver-side writer and reader of sweep runs (picklable: the client is rebuilt)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.uri = resolve_tracking_uri(tracking_uri)
        self._client: MlflowClient | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "_client": None}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            mlflow.set_tracking_uri(self.uri)
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    # -- experiments and the parent run ---------------------------------------------------
    def experiment_id(self, name: str, *, create: bool = True) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            if create and EXPERIMENT_KIND not in exp.tags:
                self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND,
                                               MODEL_TRAINING)
            return exp.experiment_id
        if not create:
            raise ConfigError(f"--experiment={name!r} does not exist in {self.uri}: use the "
                              "experiment name of a sweep (its spec's 'experiment' or 'name')")
        root = store_dir(self.uri)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        location = (root / "mlruns" / safe).as_uri() if root is not None else None
        return self.client.create_experiment(name, artifact_location=location,
                                             tags={EXPERIMENT_KIND: MODEL_TRAINING})

    def start_sweep(self, spec: SweepSpec, *, space: Mapping[str, Any], run_name: str,
                    tags: Mapping[str, str] = {}) -> str:
        exp = self.experiment_id(spec.experiment_name)
        commit = git_commit()
        run = self.client.create_run(exp, run_name=run_name, tags={
            ROLE: "sweep", "esper_ab.sweep": spec.name, "esper_ab.fidelity": spec.fidelity,
            "esper_ab.spec_hash": spec.spec_hash(), "esper_ab.git_commit": commit,
            "mlflow.source.git.commit": commit.removesuffix("+dirty"), **tags})
        rid = run.info.run_id
        self.client.log_batch(rid, params=[Param(k, str(v))
                                           for k, v in parent_params(spec).items()])
        self.client.log_dict(rid, spec.resolved(), "sweep/spec.yaml")
        self.client.log_dict(rid, dict(space), "sweep/search_space.json")
        self.client.log_dict(rid, {"packages": package_versions(), "git_commit": commit},
                             "sweep/versions.json")
        return rid

    def reopen(self, run_id: str) -> None:
        """Mark a run RUNNING again (a resumed sweep or a retried trial)."""
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, END_REASON, "")

    # -- children ---------------------------------------------------------------------
    def find_trial_run(self, parent_id: str, trial_id: str) -> str | None:
        exp = self.client.get_run(parent_id).info.experiment_id
        runs = self.client.search_runs(
            [exp], f"tags.`{PARENT}` = '{parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'")
        return runs[0].info.run_id if runs else None

    def trial_run(self, parent_id: str, *, trial_id: str, run_name: str,
                  params: Mapping[str, Any], tags: Mapping[str, str] = {},
                  number: int | None = None) -> str:
        """The child run of ``trial_id``: created once, reopened on a retry or resume; named
        ``run_name`` and the key parameters (``exponent a=0.25 thr=0.08 (t003)``)."""
        existing = self.find_trial_run(parent_id, trial_id)
        if existing is not None:
            self.reopen(existing)
            return existing
        parent = self.client.get_run(parent_id)
        siblings = self.client.search_runs([parent.info.experiment_id],
                                           f"tags.`{PARENT}` = '{parent_id}'",
                                           max_results=50_000)
        used = {s.data.tags.get("esper_ab.trial_number") for s in siblings}
        if number is None or str(number) in used:   # the lowest free number: unique, and
            number = next(i for i in range(1, len(siblings) + 2) if str(i) not in used)
        run = self.client.create_run(parent.info.experiment_id,   # t003 first: never cut
                                     run_name=f"t{number:03d} "
                                              f"{child_run_name(run_name, params)}", tags={
            PARENT: parent_id, ROLE: "trial", TRIAL_ID: trial_id,
            "esper_ab.trial_number": str(number),
            "esper_ab.sweep": parent.data.tags.get("esper_ab.sweep", ""),
            "esper_ab.fidelity": parent.data.tags.get("esper_ab.fidelity", ""), **tags})
        self.client.log_batch(run.info.run_id,
                              params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], *, step: int) -> None:
        batch = _flat_metrics(metrics, step, int(time.time() * 1000))
        for i in range(0, len(batch), 1000):   # MLflow's batch limit
            self.client.log_batch(run_id, metrics=batch[i:i + 1000])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        if tags.get("esper_ab.verdict_kind"):      # a sweep's verdict: its name says it
            self._name_by_verdict(run_id, str(tags["esper_ab.verdict_kind"]))
        if "esper_ab.winner_run_id" in tags:
            self._mark_winner(run_id, str(tags["esper_ab.winner_run_id"]),
                              str(tags.get("esper_ab.verdict_headline")
                                  or str(tags.get("esper_ab.verdict", "")).split(" | ")[0]))

    def _name_by_verdict(self, run_id: str, kind: str) -> None:
        """``smoke · undecided · 12-06 14:03``: the space, the verdict kind, the start time
        (three sweeps of one space no longer share a truncated name)."""
        run = self.client.get_run(run_id)
        if run.data.tags.get(ROLE) != "sweep":
            return
        when = time.strftime("%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
        name = f"{run.data.tags.get('esper_ab.sweep', '?')} · {KIND_WORDS.get(kind, kind)} · {when}"
        self.client.set_tag(run_id, "mlflow.runName", name)

    def _mark_winner(self, parent_id: str, winner_run: str, headline: str) -> None:
        """Tag and describe the winner's child run (``esper_ab.is_winner``), and untag a
        child an earlier stage had marked (a search winner the confirmation did not keep)."""
        exp = self.client.get_run(parent_id).info.experiment_id
        for run in self.client.search_runs(
                [exp], f"tags.`{PARENT}` = '{parent_id}' and tags.`esper_ab.is_winner` = 'true'"):
            if run.info.run_id != winner_run:
                self.client.set_tag(run.info.run_id, "esper_ab.is_winner", "false")
                self.client.set_tag(run.info.run_id, "mlflow.note.content",
                                    "An earlier stage's winner; the sweep's verdict did not "
                                    "keep it (see the parent run).")
        if winner_run:
            self.client.set_tag(winner_run, "esper_ab.is_winner", "true")
            self.client.set_tag(winner_run, "mlflow.note.content",
                                f"**The sweep's winner.** {headline}".strip()[:7900])

    def ensure_running(self, run_id: str) -> None:
        if self.run_status(run_id) != "RUNNING":
            self.reopen(run_id)

    def log_folder(self, run_id: str, folder: str, *, artifact_path: str,
                   remove: bool = False) -> None:
        """Log every file of ``folder`` as an artifact under ``artifact_path``."""
        self.client.log_artifacts(run_id, str(folder), artifact_path=artifact_path)
        if remove:
            shutil.rmtree(folder, ignore_errors=True)

    def log_trial_folder(self, run_id: str, folder: str, *, remove: bool = False) -> None:
        """Log a finished trial's folder: its per-replicate curve (``steps.json``) as metrics
        and every file as an artifact under ``trial/``."""
        path = Path(folder)
        curve = path / "steps.json"
        for point in json.loads(curve.read_text()) if curve.is_file() else []:
            self.log_metrics(run_id, point["metrics"], step=int(point["step"]))
        self.client.log_artifacts(run_id, str(path), artifact_path=TRIAL_DIR)
        if remove:
            shutil.rmtree(path, ignore_errors=True)

    def end_run(self, run_id: str, status: EndStatus, reason: str) -> None:
        """Record why, and end the run."""
        self.client.set_tag(run_id, END_REASON, " ".join(reason.split())[:4000])
        self.client.set_terminated(run_id, status=status)

    def close_orphans(self, parent_id: str, reason: str) -> list[str]:
        """End every child of ``parent_id`` still RUNNING (or SCHEDULED) as FAILED."""
        exp = self.client.get_run(parent_id).info.experiment_id
        runs = self.client.search_runs([exp], f"tags.`{PARENT}` = '{parent_id}'")
        closed = []
        for r in runs:
            if r.info.status in ("RUNNING", "SCHEDULED"):
                self.end_run(r.info.run_id, "FAILED", reason)
                closed.append(r.info.run_id)
        return closed

    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    # -- reading a sweep back ------------------------------------------------------------
    def find_sweep_run(self, experiment: str, sweep_run_id: str | None = None) -> str:
        exp = self.experiment_id(experiment, create=False)
        if sweep_run_id is not None:
            try:
                run = self.client.get_run(sweep_run_id)
            except mlflow.exceptions.MlflowException:
                raise ConfigError(f"--sweep-run={sweep_run_id!r} is not a run in {self.uri}: "
                                  "copy a parent run id from the MLflow UI") from None
            if run.info.experiment_id != exp or run.data.tags.get(ROLE) != "sweep":
                raise ConfigError(f"--sweep-run={sweep_run_id!r} is not a sweep run of "
                                  f"experiment {experiment!r}: give one of its parent runs")
            return sweep_run_id
        runs = self.client.search_runs([exp], f"tags.`{ROLE}` = 'sweep'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            raise ConfigError(f"experiment {experiment!r} holds no sweep run: run "
                              "'esper-ab sweep SPACE.yaml' first")
        return runs[0].info.run_id

    def read_json(self, run_id: str, path: str) -> Any | None:
        """A JSON (or YAML) artifact of a run, parsed; None when it is missing."""
        with tempfile.TemporaryDirectory() as tmp:
            f = self._download(run_id, path, tmp)
            if f is None or not f.is_file():
                return None
            text = f.read_text()
        return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def run_name(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.run_name or ""

    def trial_by_number(self, parent_id: str, number: int) -> str | None:
        exp = self.client.get_run(parent_id).info.experiment_id
        runs = self.client.search_runs(
            [exp], f"tags.`{PARENT}` = '{parent_id}' and "
                   f"tags.`esper_ab.trial_number` = '{number}'")
        return runs[0].info.run_id if runs else None

    def _download(self, run_id: str, path: str, dst: str) -> Path | None:
        try:
            return Path(self.client.download_artifacts(run_id, path, dst))
        except (OSError, mlflow.exceptions.MlflowException):
            return None

    def load_sweep(self, experiment: str, sweep_run_id: str | None = None) -> SweepRecord:
        """Everything the report and export need, read from MLflow alone."""
        rid = self.find_sweep_run(experiment, sweep_run_id)
        parent = self.client.get_run(rid)
        with tempfile.TemporaryDirectory() as tmp:
            spec_file = self._download(rid, "sweep/spec.yaml", tmp)
            versions_file = self._download(rid, "sweep/versions.json", tmp)
            if spec_file is None:
                raise ConfigError(f"sweep run {rid} has no sweep/spec.yaml artifact: it was not "
                                  "written by esper-ab sweep; pick another --sweep-run")
            spec = parse_sweep_spec(yaml.safe_load(spec_file.read_text()),
                                    source=f"run {rid} spec")
            versions = json.loads(versions_file.read_text()) if versions_file else {}
            confirmed_file = (self._download(rid, "confirm/verdict.txt", tmp)
                              if parent.data.tags.get("esper_ab.confirmed_by") else None)
            confirmed = confirmed_file.read_text() if confirmed_file else ""
            runs = self.client.search_runs([parent.info.experiment_id],   # trials only (not
                                           f"tags.`{PARENT}` = '{rid}' and "  # confirmations)
                                           f"tags.`{ROLE}` = 'trial'")
            trials = [self._trial_record(r, Path(tmp) / r.info.run_id) for r in runs]
        trials.sort(key=lambda t: t.number)
        return SweepRecord(experiment=experiment, sweep_run_id=rid, spec=spec,
                           trials=tuple(trials), versions=versions.get("packages", {}),
                           git_commit=versions.get("git_commit",
                                                   parent.data.tags.get("esper_ab.git_commit",
                                                                        "unknown")),
                           confirmed=confirmed,
                           confirmed_kind=parent.data.tags.get("esper_ab.verdict_kind", "")
                           if confirmed else "")

    def _trial_record(self, run: Any, tmp: Path) -> TrialRecord:
        tmp.mkdir(parents=True, exist_ok=True)
        rid = run.info.run_id
        decisions = gate = None
        folder = self._download(rid, TRIAL_DIR, str(tmp))
        if folder is not None and (folder / "decisions.csv").is_file():
            decisions = as_reference(pd.read_csv(folder / "decisions.csv"))
        if folder is not None and (folder / "gate_config.json").is_file():
            gate = GateConfig.from_dict(json.loads((folder / "gate_config.json").read_text()))
        tags = run.data.tags
        metrics = {k: (math.nan if v is None else float(v)) for k, v in run.data.metrics.items()}
        return TrialRecord(
            trial_id=tags.get(TRIAL_ID, rid), run_id=rid,
            number=int(tags.get("esper_ab.trial_number", 0)),
            status=RunStatus.to_string(RunStatus.from_string(run.info.status)),
            stopped_early=tags.get("esper_ab.stopped_early") == "true",
            params=dict(run.data.params), metrics=metrics, gate_config=gate,
            decisions=decisions, reason=tags.get(END_REASON, ""))

    # -- the sweep summary -----------------------------------------------------------------
    def log_table(self, run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
        """An MLflow table (the UI's table view: numbers as shown, 4 significant digits),
        replaced when logged again (not appended)."""
        frame = frame.apply(lambda c: c.map(rounded) if c.dtype.kind == "f" else c)
        folder, name = posixpath.split(artifact_file)
        if not any(f.path == artifact_file for f in self.client.list_artifacts(run_id, folder)):
            self.client.log_table(run_id, frame, artifact_file)
            return
        with tempfile.TemporaryDirectory() as tmp:
            frame.to_json(Path(tmp) / name, orient="split", index=False, date_format="iso")
            self.client.log_artifact(run_id, str(Path(tmp) / name), artifact_path=folder or None)

    def log_report(self, parent_id: str, html: str) -> None:
        """``report.html`` on the parent run, replaced."""
        self.client.log_text(parent_id, html, "report.html")

    def log_sweep_summary(self, parent_id: str, result: SweepAnalysis, *, html: str,
                          figures: Mapping[str, Any]) -> None:
        """The parent run as a result: report, plots, analysis, the reference's and the
        winner's (or best) metrics, per-blueprint tables, the verdict as its note."""
        c = self.client
        self.log_report(parent_id, html)
        with tempfile.TemporaryDirectory() as tmp:
            for name, fig in figures.items():
                (Path(tmp) / f"{name}.png").write_bytes(png_bytes(fig))
            c.log_artifacts(parent_id, tmp, artifact_path="plots")
        c.log_text(parent_id, result.leaderboard.to_csv(index=False), "sweep/leaderboard.csv")
        if result.analysis is not None:
            c.log_dict(parent_id, result.analysis.to_dict(), "sweep/analysis.json")
            c.log_text(parent_id, result.analysis_text(), "sweep/analysis.txt")
            c.log_text(parent_id, result.decisions.to_csv(index=False), "sweep/decisions.csv")
        metrics = parent_metrics(result)
        if result.record.spec.confirm_fidelity == "replay":   # the confirmation's come plain
            metrics = {f"search.{k}": v for k, v in metrics.items()}
        self.log_result(parent_id, metrics=metrics, tables=parent_tables(result),
                        tags=parent_tags(result))

    def log_result(self, run_id: str, *, metrics: Mapping[str, float],
                   tables: Mapping[str, pd.DataFrame], tags: Mapping[str, str]) -> None:
        """A run's result: metrics (step 0), MLflow tables, tags (its note among them)."""
        for path, frame in tables.items():
            self.log_table(run_id, frame, path)
        self.log_metrics(run_id, {k: rounded(float(v)) for k, v in metrics.items()}, step=0)
        self.set_tags(run_id, tags)
