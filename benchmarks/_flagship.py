"""The flagship study's space (``search_spaces/g2_fairness_cnn.yaml``) as the Tune benchmarks
run it: its strategies, gate search, objective, sampler, selection and replicates (8 searched,
12 held out for the confirmation since the space was sized for a verdict; before that, 20
searched), on synthetic traces of a recorded episode's shape (one seed per blueprint, 12
epochs x 10 steps) or on recorded traces (``traces_dir``), with the trial budget and
concurrency given. ``benchmarks/flagship.py`` runs the space itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

FLAGSHIP = Path(__file__).resolve().parent.parent / "search_spaces" / "g2_fairness_cnn.yaml"


def flagship_space(*, configs: int, concurrency: int, traces_dir: str | None = None,
                   name: str | None = None, seeds_per_blueprint: int = 1,
                   confirm: bool = True) -> dict[str, Any]:
    """``seeds_per_blueprint`` (synthetic traces only) scales every config's replay work;
    ``confirm=False`` leaves out the held-out confirmation (its replicates and stage)."""
    data = yaml.safe_load(FLAGSHIP.read_text())
    data.update(num_samples=configs, max_concurrent=concurrency, resources={"cpu": 1})
    if name:
        data.update(name=name, experiment=name)
    if not confirm:
        data["replicates"] = {"search": data["replicates"]["search"]}
    data["traces"] = ({"source": "directory", "path": traces_dir} if traces_dir else
                      {"source": "synthetic", "synthetic": {
                          "epochs": 12, "steps_per_epoch": 10,
                          "seeds_per_blueprint": seeds_per_blueprint}})
    return data


def worker_starts(sweep_dir: Path) -> list[float]:
    """``worker_start_s`` of every batch trial of the sweep's Tune runs (result.json)."""
    import json

    out = []
    for path in Path(sweep_dir, "tune").rglob("result.json"):
        for line in path.read_text().splitlines():
            if line.strip():
                v = json.loads(line).get("worker_start_s")
                if isinstance(v, int | float) and v > 0:
                    out.append(float(v))
    return out


def start_sweep_ray(concurrency: int) -> None:
    """Local Ray started here with run_sweep's worker setup hook (run_sweep's own
    connect_ray is then a no-op): the prestarted workers import the trial stack, as in a
    real sweep."""
    from esper_ab.study.runtime import connect_ray

    connect_ray(None, num_cpus=concurrency,
                setup_hook="esper_ab.tune_driver.trainables.warm_worker")

