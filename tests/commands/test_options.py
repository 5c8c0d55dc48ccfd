"""The options the commands share: defined once, on every long-running command, defaults in
--help, plain help text (no RST), one-line errors."""

from __future__ import annotations

import argparse

import pytest

from esper_ab.cli import build_parser, main
from esper_ab.commands._options import CACHE_DIR, ui_hint

LONG_RUNNING = {   # command -> the shared options it must take
    "sweep": ["--address", "--storage-dir", "--num-samples", "--n-boot", "--n-perm",
              "--cache-dir", "--no-progress", "--log-file", "--verbose", "--schedule-timeout"],
    "record": ["--address", "--cache-dir", "--no-progress", "--log-file", "--verbose",
               "--schedule-timeout"],
    "replay": ["--storage-dir", "--num-samples", "--n-boot", "--n-perm", "--no-progress",
               "--log-file"],
    "episode": ["--cache-dir", "--no-progress", "--log-file"],
    "demo": ["--cache-dir", "--no-progress", "--log-file", "--verbose", "--schedule-timeout"],
    "report": ["--n-boot", "--n-perm", "--no-progress", "--log-file"],
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _help(name: str) -> str:
    return _subparsers()[name].format_help()


@pytest.mark.parametrize("name", sorted(LONG_RUNNING))
def test_long_running_commands_take_the_shared_options(name):
    options = {s for a in _subparsers()[name]._actions for s in a.option_strings}
    missing = [o for o in LONG_RUNNING[name] if o not in options]
    assert missing == [], f"{name} lacks {missing}"


def test_every_help_is_plain_text_and_shows_defaults():
    for name, sub in _subparsers().items():
        text = sub.format_help()
        assert "``" not in text and ":func:" not in text, name
        for action in sub._actions:
            if not action.option_strings or action.help in (None, argparse.SUPPRESS):
                continue
            if any(action.default is v for v in (None, False, argparse.SUPPRESS)):
                continue        # "not given" is explained in the help text itself
            assert "default" in sub._get_formatter()._expand_help(action), \
                (name, action.option_strings)
    report = _help("report")
    assert "bootstrap resamples of the final analysis (default: 1000)" in " ".join(
        report.split())
    assert "(default: 2000)" in " ".join(report.split())


def test_one_cache_default_everywhere():
    from esper_ab.episodes import DEFAULT_CACHE_DIR

    assert CACHE_DIR == str(DEFAULT_CACHE_DIR) == ".esper_ab_cache"
    for name in ("sweep", "record", "episode", "demo"):
        (cache,) = [a for a in _subparsers()[name]._actions if "--cache-dir" in a.option_strings]
        assert cache.default == CACHE_DIR, name


def test_verbose_is_a_flag_with_an_optional_level():
    parser = build_parser()
    assert parser.parse_args(["sweep", "s.yaml"]).verbose == 0
    assert parser.parse_args(["sweep", "s.yaml", "--verbose"]).verbose == 1
    assert parser.parse_args(["sweep", "s.yaml", "--verbose", "2"]).verbose == 2


def test_the_mlflow_ui_hint_names_a_port():
    """The exact command (this interpreter's mlflow, usable outside the venv), then the
    experiments page in the model-training view."""
    import shlex
    import sys
    from pathlib import Path

    hint = ui_hint("sqlite:////tmp/mlflow.db")
    cmd = hint.splitlines()[0].split(":  ", 1)[1].split("  (")[0]
    argv = shlex.split(cmd)
    assert Path(argv[0]).is_absolute() and Path(argv[0]).parent == Path(sys.executable).parent
    assert argv[-5:] == ["ui", "--backend-store-uri", "sqlite:////tmp/mlflow.db", "--port",
                         "5000"] or argv[-4:] == ["--backend-store-uri",
                                                  "sqlite:////tmp/mlflow.db", "--port", "5000"]
    assert hint.splitlines()[-1].endswith(
        "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning")
    served = ui_hint("http://127.0.0.1:5999")
    assert "mlflow ui" not in served and "http://127.0.0.1:5999/#/experiments?" in served


@pytest.mark.parametrize("argv,needle", [
    (["sweep", "{space}", "--schedule-timeout", "-1"], "--schedule-timeout=-1.0"),
    (["record", "{space}", "--schedule-timeout", "nan"], "--schedule-timeout=nan"),
])
def test_bad_schedule_timeout_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    space = tmp_path / "s.yaml"
    space.write_text("name: s\n")
    assert main([a.format(space=space) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "0: wait forever" in err[0], err
