"""Tracking, summary, report and export on a real sqlite MLflow store -- no Ray: the trials
are run in-process and logged exactly as the Tune callback logs them."""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from sweep_helpers import space

import esper_ab
from esper_ab.cli import main
from esper_ab.commands.export import VERDICT_WORDS, NoWinner, export_winner, refusal
from esper_ab.errors import ConfigError
from esper_ab.export import load_gate, load_winner
from esper_ab.gate import Gate, StepMeasurement
from esper_ab.gradients import GradStats
from esper_ab.replay import ReplayEvidence, synthetic_traces
from esper_ab.study.space import space_summary
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.study.summary import format_summary, summarize_sweep
from esper_ab.tracking import BackgroundWriter, SweepTracker
from esper_ab.trial import BASELINE_LABEL, TrialParams, run_trial

# pass_rate_gap: the equalized-odds gap needs >= 10 valuable and non-valuable seeds per
# blueprint, more than 8 replicates x 2 seeds give
SPEC = parse_sweep_spec(space(
    name="tracked", replicates=8, description="which gate is fair to <every> blueprint",
    strategies=[{"name": "first_order_value"}, {"name": "exponent"},
                {"name": "per_blueprint_threshold"}],
    selection={"top_k": 3, "max_gap": 1.0, "fairness_metric": "pass_rate_gap"}))
TRIALS = [TrialParams("first_order_value", {"mode": "raw"}, threshold=0.0),
          TrialParams("exponent", {"a": 0.3}, threshold=0.02),
          TrialParams("per_blueprint_threshold", {"quantile": 0.5}, threshold=1.0)]


def log_trial(writer: BackgroundWriter, parent: str, trial_id: str, params: TrialParams,
              evidence) -> str:
    """What the Tune callback does for one trial, in the same order."""
    res = run_trial(params, evidence, baseline=SPEC.baseline, n_boot=50, n_perm=100)
    folder = Path(tempfile.mkdtemp())
    res.decisions.to_csv(folder / "decisions.csv", index=False)
    (folder / "gate_config.json").write_text(json.dumps(res.gate_config.to_dict()))
    (folder / "steps.json").write_text(json.dumps([{"step": 1, "metrics": {"g2.tpr": 0.5}}]))
    rid = writer.submit("trial_run", parent, trial_id=trial_id, run_name=params.strategy,
                        params=params.as_params())
    writer.submit("log_metrics", rid, {**res.metrics, "replicates_evaluated": 8}, step=8)
    writer.submit("log_trial_folder", rid, str(folder), remove=True)
    writer.submit("end_run", rid, "FINISHED", "completed all 8 replicates")
    return rid.result()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    tracker = SweepTracker(f"sqlite:///{root}/mlflow.db")
    parent = tracker.start_sweep(SPEC, space=space_summary(SPEC), run_name="tracked-1")
    evidence = ReplayEvidence(synthetic_traces(replicates=range(8), epochs=12,
                                               steps_per_epoch=2, seeds_per_blueprint=2))
    writer = BackgroundWriter(tracker)
    ids = [log_trial(writer, parent, f"trial{i}", p, evidence) for i, p in enumerate(TRIALS)]
    writer.drain()
    result = summarize_sweep(tracker, "tracked", parent, n_boot=200, n_perm=500, log=True)
    tracker.end_run(parent, "FINISHED", result.reason)
    return tracker, parent, ids, result, root


def test_parent_and_children_are_nested_and_ended(store):
    tracker, parent, ids, _, _ = store
    df = mlflow.search_runs(experiment_names=["tracked"])
    assert set(df["status"]) == {"FINISHED"}
    kids = df[df["tags.mlflow.parentRunId"] == parent]
    assert sorted(kids["run_id"]) == sorted(ids)
    assert sorted(kids["tags.esper_ab.trial_number"].astype(int)) == [1, 2, 3]
    assert {"metrics.g2.pass_rate.norm", "metrics.g2.tpr.attention", "metrics.g2.fpr.bottleneck",
            "metrics.g2.equalized_odds_gap",
            "metrics.g2.pvalue_adjusted.balanced_accuracy_vs_baseline"} <= set(df.columns)
    assert df[df.run_id == parent]["tags.esper_ab.end_reason"].iloc[0]
    curve = tracker.client.get_metric_history(ids[0], "g2.tpr")
    assert sorted(m.step for m in curve) == [1, 8]


