"""The options that several commands share, each defined once (as in MLflow's cli_args).

Long-running commands (sweep, record, replay, episode, demo, report) take the output options
(``--no-progress``, ``--log-file``, ``--verbose``, see :func:`add_output`); the Ray ones take
``--address``; the sweep ones ``--storage-dir``, ``--num-samples``, ``--tracking-uri``;
the analysing ones ``--n-boot`` / ``--n-perm``. :class:`HelpFormatter` shows every default
in ``--help``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from esper_ab.errors import ConfigError, bad_value, shown
from esper_ab.progress import Progress

__all__ = ["COUNT", "REPLICATE", "RESAMPLES", "bounded_int", "CACHE_DIR", "DEFAULT_SCHEDULE_TIMEOUT_S", "HelpFormatter", "MLFLOW_UI_HINT",
           "RAY_VERBOSE", "add_address", "add_cache_dir", "add_experiment", "add_num_samples", "add_output",
           "add_resampling", "add_schedule_timeout", "add_storage_dir", "add_tracking_uri",
           "SPACE_FIX", "existing_dir", "existing_file", "preflight_resources", "progress_for", "schedule_timeout",
           "ui_hint"]

# The one episode/closed-loop cache default (= esper_ab.episodes.DEFAULT_CACHE_DIR), relative
# to the working directory: `esper-ab record`, `sweep` and `episode` run from one folder share it.
CACHE_DIR = ".esper_ab_cache"
DEFAULT_SCHEDULE_TIMEOUT_S = 60.0
MLFLOW_UI_HINT = ("Start the MLflow UI:  {mlflow} ui --backend-store-uri {uri} --port 5000  "
                  "(another --port if 5000 is taken; the address below then changes with it)")


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless it says its default already, or
    the default is None/False (a flag, or "not given" explained in the text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def existing_file(path: str, what: str, fix: str) -> None:
    """A path argument checked before any heavy import (a mistyped path fails at once)."""
    if not os.path.isfile(path):
        state = "a folder" if os.path.isdir(path) else "it does not exist"
        raise ConfigError(f"{what} {shown(path)} is not a file ({state}): {fix}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{what} {shown(path)} cannot be read: check its permissions")


def existing_dir(path: str, what: str, fix: str) -> None:
    if not os.path.isdir(path):
        state = "a file" if os.path.isfile(path) else "it does not exist"
        raise ConfigError(f"{what} {shown(path)} is not a folder ({state}): {fix}")


SPACE_FIX = "give the path of a search space file (e.g. search_spaces/smoke.yaml)"


def ui_hint(uri: str, run_id: str | None = None) -> str:
    """The last lines of a command that tracked a run: for an embedded store, the exact
    command that starts the MLflow UI on it (the ``mlflow`` next to this interpreter, so it
    runs outside the virtual environment too), then the run's address in the UI's
    model-training view (``run_id``; the experiments page without one)."""
    import shlex
    import sys
    from pathlib import Path

    server = uri.startswith(("http://", "https://"))
    lines = []
    if not server:
        exe = Path(sys.executable).with_name("mlflow")
        mlflow = shlex.quote(str(exe)) if exe.is_file() else \
            f"{shlex.quote(sys.executable)} -m mlflow"
        lines.append(MLFLOW_UI_HINT.format(mlflow=mlflow, uri=shlex.quote(uri)))
    base = uri if server else "http://127.0.0.1:5000"
    if run_id:
        from esper_ab.tracking import SweepTracker, ui_url

        experiment = SweepTracker(uri).client.get_run(run_id).info.experiment_id
        lines.append(f"The run in MLflow:    {ui_url(base, experiment, run_id)}")
    else:
        from esper_ab.tracking import ML_VIEW

        lines.append(f"MLflow's experiments: {base.rstrip('/')}/#/experiments?{ML_VIEW}")
    return "\n".join(lines)


def add_tracking_uri(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", metavar="URI", default=None,
                   help="MLflow tracking store: sqlite:///PATH.db (default: sqlite:///mlflow.db "
                        "in the working directory) or http://HOST:PORT of an mlflow server")


def add_experiment(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--experiment", required=required, metavar="NAME",
                   help="MLflow experiment of the sweep (its spec's 'experiment', else 'name')")
    p.add_argument("--sweep-run", metavar="ID", default=None,
                   help="parent run id of the sweep (default: the experiment's latest sweep)")


def add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, metavar="A",
                   help="join a Ray cluster (auto, ray://HOST:10001, HOST:6379) (default: "
                        "embedded local Ray, or RAY_ADDRESS inside a Ray job)")


def add_storage_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-dir", default=None, metavar="DIR",
                   help="where the Optuna journal and Tune state live (default: "
                        "esper_ab_sweeps/ next to the sqlite store, or ./esper_ab_sweeps)")


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in [lo, hi] (else one usage line, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not a whole number: give one "
                                             f"in {lo:,}..{hi:,}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value:,} is outside {lo:,}..{hi:,}: give a "
                                             "value in that range")
        return value

    parse.__name__ = "whole number"
    return parse


COUNT = bounded_int(1, 1_000_000)          # trials, configs, batch sizes
RESAMPLES = bounded_int(1, 100_000)        # bootstrap resamples, permutations
REPLICATE = bounded_int(0, 2**31 - 1)      # a replicate index (seeds every RNG)


def add_num_samples(p: argparse.ArgumentParser, *, what: str = "trials") -> None:
    p.add_argument("--num-samples", type=COUNT, default=None, metavar="N",
                   help=f"{what} to run (default: the space's num_samples)")


def add_resampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-boot", type=RESAMPLES, default=1000, metavar="N",
                   help="bootstrap resamples of the final analysis")
    p.add_argument("--n-perm", type=RESAMPLES, default=2000, metavar="N",
                   help="permutations of the final analysis")


def add_cache_dir(p: argparse.ArgumentParser, *, note: str = "") -> None:
    p.add_argument("--cache-dir", default=CACHE_DIR, metavar="DIR",
                   help="cache of pretrained hosts, episodes and closed-loop runs, shared by "
                        "the commands run from the same folder; on a cluster, storage every "
                        f"node shares{note}")


def add_schedule_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schedule-timeout", type=float, default=DEFAULT_SCHEDULE_TIMEOUT_S,
                   metavar="S",
                   help="fail when a Ray task or trial cannot be scheduled for S seconds "
                        "(0: wait forever)")


def schedule_timeout(args: argparse.Namespace) -> float:
    """``--schedule-timeout`` checked (ConfigError on a negative value)."""
    value = float(args.schedule_timeout)
    if value < 0 or value != value:
        raise bad_value("--schedule-timeout", value, "use seconds >= 0 (0: wait forever)")
    return value


def preflight_resources(spec: Any, address: str | None) -> None:
    """An explicit GPU request on embedded local Ray fails here, in seconds, before Ray starts
    (``ResourceError``, exit 2). The full check runs on the cluster once Ray is up."""
    from esper_ab.study.resources import local_plan

    gpu = spec.resources.gpu
    if gpu != "auto" and gpu > 0:
        local_plan(spec.resources, spec.max_concurrent, address)


def preflight_workloads(spec: Any) -> None:
    """The plug-in contract of every workload a run will train (traces ``record``), on one
    batch before Ray starts (``ContractError``, exit 2); docs/PLUGINS.md."""
    if spec.traces.source != "record":
        return
    from esper_ab.episodes.workloads.contracts import check_workload

    for entry in spec.workloads:
        check_workload(entry.workload_config(), slots=entry.slot_list,
                       blueprints=tuple(entry.blueprints))


def add_output(p: argparse.ArgumentParser, *, verbose: str | None = None) -> None:
    """``--no-progress``, ``--log-file`` and (with a ``verbose`` help text) ``--verbose``."""
    p.add_argument("--no-progress", action="store_true",
                   help="no progress report (a bar on a terminal, timestamped lines otherwise)")
    p.add_argument("--log-file", default=None, metavar="PATH",
                   help="also append everything printed (Ray's output included) to PATH")
    if verbose is not None:
        p.add_argument("--verbose", nargs="?", type=int, const=1, default=0, choices=(0, 1, 2),
                       metavar="N", help=verbose)


RAY_VERBOSE = ("more output: --verbose (or 1) brings back Ray Tune's trial tables and Ray's "
               "own log and worker output, 2 adds every trial result, 0 is quiet")


def progress_for(args: argparse.Namespace, *, min_interval_s: float = 0.0) -> Progress:
    """The progress reporter of a command (off with ``--no-progress``)."""
    return Progress(enabled=not getattr(args, "no_progress", False),
                    min_interval_s=min_interval_s)
