"""Shared helpers for the sweep tests (importable by Ray workers: pickled by value)."""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import yaml

from esper_ab.replay import ReplayEvidence

BASE_SPACE: dict[str, Any] = {
    "name": "t_sweep",
    "workloads": [{"name": "synthetic-cnn"}],
    "replicates": 3,
    "traces": {"source": "synthetic",
               "synthetic": {"epochs": 12, "steps_per_epoch": 2, "seeds_per_blueprint": 1}},
    "strategies": [{"name": "exponent", "params": {"a": {"low": 0.0, "high": 1.0}}},
                   {"name": "baseline"}],
    "sampler": {"kind": "random", "seed": 0},
    "num_samples": 3,
    "max_concurrent": 2,
    "resources": {"cpu": 1},
    "selection": {"top_k": 2, "max_gap": 1.0},
}


def space(**overrides: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE_SPACE)
    out.update(copy.deepcopy(overrides))
    return out


def write_space(folder: Path, **overrides: Any) -> Path:
    path = Path(folder) / f"{overrides.get('name', BASE_SPACE['name'])}.yaml"
    path.write_text(yaml.safe_dump(space(**overrides), sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CrashingEvidence(ReplayEvidence):
    """Replay evidence that raises for chosen strategies: always, or once (a marker file
    records the first attempt, so a retried trial succeeds)."""

    def __init__(self, traces: Any, *, always: tuple[str, ...] = (), once: tuple[str, ...] = (),
                 marker_dir: str, folds: int = 2) -> None:
        super().__init__(traces, folds=folds)
        self.always, self.once, self.marker_dir = always, once, marker_dir

    def decisions(self, gate, *, label, replicates):
        if label == "candidate":
            if gate.strategy in self.always:
                raise RuntimeError(f"injected crash for {gate.strategy}")
            marker = Path(self.marker_dir) / f"crashed_{gate.strategy}"
            if gate.strategy in self.once and not marker.exists():
                marker.write_text("1")
                raise RuntimeError(f"injected one-off crash for {gate.strategy}")
        return super().decisions(gate, label=label, replicates=replicates)


def runs_frame(uri: str, experiment: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])