def test_a_retried_trial_reuses_its_run(store):
    tracker, parent, ids, _, _ = store
    again = tracker.trial_run(parent, trial_id="trial0", run_name="x", params={})
    assert again == ids[0] and tracker.run_status(again) == "RUNNING"
    tracker.end_run(again, "FINISHED", "completed all 8 replicates")


def test_orphans_are_closed_with_a_reason(store):
    tracker, parent, _, _, _ = store
    rid = tracker.trial_run(parent, trial_id="orphan", run_name="raw", params={})
    assert tracker.close_orphans(parent, "interrupted: resume with --resume") == [rid]
    run = tracker.client.get_run(rid)
    assert run.info.status == "FAILED"
    assert run.data.tags["esper_ab.end_reason"].startswith("interrupted")
    assert tracker.close_orphans(parent, "again") == []


def test_summary_has_a_significant_winner_and_a_self_contained_report(store):
    tracker, parent, _, result, _ = store
    assert result.winner is not None and result.winner.label == "t001-first_order_value"
    assert result.analysis.verdict.winner == "t001-first_order_value"
    html = tracker.read_json(parent, "sweep/analysis.json")
    assert html["verdict"]["winner"] == "t001-first_order_value"
    arts = {a.path for a in tracker.client.list_artifacts(parent)}
    assert {"report.html", "plots", "sweep"} <= arts
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tracker.client.download_artifacts(parent, "report.html", tmp)).read_text()
    assert page.count("data:image/png;base64,") == 3      # one objective: no Pareto front
    assert "src='http" not in page and 'src="http' not in page
    text = format_summary(result)
    assert "Verdict:" in text and "t001-first_order_value" in text


def _rates(rows) -> dict[str, float]:
    """Pass rate, TPR, FPR of a decisions table by hand (NaN without seeds of a class)."""
    valuable = rows["valuable"].astype(bool)
    passed = rows["passed"].astype(bool)
    return {"pass_rate": passed.mean(),
            "tpr": passed[valuable].mean() if valuable.any() else math.nan,
            "fpr": passed[~valuable].mean() if (~valuable).any() else math.nan}


