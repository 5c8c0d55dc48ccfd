"""Search and confirmation on disjoint replicates, in every fidelity: the schema states the
split, the search never sees a confirmation replicate, the top-k and the baseline are judged
on the held-out replicates with Holm over those k only, and every strategy gets its share."""

from __future__ import annotations

import copy
import html
import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from statsmodels.stats.multitest import multipletests

from esper_ab.cli import main
from esper_ab.errors import ConfigError, DataError
from esper_ab.fidelity.replay_sweep import ReplaySweepOptions, run_replay_sweep
from esper_ab.gate import PRESETS, GateConfig
from esper_ab.replay import ReplayEvidence, synthetic_traces
from esper_ab.study.confirmation import format_confirmation
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.trial import BASELINE_LABEL

SYNTH = {"epochs": 12, "steps_per_epoch": 2, "seeds_per_blueprint": 2, "seed": 3}
SPACE = {
    "name": "holdout",
    "workloads": [{"name": "synthetic-cnn"}],
    "replicates": {"search": [0, 1, 2, 3], "confirm": [4, 5, 6, 7, 8]},
    "traces": {"source": "synthetic", "synthetic": SYNTH},
    "strategies": [{"name": "baseline"},
                   {"name": "exponent", "params": {"a": {"low": 0.0, "high": 1.0}}},
                   {"name": "mean_abs"},
                   {"name": "per_blueprint_threshold",
                    "params": {"quantile": {"low": 0.2, "high": 0.8}}}],
    "sampler": {"kind": "tpe", "seed": 0, "n_startup_trials": 8},
    "num_samples": 40,
    "selection": {"top_k": 3, "max_gap": 1.0},
    "confirm": {"top_k": 3},
}


def space(**overrides):
    out = copy.deepcopy(SPACE)
    out.update(copy.deepcopy(overrides))
    return out


class Spy:
    """Replay evidence that records every replicate anything asked it about."""

    def __init__(self, inner):
        self.inner, self.seen = inner, set()

    @property
    def replicates(self):
        return self.inner.replicates

    @property
    def min_replicates_for_calibration(self):
        return self.inner.min_replicates_for_calibration

    def decisions(self, gate, *, label, replicates):
        self.seen |= {int(r) for r in replicates}
        return self.inner.decisions(gate, label=label, replicates=replicates)

    def fit_calibration(self, gate, *, replicates):
        self.seen |= {int(r) for r in replicates}
        return self.inner.fit_calibration(gate, replicates=replicates)


def evidence(reps):
    return ReplayEvidence(synthetic_traces(replicates=reps, **SYNTH), folds=2)


# -- the schema --------------------------------------------------------------------------
def test_the_split_forms_and_their_checks():
    spec = parse_sweep_spec(space(replicates={"search": 4, "confirm": 3}))
    assert spec.replicates == [0, 1, 2, 3] and spec.confirm_replicates == [4, 5, 6]
    assert spec.confirm_fidelity == "replay" and spec.all_replicates == list(range(7))
    same = parse_sweep_spec(space(replicates=[0, 1, 2, 3], confirm={"replicates": [4, 5, 6]}))
    assert same.confirm_replicates == spec.confirm_replicates
    assert parse_sweep_spec(spec.resolved()).confirm_replicates == [4, 5, 6]   # round trip
    plain = parse_sweep_spec(space(replicates=3))
    assert plain.confirm_fidelity is None and "no confirmation replicates" in plain.split_text()
    multi = parse_sweep_spec(space(fidelity="multi", traces={"source": "record"},
                                   replicates={"search": 2, "confirm": 2}))
    assert multi.confirm_fidelity == "closed_loop"
    for bad, needle in [({"replicates": {"search": 3, "confirm": [2, 3]}}, "both searched"),
                        ({"replicates": {"search": 3, "confrm": 2}}, "confrm"),
                        ({"replicates": {"search": 3, "confirm": 2},
                          "confirm": {"replicates": [9, 10]}}, "given"),
                        ({"fidelity": "multi", "replicates": 4, "traces": {"source": "record"}},
                         "held-out")]:
        with pytest.raises(ConfigError, match=needle):
            parse_sweep_spec(space(**bad))


