"""Options shared by the sweep commands (defined once, as in MLflow's cli_args)."""

from __future__ import annotations

import argparse

MLFLOW_UI_HINT = ("Open the MLflow UI:  mlflow ui --backend-store-uri {uri}   "
                  "(then http://127.0.0.1:5000)")


def add_tracking_uri(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", metavar="URI", default=None,
                   help="MLflow tracking store: sqlite:///PATH.db (default: sqlite:///mlflow.db "
                        "in the working directory) or http://HOST:PORT of an mlflow server")


def add_experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, metavar="NAME",
                   help="MLflow experiment of the sweep (its spec's 'experiment', else 'name')")
    p.add_argument("--sweep-run", metavar="ID", default=None,
                   help="parent run id of the sweep (default: the experiment's latest sweep)")


def ui_hint(uri: str) -> str:
    return MLFLOW_UI_HINT.format(uri=uri)