def test_the_parent_run_reads_like_a_result(store, tmp_path):
    tracker, parent, ids, result, _ = store
    client = MlflowClient(tracker.uri)
    run = client.get_run(parent)
    metrics, tags = run.data.metrics, run.data.tags
    decisions = pd.read_csv(client.download_artifacts(ids[0], "trial/decisions.csv",
                                                      str(tmp_path)))
    for label, arm in ((BASELINE_LABEL, "baseline"), ("candidate", "winner")):
        rows = decisions[decisions["strategy"] == label]
        pooled = _rates(rows)
        # summary metrics are rounded to 4 significant digits, as shown
        assert metrics[f"{arm}.pass_rate"] == pytest.approx(pooled["pass_rate"], rel=5e-4)
        assert metrics[f"{arm}.balanced_accuracy"] == pytest.approx(
            (pooled["tpr"] + 1 - pooled["fpr"]) / 2, rel=5e-4)
        per_bp = {bp: _rates(g) for bp, g in rows.groupby("blueprint")}
        assert metrics[f"{arm}.pass_rate_gap"] == pytest.approx(
            max(r["pass_rate"] for r in per_bp.values())
            - min(r["pass_rate"] for r in per_bp.values()), rel=5e-4)
        for bp, r in per_bp.items():
            for m, v in r.items():
                key = f"{arm}.{bp}.{m}"
                assert (key not in metrics) if math.isnan(v) else \
                    metrics[key] == pytest.approx(v, rel=5e-4), key
    assert metrics["winner.balanced_accuracy"] > metrics["baseline.balanced_accuracy"]
    assert metrics["winner.pvalue_adjusted_vs_baseline"] < 0.05
    assert not any(k.startswith("best.") for k in metrics)
    # the description: the verdict, its kind first, and the space's description
    note = tags["mlflow.note.content"]
    assert note.startswith("**Verdict: Winner.**")
    assert "t001-first_order_value" in note.splitlines()[0]
    assert SPEC.description in note and tags["esper_ab.verdict_kind"] == "winner"
    # the tables: in MLflow's table view, read back by MLflow
    logged = {t["path"]: t["type"] for t in json.loads(tags["mlflow.loggedArtifacts"])}
    assert {logged[p] for p in ("tables/per_blueprint.json", "tables/trials.json",
                                "tables/per_blueprint_selected.json")} == {"table"}
    exp_id = run.info.experiment_id
    table = client.load_table(exp_id, "tables/per_blueprint.json", run_ids=[parent])
    assert set(table["arm"]) == {"baseline", "winner"}
    by = table.set_index(["arm", "blueprint"])
    for bp in decisions["blueprint"].unique():
        assert by.loc[("winner", bp), "pass_rate"] == pytest.approx(
            metrics[f"winner.{bp}.pass_rate"], rel=5e-4)
    trials = client.load_table(exp_id, "tables/trials.json", run_ids=[parent])
    assert list(trials["balanced_accuracy"]) == sorted(trials["balanced_accuracy"],
                                                        reverse=True)
    # the experiment opens in the model-training view; children say what they ran
    exp = client.get_experiment(exp_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    names = {client.get_run(i).info.run_name for i in ids}
    assert names == {"t001 first_order_value mode=raw thr=0",      # the number first: never cut
                     "t002 exponent a=0.3 thr=0.02",
                     "t003 per_blueprint_threshold quantile=0.5 thr=1"}
    # the parent is named by space, verdict kind and start time; the winner's child is marked
    assert re.fullmatch(rf"{SPEC.name} · winner · \d\d-\d\d \d\d:\d\d", run.info.run_name)
    marked = {i: client.get_run(i).data.tags for i in ids}
    winner_id = tags["esper_ab.winner_run_id"]
    assert {i for i, t in marked.items() if t.get("esper_ab.is_winner") == "true"} == {winner_id}
    assert marked[winner_id]["mlflow.note.content"] == \
        f"**The sweep's winner.** {tags['esper_ab.verdict_headline']}"
    # every metric the parent shows is rounded to 4 significant digits
    assert all(v == float(f"{v:.4g}") for v in metrics.values())


def test_a_table_logged_again_is_replaced(store):
    tracker, parent, _, _, _ = store
    for n in (3, 2):
        tracker.log_table(parent, pd.DataFrame({"a": range(n)}), "tables/again.json")
    exp_id = tracker.client.get_run(parent).info.experiment_id
    again = tracker.client.load_table(exp_id, "tables/again.json", run_ids=[parent])
    assert list(again["a"]) == [0, 1]


def test_export_writes_a_loadable_gate(store, tmp_path):
    tracker, parent, ids, _, _ = store
    path, doc = export_winner(tracker, "tracked", None, str(tmp_path / "winner.yaml"))
    assert doc.evidence.trial_run_id == ids[0] and not doc.evidence.forced
    assert doc.evidence.pvalue_adjusted_vs_baseline < 0.05
    assert doc.versions["mlflow"] == mlflow.__version__
    gate = esper_ab.load_gate(path)
    assert isinstance(gate, Gate) and gate.config.strategy == "first_order_value"
    # the loaded gate decides like the exported config on the same measurements
    host = GradStats(sum_sq=4.0, sum_abs=150.0, numel=6400, n_tensors=12, n_with_grad=12)
    seed = GradStats(sum_sq=1e-3, sum_abs=1.0, numel=33, n_tensors=3, n_with_grad=3)
    epochs = [[StepMeasurement(seed, host, first_order=0.05)] * 2] * 12
    ref = Gate(doc.gate_config()).decide(epochs, blueprint="norm")
    got = gate.decide(epochs, blueprint="norm")
    assert (got.passed, got.epoch) == (ref.passed, ref.epoch) == (True, 10)


def test_export_of_a_calibrated_trial_keeps_thresholds_and_hash(store, tmp_path):
    tracker, parent, ids, result, _ = store
    analysis = tracker.read_json(parent, "sweep/analysis.json")
    from esper_ab.export import build_winner, write_winner
    from esper_ab.gate import GateConfig
    gate = GateConfig.from_dict(tracker.read_json(ids[2], "trial/gate_config.json"))
    doc = build_winner(gate=gate, analysis=analysis, label="t003-per_blueprint_threshold",
                       experiment="tracked", sweep_run_id=parent, trial_run_id=ids[2],
                       spec=SPEC, versions={}, git_commit="x", forced=True)
    path = write_winner(doc, tmp_path / "cal.yaml")
    loaded = load_winner(path)
    assert loaded.per_blueprint_thresholds == gate.calibration["thresholds"]   # multiplier 1
    assert load_gate(path).strategy.is_fitted
    data = yaml.safe_load(path.read_text())
    data["gate"]["calibration"]["thresholds"]["norm"] *= 2                   # tampered
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="calibration_sha256"):
        load_gate(path)


