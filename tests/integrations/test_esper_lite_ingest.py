"""``esper-ab ingest esper-lite``: the 22 real runs in shared/, and every way a file can be bad.

The expected counts below were taken by hand from the events (SEED_GERMINATED for the
blueprint, SEED_STAGE_CHANGED TRAINING->BLENDING for a pass), run by run, not from the code:

strict     ep00 conv_light P, depthwise P, conv_heavy P | ep01 attention F, bottleneck P,
           conv_light P | ep02 norm P, conv_small F, attention F | ep03 depthwise P,
           conv_heavy P, norm P | ep04 bottleneck P, conv_light P, depthwise P | ep05
           conv_small F, attention F, bottleneck P | ep06 conv_heavy P, norm P, conv_small F |
           ep07 = ep00 | ep08 = ep01 | ep09 = ep02 | ep10 = ep03 | ep11 = ep04 | ep12 = ep05 |
           ep13 conv_heavy P, norm P (after 16 epochs), conv_small F | ep14 = ep00 | ep15 = ep01
permissive ep00-ep03 as strict ep00-ep03, every seed F (gradient_health_not_measured)
ppo        ppo_seed3 bottleneck (pruned), conv_small | ppo_strict conv_small (pruned), norm;
           no G2 event in either run
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esper_ab.cli import main
from esper_ab.errors import DataError
from esper_ab.integrations.esper_lite import (
    COLUMNS,
    PERMISSIVE,
    STRICT,
    UNDETECTED,
    ingest_esper_lite,
)

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "real-clients" / "esper-lite"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} is not here")

# blueprint: (seeds, passes), counted by hand from the events (see the module docstring)
STRICT_COUNTS = {"attention": (7, 0), "bottleneck": (7, 7), "conv_heavy": (7, 7),
                 "conv_light": (8, 8), "conv_small": (6, 0), "depthwise": (7, 7),
                 "norm": (6, 6)}
PERMISSIVE_COUNTS = {"attention": (2, 0), "bottleneck": (1, 0), "conv_heavy": (2, 0),
                     "conv_light": (2, 0), "conv_small": (1, 0), "depthwise": (2, 0),
                     "norm": (2, 0)}
PPO_COUNTS = {"bottleneck": (1, 0), "conv_small": (2, 0), "norm": (1, 0)}


@pytest.fixture(scope="module")
def corpus():
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is not here")
    return ingest_esper_lite(CORPUS)


def _counts(table: pd.DataFrame, strategy: str) -> dict[str, tuple[int, int]]:
    t = table[table["strategy"] == strategy]
    g = t.groupby("blueprint")["passed"]
    return {bp: (int(n), int(k)) for bp, n, k in zip(g.size().index, g.size(), g.sum(),
                                                       strict=True)}


@needs_corpus
def test_every_run_ingests_with_hand_counted_seeds_and_passes(corpus):
    t = corpus.table
    assert list(t.columns) == list(COLUMNS)
    assert corpus.summary.files == 22 and corpus.summary.runs == 22 and len(t) == 64
    assert _counts(t, STRICT) == STRICT_COUNTS
    assert _counts(t, PERMISSIVE) == PERMISSIVE_COUNTS
    assert _counts(t, UNDETECTED) == PPO_COUNTS
    # the key is (run, slot, seed id): seed_0 recurs in every heuristic run, never twice in one
    assert (t["seed"] == "seed_0").sum() == 20
    assert not t.duplicated(["run", "slot", "seed"]).any()
    assert t.loc[t["strategy"] == STRICT, "run"].nunique() == 16


@needs_corpus
def test_rows_match_the_events_line_by_line(corpus):
    t = corpus.table.set_index(["run", "slot", "seed"])
    # heuristic-strict/ep13 norm: failed at epoch 16 (low_0.06), passed at 20 after 16 epochs
    r = t.loc[("heuristic-strict/ep13", "r0c1", "seed_1")]
    assert (r["blueprint"], r["params"], r["passed"], r["pass_epoch"]) == ("norm", 33, True, 16)
    assert r["statistic"] == pytest.approx(0.27) and r["g2_attempts"] == 5
    assert r["last_failed_check"] == "seed_gradient_low_0.06"
    # ep01 attention: 16 G2 checks, all failed, the last one seed_gradient_low_0.00
    r = t.loc[("heuristic-strict/ep01", "r0c0", "seed_0")]
    assert (r["blueprint"], r["passed"], r["g2_attempts"]) == ("attention", False, 16)
    assert r["statistic"] == 0.0 and pd.isna(r["pass_epoch"])
    assert r["last_failed_check"] == "seed_gradient_low_0.00"
    # permissive: no ratio is ever written, the statistic is unmeasured
    r = t.loc[("heuristic-permissive/ep00", "r0c2", "seed_2")]
    assert np.isnan(r["statistic"]) and r["g2_attempts"] == 8 and not r["passed"]
    assert r["last_failed_check"] == "gradient_health_not_measured"
    # PPO: envelope epoch is a batch id; episode recorded in data -> in the replicate
    r = t.loc[("ppo/ppo_seed3", "r0c1", "ep0_env0_seed_0")]
    assert (r["replicate"], r["final_stage"], r["g2_attempts"]) == ("ppo/ppo_seed3:ep0",
                                                                     "PRUNED", 0)
    assert corpus.summary.g2_events == 396   # grep -c '"gate": "G2"' over the 22 files
    assert corpus.summary.never_judged == 4
    assert corpus.summary.skipped["EPOCH_COMPLETED"] == 628


def _write(tmp_path: Path, lines: list[str], name: str = "run1") -> Path:
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "events.jsonl").write_text("".join(lines), encoding="utf-8")
    return d / "events.jsonl"


def _ev(kind: str, seed: str | None = "seed_0", slot: str | None = "r0c0", **data) -> str:
    import json

    return json.dumps({"event_type": kind, "seed_id": seed, "slot_id": slot, "epoch": 1,
                       "data": data}) + "\n"


GERM = _ev("SEED_GERMINATED", blueprint_id="norm", params=33, slot_id="r0c0")
G2_STRICT = _ev("SEED_GATE_EVALUATED", gate="G2", passed=False,
                checks_passed=["global_improvement_1.00%"],
                checks_failed=["seed_not_ready", "seed_gradient_low_0.04"])
G2_PERMISSIVE = _ev("SEED_GATE_EVALUATED", gate="G2", passed=False, checks_passed=[],
                    checks_failed=["gradient_health_not_measured"])


@pytest.mark.parametrize("bad, line, words", [
    ('{"event_type": "SEED_GERMINATED", "seed_id": "s"', 2, "truncated"),
    ("[1, 2]\n", 2, "not a TelemetryEvent object"),
    ('{"seed_id": "seed_0"}\n', 2, "event_type=None"),
    (_ev("SEED_GATE_EVALUATED", seed="seed_9", gate="G2", passed=True), 2,
     "before its SEED_GERMINATED"),
    (_ev("SEED_GATE_EVALUATED", gate="G2", passed="yes"), 2, "passed='yes'"),
    (_ev("SEED_STAGE_CHANGED", from_stage="TRAINING", to_stage="BLENDING",
         epochs_in_stage=1.5), 2, "epochs_in_stage=1.5"),
    (GERM, 2, "again while it is alive"),
])
def test_a_bad_line_is_one_error_naming_file_and_line(tmp_path, capsys, bad, line, words):
    f = _write(tmp_path, [GERM, bad])
    with pytest.raises(DataError, match=words) as err:
        ingest_esper_lite(f)
    assert f"{f}:{line}:" in str(err.value)
    assert main(["ingest", "esper-lite", str(f), "--out", str(tmp_path / "o.csv")]) == 2
    msg = capsys.readouterr().err.strip()
    assert msg.count("\n") == 0 and f"{f}:{line}:" in msg and not (tmp_path / "o.csv").exists()


def test_unknown_events_are_skipped_and_counted(tmp_path):
    f = _write(tmp_path, [_ev("SOMETHING_NEW", seed=None), GERM, "\n", _ev("SOMETHING_NEW"),
                          G2_STRICT, _ev("EPOCH_COMPLETED", seed=None)])
    r = ingest_esper_lite(f)
    assert r.summary.skipped == {"SOMETHING_NEW": 2, "EPOCH_COMPLETED": 1}
    assert "SOMETHING_NEW 2" in "\n".join(r.summary.lines())
    row = r.table.iloc[0]
    assert (row["strategy"], row["statistic"], row["g2_attempts"]) == (STRICT, 0.04, 1)
    assert row["replicate"] == "run1"


def test_modes_are_detected_per_run_and_conflicts_are_refused(tmp_path):
    _write(tmp_path, [GERM, G2_STRICT], "a")
    _write(tmp_path, [GERM, G2_PERMISSIVE], "b")
    _write(tmp_path, [GERM], "c")
    t = ingest_esper_lite(tmp_path).table.set_index("run")["strategy"]
    assert t.to_dict() == {"a": STRICT, "b": PERMISSIVE, "c": UNDETECTED}
    with pytest.raises(DataError, match="--mode says esper_lite_strict but the G2 checks are "
                                        "esper_lite_permissive"):
        ingest_esper_lite(tmp_path, mode="strict")
    only_c = ingest_esper_lite(tmp_path / "c", mode="permissive").table
    assert only_c["strategy"].tolist() == [PERMISSIVE]
    mixed = _write(tmp_path, [GERM, G2_STRICT, G2_PERMISSIVE], "d")
    with pytest.raises(DataError, match=f"{mixed}:3: a permissive G2 check after the strict"):
        ingest_esper_lite(mixed)


def test_a_regerminated_slot_and_a_second_training_run_get_their_own_keys(tmp_path):
    start = _ev("TRAINING_STARTED", seed=None, slot=None)
    pruned = _ev("SEED_STAGE_CHANGED", from_stage="TRAINING", to_stage="PRUNED",
                 epochs_in_stage=3)
    f = _write(tmp_path, [start, GERM, pruned, GERM, G2_STRICT, start, GERM])
    t = ingest_esper_lite(f).table
    assert list(zip(t["run"], t["seed"], t["final_stage"], strict=True)) == [
        ("run1", "seed_0", "PRUNED"), ("run1", "seed_0#2", "GERMINATED"),
        ("run1@1", "seed_0", "GERMINATED")]


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ingest_esper_lite(tmp_path / "nope")
    with pytest.raises(DataError, match="holds no events.jsonl"):
        ingest_esper_lite(tmp_path)
    _write(tmp_path, [_ev("EPOCH_COMPLETED", seed=None)])
    with pytest.raises(DataError, match="no seed in"):
        ingest_esper_lite(tmp_path)


@needs_corpus
def test_cli_ingest_then_observational_analysis_and_plots(tmp_path, capsys):
    out = tmp_path / "decisions.csv"
    assert main(["ingest", "esper-lite", str(CORPUS), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "22 run(s): 64 seed(s)" in text and "EPOCH_COMPLETED 628" in text
    back = pd.read_csv(out)
    assert list(back.columns) == list(COLUMNS) and len(back) == 64
    assert back["statistic"].isna().sum() == 16          # 12 permissive + 4 PPO
    plots = tmp_path / "plots"
    assert main(["analyze", str(out), "--observational", "--plots", str(plots),
                 "--json", str(tmp_path / "obs.json")]) == 0
    report = capsys.readouterr().out
    assert "== esper_lite_strict: 48 seeds judged at G2 in 16 runs" in report
    assert re.search(r"\nattention +7 +7 +0 +0\.00 \[0\.00, 0\.35\] ", report), report
    assert "exact over 19683 arrangements" in report
    assert "not computed: TPR, FPR, the equalized-odds gaps and the verdict" in report
    for name in ("pass_rate_by_blueprint.png", "statistic_by_blueprint.png"):
        png = (plots / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
