"""The CLI shell: fast --help, one-line errors with exit 2, the strategies listing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from esper_ab.cli import main


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esper_ab", *args], capture_output=True,
                          text=True, timeout=120, **kw)


def test_help_imports_no_heavy_library():
    code = ("import sys; from esper_ab.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'scipy', 'optuna') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_strategies_json_lists_every_strategy_with_its_space():
    out = run_cli("strategies", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    names = [r["name"] for r in rows]
    from esper_ab.strategies import list_strategies

    assert "baseline" in names and "first_order_value" in names
    assert names == list(list_strategies())           # every registered strategy, once
    exponent = next(r for r in rows if r["name"] == "exponent")
    assert exponent["params"][0]["name"] == "a" and exponent["params"][0]["domain"] == [0.0, 2.0]
    assert all("formula" in r and "threshold" in r for r in rows)


@pytest.mark.parametrize("argv", [["nonsense"], ["strategies", "--jsn"], []])
def test_usage_errors_are_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("esper-ab: error:")
    assert "Traceback" not in err


def test_help_journey_shows_defaults_and_plain_text():
    """`esper-ab sweep SPACE --help` (the README's journey) and `demo --help`: defaults shown,
    no RST markup, the shared options present."""
    for argv in (["sweep", "search_spaces/g2_fairness_cnn.yaml", "--help"], ["demo", "--help"]):
        out = run_cli(*argv)
        assert out.returncode == 0, out.stderr
        text = " ".join(out.stdout.split())
        assert "``" not in text and "`" not in text
        assert "(default: 60.0)" in text
        assert ("(default: esper_ab_demo)" if argv[0] == "demo" else
                "(default: .esper_ab_cache)") in text
        for opt in ("--no-progress", "--log-file", "--verbose", "--schedule-timeout"):
            assert opt in text, (argv, opt)


def test_strategies_lists_every_strategy_and_every_gate_preset(capsys):
    """The first look: every registered strategy and every gate preset, each name whole on
    one line (never wrapped mid-word), in an aligned table no wider than 100 columns."""
    from esper_ab.gate import PRESETS
    from esper_ab.strategies import list_strategies

    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 100
    firsts = {line.split()[0] for line in lines if line.strip()}
    for name in [*list_strategies(), *dict.keys(PRESETS)]:
        assert name in firsts, name
    assert "Gate presets" in out and "0.9 from 0.0" in out      # the Simic path's EMA
    assert lines[-1].startswith(f"{len(list_strategies())} strategies")


def test_the_strategy_docs_list_every_strategy_and_preset():
    from pathlib import Path

    from esper_ab.gate import PRESETS
    from esper_ab.strategies import list_strategies

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "STRATEGIES.md").read_text()
    readme = (root / "README.md").read_text()
    table = readme[readme.index("## Strategies"):readme.index("### 2. Measure")]
    for name in list_strategies():
        assert f"| `{name}`" in doc and f"| {name} |" in table, name
    for name in dict.keys(PRESETS):
        assert f"| `{name}`" in doc, name
    assert "docs/STRATEGIES.md" in table
