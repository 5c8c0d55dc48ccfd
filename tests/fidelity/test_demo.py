"""``esper-ab demo`` (``make demo``) in smoke size: it says it is a smoke-sized study, ends
with a confirmed three-way verdict on held-out replicates, shows the baseline's bias per
blueprint beside the winner's, and writes winner.yaml exactly when there is a winner."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from esper_ab.cli import main

SMOKE = Path(__file__).resolve().parents[2] / "search_spaces" / "smoke.yaml"


@pytest.mark.slow
def test_demo_ends_with_a_confirmed_three_way_verdict(tmp_path, monkeypatch, capsys):
    space = yaml.safe_load(SMOKE.read_text())
    space.update(num_samples=6, replicates={"search": 4, "confirm": 8})   # smoke size
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(space))
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--space", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("esper-ab demo: a smoke-sized study, not a finding")
    assert "Confirmed verdict (replay on held-out replicates [4, 5, 6, 7, 8, 9, 10, 11]; " \
           "the search saw [0, 1, 2, 3])" in out
    verdict = out.split("Confirmed verdict", 1)[1].splitlines()[1].strip()
    kinds = {"Verdict: winner": "winner", "Verdict: not better": "not_better",
             "Verdict: undecided": "undecided"}
    kind = next(v for k, v in kinds.items() if verdict.startswith(k))
    table = out.split("Per blueprint on the confirmation replicates", 1)[1]
    for column in ("value pp", "pass ref", "TPR ref", "FPR ref"):   # reference vs best
        assert column in table
    for bp in ("attention", "bottleneck", "conv_light", "depthwise", "norm"):
        assert bp in table
    winner = tmp_path / "esper_ab_demo" / "winner.yaml"          # the demo's own folder
    assert winner.is_file() == (kind == "winner")
    assert not (tmp_path / "winner.yaml").exists()
    if kind == "winner":
        doc = yaml.safe_load(winner.read_text())
        assert doc["evidence"]["replicates"] == list(range(4, 12))   # confirmed there
    else:
        assert "No winner.yaml written" in out