def test_validate_prints_the_split(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(space()))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "search on 4 replicate(s) [0..3]" in out
    assert "confirm the top 3 + baseline on 5 held-out replicate(s) [4..8] by replay" in out


def test_search_is_stratified_by_strategy(tmp_path):
    from esper_ab.study.replay_search import search_replay

    spec = parse_sweep_spec(space(num_samples=43))
    s = search_replay(spec, evidence([0, 1, 2, 3]), folder=tmp_path)
    counts = s.trials["strategy"].value_counts()
    assert set(counts.index) == {e.name for e in spec.strategies}
    assert counts.max() - counts.min() <= 1                    # 43 = 11 + 11 + 11 + 10
    free = search_replay(parse_sweep_spec(space(num_samples=43, name="free",
                                                sampler={"kind": "random", "seed": 0,
                                                         "stratify": False})),
                         evidence([0, 1, 2, 3]), folder=tmp_path / "free")
    assert free.trials["strategy"].value_counts().max() - \
        free.trials["strategy"].value_counts().min() > 1        # unstratified: uneven


# -- replay fidelity (in process) --------------------------------------------------------
@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    """The search on a spy of its replicates, its top-k fitted as a sweep fits them, then
    the confirmation by replay on a spy of the held-out replicates (no MLflow)."""
    from esper_ab.strategies import strategy_class
    from esper_ab.study.confirmation import confirm_by_replay
    from esper_ab.study.replay_search import rank_trials, search_replay

    spec = parse_sweep_spec(space())
    search, held = Spy(evidence(spec.replicates)), Spy(evidence(spec.confirm_replicates))
    s = search_replay(spec, search, folder=tmp_path_factory.mktemp("holdout"))
    top = rank_trials(spec, s.trials).head(spec.confirm.top_k)
    gates = {}
    for number in top["number"].astype(int):
        gate = s.params[number].gate_config()
        if strategy_class(gate.strategy).needs_calibration:
            gate = search.fit_calibration(gate, replicates=spec.replicates)
        gates[f"t{number:03d}-{s.params[number].strategy}"] = gate
    conf = confirm_by_replay(spec, held, gates, n_boot=50, n_perm=50)
    return spec, s, gates, conf, search, held


def test_replay_search_and_confirmation_are_disjoint(confirmed):
    spec, s, gates, conf, search, held = confirmed
    assert search.seen == set(spec.replicates)                 # the search: its own only
    assert held.seen == set(spec.confirm_replicates)           # the confirmation: held out
    assert conf.fidelity == "replay" and s.n_replicates == len(spec.replicates)
    assert set(conf.replicates) == set(spec.confirm_replicates)
    assert set(conf.decisions["replicate"]) == set(spec.confirm_replicates)
    assert not set(conf.replicates) & set(conf.search_replicates)


def test_holm_runs_over_the_k_confirmed_candidates_only(confirmed):
    spec, _, gates, conf, *_ = confirmed
    assert list(conf.candidates) == list(gates) and len(gates) == spec.confirm.top_k
    assert set(conf.analysis.strategies) == {BASELINE_LABEL, *conf.candidates}
    name = f"{spec.selection.objective}_vs_baseline"
    tests = [t for t in conf.analysis.tests if t.name == name and t.blueprint is None]
    assert sorted(t.strategy for t in tests) == sorted(conf.candidates)
    raw = np.array([t.pvalue for t in tests])
    assert np.allclose([t.pvalue_adjusted for t in tests],
                       multipletests(raw, method="holm")[1])