def _small_sweep(tmp_path, name: str):
    """A fresh store with one open sweep run on 2 synthetic replicates (one seed each)."""
    tracker = SweepTracker(f"sqlite:///{tmp_path}/m.db")
    spec = parse_sweep_spec(space(name=name, replicates=2))
    parent = tracker.start_sweep(spec, space=space_summary(spec), run_name=f"{name}-1")
    ev = ReplayEvidence(synthetic_traces(replicates=range(2), epochs=12, steps_per_epoch=2,
                                         seeds_per_blueprint=1))
    return tracker, parent, ev, BackgroundWriter(tracker)


@pytest.fixture(scope="module")
def nowin(tmp_path_factory):
    """A summarized small sweep of one trial that beats nothing: built once, only read (export
    writes no tag) by the two tests of the refusal."""
    tracker, parent, ev, writer = _small_sweep(tmp_path_factory.mktemp("nowin"), "nowin")
    log_trial(writer, parent, "only", TrialParams("exponent", {"a": 0.5}, threshold=0.1), ev)
    writer.drain()
    res = summarize_sweep(tracker, "nowin", parent, n_boot=50, n_perm=50, log=True)
    return tracker, parent, res


def test_export_refuses_without_a_winner_unless_forced(nowin, tmp_path):
    tracker, parent, res = nowin
    run = tracker.client.get_run(parent)
    kind = run.data.tags["esper_ab.verdict_kind"]
    assert res.winner is None and kind in ("not_better", "undecided")
    assert run.data.tags["mlflow.note.content"].startswith("**Verdict: ")
    assert "Winner" not in run.data.tags["mlflow.note.content"].splitlines()[0]
    assert "best.balanced_accuracy" in run.data.metrics
    assert not any(k.startswith("winner.") for k in run.data.metrics)
    with pytest.raises(NoWinner, match="--force"):
        export_winner(tracker, "nowin", parent, str(tmp_path / "w.yaml"))
    path, doc = export_winner(tracker, "nowin", parent, str(tmp_path / "w.yaml"), force=True)
    assert doc.evidence.forced and load_gate(path).config.strategy == "exponent"
    uri = tracker.uri
    assert main(["export", "--experiment", "nowin", "--tracking-uri", uri,
                 "--out", str(tmp_path / "x.yaml")]) == 2


