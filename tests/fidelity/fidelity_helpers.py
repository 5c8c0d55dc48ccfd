"""Shared helpers of the multi-fidelity tests: a tiny real space and its recorded episodes."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BLUEPRINTS = ["norm", "attention", "depthwise", "bottleneck"]

TINY_SPACE: dict[str, Any] = {
    "name": "fid_tiny",
    "workloads": [{"name": "synthetic-cnn", "slots": ["block2.pre_pool"],
                   "blueprints": BLUEPRINTS, "episode": {"size": "tiny"}}],
    "replicates": 3,
    "traces": {"source": "record"},
    "strategies": [{"name": "baseline"},
                   {"name": "exponent", "params": {"a": {"low": 0.0, "high": 1.5}}},
                   {"name": "per_blueprint_threshold",
                    "params": {"quantile": {"low": 0.2, "high": 0.8}}},
                   {"name": "first_order_value", "params": {"mode": {"choices": ["raw",
                                                                                "cosine"]}}}],
    "gate": {"window": ["last", "mean"], "min_epochs": [2, 5, 10]},
    "objectives": [{"metric": "realized_utility"}],
    "sampler": {"kind": "random", "seed": 0},
    "num_samples": 120,
    "resources": {"cpu": 1},
    "selection": {"objective": "realized_utility", "fairness_metric": "pass_rate_gap",
                  "max_gap": 1.0, "top_k": 2},
    "confirm": {"top_k": 1},
}


def space(**overrides: Any) -> dict[str, Any]:
    out = copy.deepcopy(TINY_SPACE)
    out.update(copy.deepcopy(overrides))
    return out


def write_space(folder: Path, **overrides: Any) -> Path:
    data = space(**overrides)
    path = Path(folder) / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass(frozen=True)
class Recorded:
    """Episodes of TINY_SPACE, recorded once per session: ``root/.esper_ab_cache`` (the cache
    a sweep with ``storage_dir=root`` uses) and ``root/traces`` (the record layout)."""

    root: Path
    cache: Path
    traces: Path
    replicates: tuple[int, ...]
