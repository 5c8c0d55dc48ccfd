"""README's "in your training loop" snippet runs as written against an exported winner."""

from __future__ import annotations

import torch
from torch import nn

import esper_ab
from esper_ab.export import build_winner, write_winner
from esper_ab.gate import GateConfig
from esper_ab.gradients import GradientCollector
from esper_ab.study.spec import load_sweep_spec


def test_training_loop_snippet(tmp_path):
    spec = load_sweep_spec("search_spaces/smoke.yaml")
    doc = build_winner(gate=GateConfig(strategy="exponent", strategy_params={"a": 0.25},
                                       threshold=0.01, min_epochs=2),
                       analysis={}, label="t001-exponent", experiment="smoke",
                       sweep_run_id="r", trial_run_id="t", spec=spec, versions={},
                       git_commit="unknown", forced=True)
    path = write_winner(doc, tmp_path / "winner.yaml")

    torch.manual_seed(0)
    host, seed_module = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), nn.Linear(8, 8)
    gate = esper_ab.load_gate(path)
    collector = GradientCollector({"host": host, "seed": seed_module})
    tracker = gate.tracker("attention")
    decisions = []
    for _epoch in range(3):
        for _step in range(4):
            x = torch.randn(16, 8)
            h = host[0](x)
            y = h + (seed_module(h.detach()) - seed_module(h.detach()).detach())  # STE slot
            loss = nn.functional.cross_entropy(host[2](host[1](y)), torch.randint(0, 2, (16,)))
            host.zero_grad(), seed_module.zero_grad()
            loss.backward()
            stats = collector.measure()
            tracker.observe_step(stats["seed"], stats["host"])
        decisions.append(tracker.end_epoch())
    assert [d.epochs_observed for d in decisions[:2]] == [1, 2]
    assert not decisions[0].passed  # min_epochs = 2
    assert decisions[1].passed and decisions[1].epoch == 2 and decisions[1].value > 0.01


# --- every README journey, as written ---------------------------------------------------

import re  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _journeys() -> dict[str, list[list[str]]]:
    """Each journey's ``esper-ab`` command lines, from README's shell blocks, as argv lists."""
    out: dict[str, list[list[str]]] = {}
    for title, body in re.findall(r"^### (\d+\..*?)\n(.*?)(?=^### |^## |\Z)", README,
                                  flags=re.M | re.S):
        cmds = []
        for block in re.findall(r"```\n(.*?)```", body, flags=re.S):
            for line in block.splitlines():
                line = line.split("#")[0].strip()
                if line.startswith(".venv/bin/esper-ab "):
                    cmds.append(shlex.split(line)[1:])
        out[title] = cmds
    return out


def test_readme_has_seven_journeys_each_with_a_command_and_stays_short():
    journeys = _journeys()
    assert len(journeys) == 7, list(journeys)
    assert all(journeys.values()), {t: c for t, c in journeys.items() if not c}
    assert len(README.splitlines()) <= 200


def test_every_readme_command_parses_and_names_files_that_exist():
    """Every option of every journey's command exists (the real parser), and every path it
    names in this repository or in ../shared exists, so no journey drifts from the CLI."""
    from esper_ab.cli import build_parser

    parser = build_parser()
    for title, cmds in _journeys().items():
        for argv in cmds:
            args = parser.parse_args(argv)     # an unknown option raises UsageError
            assert callable(args.handler), (title, argv)
            for word in argv:
                if word.endswith((".yaml", ".yml")) and "/" in word and not word.startswith("my"):
                    assert (ROOT / word).is_file(), (title, word)
                if word.startswith("../shared/"):
                    assert (ROOT / word).exists() or not (ROOT.parent / "shared").exists(), word
    for doc in re.findall(r"\(docs/([A-Z_]+\.md)", README):
        assert (ROOT / "docs" / doc).is_file(), doc


def test_the_quick_journeys_run_as_written(tmp_path):
    """Journey 1 (strategies), journey 4's validate and journey 6 (ingest, then analyze
    --observational on the real esper-lite runs) run as written and exit 0."""
    corpus = ROOT.parent / "shared" / "real-clients" / "esper-lite"
    def quick_one(c: list[str]) -> bool:
        if c[0] in ("strategies", "validate"):
            return "my_space.yaml" not in c
        if c[:2] == ["ingest", "esper-lite"] or (c[0] == "analyze" and "--observational" in c):
            return corpus.exists()
        return False

    quick = [c for cmds in _journeys().values() for c in cmds if quick_one(c)]
    assert any(c[0] == "strategies" for c in quick) and any(c[0] == "validate" for c in quick)
    for argv in quick:
        argv = [str(ROOT / a) if a.startswith("../shared/") else a for a in argv]
        res = subprocess.run([sys.executable, "-m", "esper_ab", *argv], cwd=tmp_path if
                             argv[0] in ("ingest", "analyze") else ROOT,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, (argv, res.stderr[-2000:])