def test_export_refusal_states_the_verdict_it_read_and_the_run(nowin, tmp_path, capsys):
    """The refusal names the verdict kind it read (the tag the summary logged), the sweep run
    by id and name, and comes in short lines; an undecided verdict is never told as 'no
    strategy beats the baseline'."""
    tracker, parent, _ = nowin
    kind = tracker.run_tags(parent)["esper_ab.verdict_kind"]
    capsys.readouterr()
    assert main(["export", "--experiment", "nowin", "--tracking-uri", tracker.uri,
                 "--out", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    lines = err.rstrip("\n").splitlines()
    lines = lines[next(i for i, x in enumerate(lines) if x.startswith("esper-ab: error:")):]
    assert all(len(line) <= 120 for line in lines), lines
    assert lines[0].endswith(VERDICT_WORDS[kind])
    name = tracker.run_name(parent)          # renamed by the verdict: 'nowin · <kind> · ...'
    assert name.startswith("nowin · ") and parent in lines[1] and name in lines[1]
    assert "'nowin'" in lines[1]
    assert "--force" in lines[-1] and not (tmp_path / "x.yaml").exists()


@pytest.mark.parametrize("kind", ["undecided", "not_better"])
def test_export_refusal_words_follow_the_verdict_kind(kind):
    verdict = {"winner": None, "kind": kind, "headline": "Verdict: " + "x " * 200,
               "reason": "r" * 1650}
    text = refusal(run="abc", run_name="smoke-1", experiment="smoke", verdict=verdict,
                   confirmed=True)
    first = text.splitlines()[0]
    assert "the confirmed verdict is" in first and "sweep run abc (smoke-1" in text
    assert ("no candidate beats the baseline" in text) == (kind == "not_better")
    assert ("undecided" in first) == (kind == "undecided")
    assert max(map(len, text.splitlines())) <= 120 and len(text) < 800


def test_forced_export_never_takes_a_degenerate_gate(tmp_path):
    """--force exports the best trial that can be shipped: a gate that admits no seed has
    the best balanced accuracy here (0.5 against 0.46) but is passed over; with only it,
    nothing is exported and no file is written."""
    tracker, parent, ev, writer = _small_sweep(tmp_path, "degen")
    log_trial(writer, parent, "none", TrialParams("exponent", {"a": 0.5}, threshold=10.0), ev)
    writer.drain()
    summarize_sweep(tracker, "degen", parent, n_boot=50, n_perm=50, log=True)
    with pytest.raises(NoWinner, match="degenerate"):
        export_winner(tracker, "degen", parent, str(tmp_path / "w.yaml"), force=True)
    assert not (tmp_path / "w.yaml").exists()

    log_trial(writer, parent, "some", TrialParams("exponent", {"a": 0.5}, threshold=0.1), ev)
    writer.drain()
    res = summarize_sweep(tracker, "degen", parent, n_boot=50, n_perm=50, log=True)
    cands = {c["strategy"]: c for c in res.analysis.verdict.to_dict()["candidates"]}
    (degenerate,) = [k for k, c in cands.items() if c["degenerate"]]
    (usable,) = [k for k, c in cands.items() if not c["degenerate"]]
    assert cands[degenerate]["objective_value"] > cands[usable]["objective_value"]
    path, doc = export_winner(tracker, "degen", parent, str(tmp_path / "w.yaml"), force=True)
    assert doc.evidence.trial == usable and load_gate(path).config.threshold == 0.1


def test_report_command_rebuilds_from_mlflow(store, tmp_path, capsys):
    tracker, parent, _, result, _ = store
    rc = main(["report", "--experiment", "tracked", "--tracking-uri", tracker.uri,
               "--out", str(tmp_path / "rep"), "--n-boot", "200", "--n-perm", "500"])
    assert rc == 0
    files = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"report.html", "pass_rate_by_blueprint.png", "statistic_by_blueprint.png",
            "statistic_vs_value.png", "analysis.json", "leaderboard.csv"} <= files
    assert "pareto_front.png" not in files           # one objective: a ranking, not a front
    again = json.loads((tmp_path / "rep" / "analysis.json").read_text())
    assert again["verdict"]["winner"] == result.analysis.verdict.winner
    # the folder reproduces its own verdict with the command its analysis.txt ends with
    rep = tmp_path / "rep"
    command = (rep / "analysis.txt").read_text().strip().splitlines()[-1]
    assert command.endswith("esper-ab analyze decisions.csv --settings-from analysis.json")
    assert main(["analyze", str(rep / "decisions.csv"), "--settings-from",
                 str(rep / "analysis.json"), "--json", str(tmp_path / "re.json")]) == 0
    redone = json.loads((tmp_path / "re.json").read_text())
    assert redone["verdict"] == again["verdict"] and redone["settings"] == again["settings"]
    assert redone["settings"]["n_perm"] == 500                # the report's, not the default
    assert main(["report", "--experiment", "nope", "--tracking-uri", tracker.uri,
                 "--out", str(tmp_path / "r2")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_nan_objectives_leave_no_winner(tmp_path):
    tracker = SweepTracker(f"sqlite:///{tmp_path}/n.db")
    spec = parse_sweep_spec(space(name="nan", replicates=2, objectives=[{"metric": "tpr"}]))
    parent = tracker.start_sweep(spec, space=space_summary(spec), run_name="nan-1")
    ev = ReplayEvidence(synthetic_traces(replicates=range(2), epochs=12, steps_per_epoch=2,
                                         seeds_per_blueprint=1, margin_pp=1e9))
    writer = BackgroundWriter(tracker)
    log_trial(writer, parent, "t", TrialParams("exponent", {"a": 0.5}, threshold=0.1), ev)
    writer.drain()
    res = summarize_sweep(tracker, "nan", parent, n_boot=20, n_perm=20)
    assert res.winner is None and "finite tpr" in res.reason
    assert math.isnan(res.leaderboard["tpr"].iloc[0])


def test_the_note_labels_raw_and_debiased_gaps(store):
    """The note's table shows the fairness gap twice, each labelled, with the values the
    parent's metrics hold (raw: the disparity; debiased: what the selection rule checks)."""
    tracker, parent, _, _, _ = store
    run = MlflowClient(tracker.uri).get_run(parent)
    note, metrics = run.data.tags["mlflow.note.content"], run.data.metrics
    fair = SPEC.selection.fairness_metric
    rows = {line.split(" | ")[0].strip("| "): line for line in note.splitlines()
            if line.startswith("| ")}
    raw, debiased = rows[f"{fair} (raw)"], rows[f"{fair} (debiased: what the rule checks)"]
    assert f"{metrics[f'winner.{fair}']:.4g}" in raw
    if f"winner.{fair}_debiased" in metrics:
        assert f"{metrics[f'winner.{fair}_debiased']:.4g}" in debiased
    assert fair not in rows                                      # never unlabelled


def test_the_console_summary_is_aligned_rounded_and_whole(store, tmp_path):
    """The per-blueprint table: one aligned row per blueprint, numbers rounded to 3 places and
    equal to the rates computed by hand from the decisions; every trial label whole on one
    line, no line wider than 100 columns, nothing cut mid-word ('...')."""
    tracker, parent, ids, result, _ = store
    text = format_summary(result)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100 and "..." not in text
    d = result.winner.decisions
    head = next(i for i, x in enumerate(lines) if x.startswith("blueprint"))
    rows = {}
    for line in lines[head + 2:]:
        if not line.strip():
            break
        rows[line.split()[0]] = line.split()
    assert set(rows) == set(d["blueprint"])
    starts = {line.index(line.split()[3]) + len(line.split()[3]) for line in
              (ln for ln in lines[head + 2:head + 2 + len(rows)])}
    assert len(starts) == 1                            # 'pass base' right-aligned
    for bp, cells in rows.items():
        base = _rates(d[(d["strategy"] == BASELINE_LABEL) & (d["blueprint"] == bp)])
        win = _rates(d[(d["strategy"] == "candidate") & (d["blueprint"] == bp)])
        assert cells[3] == f"{base['pass_rate']:.3f}" and cells[4] == f"{win['pass_rate']:.3f}"
        assert cells[6] == ("-" if math.isnan(win["tpr"]) else f"{win['tpr']:.3f}")
    for label in result.leaderboard["trial"]:
        assert any(line.split() and line.split()[0] == label for line in lines), label