def test_calibrating_candidates_are_confirmed_with_their_search_calibration(confirmed):
    spec, _, gates, conf, *_ = confirmed
    from esper_ab.replay import replay_decisions

    held = synthetic_traces(replicates=spec.confirm_replicates, **SYNTH)
    for label, gate in gates.items():
        if gate.calibration is None:
            continue
        # fitted on the search replicates, applied (not re-fitted) on the held-out ones
        want = replay_decisions(held, gate, label=label).decisions
        got = conf.decisions[conf.decisions["strategy"] == label]
        assert list(got["passed"]) == list(want["passed"])
    text = format_confirmation(conf)
    assert text.startswith("Confirmed verdict (replay on held-out replicates [4, 5, 6, 7, 8]")
    assert "reference" in text and "TPR ref" in text and "value pp" in text


@pytest.mark.slow
def test_the_replay_sweep_logs_the_confirmed_verdict_as_the_sweeps(tmp_path, capsys):
    spec = parse_sweep_spec(space(num_samples=24, confirm={"top_k": 2},
                                  selection={"top_k": 2, "max_gap": 1.0}))
    search, held = Spy(evidence(spec.replicates)), Spy(evidence(spec.confirm_replicates))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = run_replay_sweep(spec, evidence=search, confirm_evidence=held,
                           options=ReplaySweepOptions(tracking_uri=uri, storage_dir=str(tmp_path),
                                                      n_boot=50, n_perm=50))
    assert search.seen == set(spec.replicates) and held.seen == set(spec.confirm_replicates)
    conf = out.confirmation
    assert set(out.analysis.decisions["replicate"]) == set(spec.replicates)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        doc = json.loads(Path(client.download_artifacts(out.sweep_run_id,
                                                        "sweep/analysis.json", tmp)).read_text())
        search_doc = Path(client.download_artifacts(out.sweep_run_id, "search/verdict.txt",
                                                    tmp)).read_text()
    assert doc["confirmation"]["replicates"] == list(spec.confirm_replicates)
    assert doc["confirmation"]["search_replicates"] == list(spec.replicates)
    assert doc["verdict"]["reason"] == conf.verdict.reason
    assert search_doc == out.analysis.reason
    tags = client.get_run(out.sweep_run_id).data.tags
    assert tags["esper_ab.verdict"] == conf.verdict.reason[:4000]
    assert tags["esper_ab.confirmed_by"] == "replay"
    # the run's description in MLflow (its note) is the confirmation's verdict, the search
    # stage's after it; the confirmation's numbers are metrics and a table
    note = tags["mlflow.note.content"]
    assert note.startswith("**Verdict (confirm)") and "**Earlier:** search stage" in note
    assert tags["esper_ab.verdict_kind"] == conf.verdict.kind
    metrics = client.get_run(out.sweep_run_id).data.metrics
    # the headline metrics are the confirmation's; the search stage's are prefixed search.
    assert metrics["baseline.balanced_accuracy"] == pytest.approx(float(
        conf.analysis.metrics.overall.loc[BASELINE_LABEL, "balanced_accuracy"]), rel=5e-4)
    assert "search.baseline.balanced_accuracy" in metrics
    assert not any(k.startswith("confirm.baseline") for k in metrics)
    assert "tables/confirm_per_blueprint.json" in {
        a.path for a in client.list_artifacts(out.sweep_run_id, "tables")}
    # report.html, logged by the search stage, is logged again with the confirmed verdict
    # first; `esper-ab report` reads it back and ends with it
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(client.download_artifacts(out.sweep_run_id, "report.html", tmp)).read_text()
    first_line = format_confirmation(conf).strip().splitlines()[0]
    assert f"data-kind='{conf.verdict.kind}'" in page
    assert page.index("id='confirmed-verdict'") < page.index("id='verdict'")
    assert page.index(html.escape(first_line)) < page.index("<h2>Search stage</h2>")
    code = main(["report", "--experiment", spec.name, "--tracking-uri", uri,
                 "--out", str(tmp_path / "rep"), "--n-boot", "50", "--n-perm", "50",
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and printed.rstrip().endswith(f"wrote {tmp_path / 'rep' / 'report.html'}")
    assert printed.index("the sweep's answer:") > printed.index("Verdict:")
    assert format_confirmation(conf).strip() in printed
    assert "id='confirmed-verdict'" in (tmp_path / "rep" / "report.html").read_text()


def test_search_evidence_holding_a_confirmation_replicate_is_refused(tmp_path):
    spec = parse_sweep_spec(space(name="leak"))
    with pytest.raises(DataError, match=r"confirmation replicates \[4, 5, 6, 7, 8\]"):
        run_replay_sweep(spec, evidence=evidence(list(range(9))), options=ReplaySweepOptions(
            tracking_uri=f"sqlite:///{tmp_path}/m.db", storage_dir=str(tmp_path)))


def test_confirm_by_replay_refuses_an_overlap():
    from esper_ab.study.confirmation import confirm_by_replay, judge

    spec = parse_sweep_spec(space())
    ev = evidence([0, 1, 2, 3])
    with pytest.raises(DataError, match="lacks replicates"):
        confirm_by_replay(spec, ev, {})
    table = ev.decisions(PRESETS[spec.baseline], label=BASELINE_LABEL, replicates=[2, 3])
    with pytest.raises(DataError, match=r"\[2, 3\] were also searched"):
        judge(spec, table, fidelity="replay", candidates=[])


# -- Ray Tune (the sweep command) ----------------------------------------------------------
@pytest.mark.slow
def test_tune_sweep_confirms_on_held_out_replicates(tmp_path):
    from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

    # 4 trials (a Tune trial and a child run each): enough for the 2 confirmed candidates
    spec = parse_sweep_spec(space(name="tune_holdout", num_samples=4, max_concurrent=2,
                                  resources={"cpu": 1}, confirm={"top_k": 2}))
    out = run_sweep(spec, options=SweepOptions(tracking_uri=f"sqlite:///{tmp_path}/m.db",
                                               storage_dir=str(tmp_path), num_cpus=2,
                                               n_boot=50, n_perm=50))
    conf = out.confirmation
    assert out.status == "FINISHED" and conf is not None
    assert set(out.analysis.decisions["replicate"]) <= set(spec.replicates)
    assert set(conf.decisions["replicate"]) == set(spec.confirm_replicates)
    assert len(conf.candidates) == 2 and out.reason.startswith("confirmed on held-out")


def test_sequential_confirmation_stops_on_an_always_valid_test():
    from esper_ab.study.confirmation import confirm_by_replay

    reps = list(range(4, 24))
    spec = parse_sweep_spec(space(replicates={"search": [0, 1, 2, 3], "confirm": reps},
                                  traces={"source": "synthetic",
                                          "synthetic": {**SYNTH, "planted": True}},
                                  confirm={"top_k": 1, "sequential": True,
                                           "min_replicates": 4}))
    held = ReplayEvidence(synthetic_traces(replicates=reps, planted=True, **SYNTH), folds=2)
    search = ReplayEvidence(synthetic_traces(replicates=[0, 1, 2, 3], planted=True, **SYNTH),
                            folds=2)
    good = search.fit_calibration(GateConfig(strategy="value_calibrated", threshold=1.5,
                                             window="median", min_epochs=10),
                                  replicates=[0, 1, 2, 3])
    conf = confirm_by_replay(spec, held, {"vc": good}, n_boot=50, n_perm=100)
    seq = conf.sequential
    assert seq is not None and seq.settled("vc") == "gain"
    assert conf.replicates == tuple(reps[:seq.n_used]) and conf.planned == tuple(reps)
    assert 4 <= seq.n_used < len(reps)                        # it stopped early
    test = next(t for t in conf.analysis.tests
                if t.name == "balanced_accuracy_vs_baseline" and t.strategy == "vc")
    assert test.pvalue == seq.pvalue("vc") and "anytime-valid" in test.method
    assert "stopped early" in format_confirmation(conf)
