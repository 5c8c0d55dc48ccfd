"""Shared helpers for the sweep tests (importable by Ray workers: pickled by value)."""

from __future__ import annotations

import copy
import random
import signal
import socket
import subprocess
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
    """A port free on every interface, drawn below the kernel's ephemeral range: a port
    the kernel hands out for bind(0) can be handed out again, to another process or to
    Ray's own components, between this probe and its use (a Ray head beside another suite
    once lost its job agent's port that way: 'address already in use')."""
    low = 20000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    high = max(low + 1000, ephemeral_low - 1)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(low, high)
        try:
            with socket.socket() as s:
                s.bind(("0.0.0.0", port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port in {low}-{high}")


def finish_or_dump(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """``proc.communicate(timeout)``; a driver still running then (``kill_driver.py``, which
    registers ``faulthandler`` on SIGUSR2) is asked for every thread's stack, killed, and
    the test fails with those stacks, so a hang seen once in CI says where it waited."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR2)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=30)
        raise AssertionError(f"the driver still ran {timeout:.0f} s later; its threads "
                             f"then:\n{(err or '')[-6000:]}") from None


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
