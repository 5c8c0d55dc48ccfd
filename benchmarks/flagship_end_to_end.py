"""The flagship study end to end: cold (every episode recorded inside the sweep) and again
with the episodes cached.

Runs ``search_spaces/g2_fairness_cnn.yaml`` (or ``--space``) twice with ``run_sweep`` on local
Ray, into a fresh MLflow store each time and one shared episode cache: the first run records
every (workload, replicate) episode as its own Ray task, in parallel (the path of
``esper-ab record``), the second finds them all cached. Prints per run the wall of the whole
call and of its stages -- recording (first to last ``record`` progress event), the Tune
search (``Tuner.fit``), the rest (finalists, cross-trial analysis, report) -- and the mean
wall of one episode (its recorded phase timings).

    python benchmarks/flagship_end_to_end.py [--replicates N] [--num-samples N] [--cache DIR]

``--replicates`` / ``--num-samples`` shrink the study when the full one is too long.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


class Clock:
    """A progress reporter that remembers when each stage first and last reported."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.counts: dict[str, tuple[int, int]] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.first.setdefault(stage, now)
        self.last[stage] = now
        self.counts[stage] = (done, total)

    def note(self, text: str) -> None:
        print(f"    note: {text}", flush=True)

    def span(self, stage: str) -> float:
        return self.last.get(stage, 0.0) - self.first.get(stage, 0.0)


def episode_walls(cache: Path) -> list[float]:
    walls = []
    for meta in (cache / "traces").rglob("*-episode.json"):
        t = json.loads(meta.read_text()).get("timings", {})
        walls.append(sum(float(t.get(k, 0.0)) for k in ("pretrain_s", "incubate_s", "value_s")))
    return walls


def run_once(spec, cache: Path, label: str) -> dict[str, float]:
    from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = run_sweep(spec, options=SweepOptions(
            tracking_uri=f"sqlite:///{tmp}/mlflow.db", cache_dir=str(cache), progress=clock))
        total = time.perf_counter() - t0
    done, n_eps = clock.counts.get("record", (0, 0))
    rec = clock.span("record")
    rest = total - out.fit_wall_s - rec
    print(f"  {label:<7} total {total:7.1f} s | recording {rec:6.1f} s ({n_eps} episodes) | "
          f"Tune search {out.fit_wall_s:6.1f} s | start, finalists, analysis, report "
          f"{rest:6.1f} s | {out.status}", flush=True)
    return {"total": total, "record": rec, "fit": out.fit_wall_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="search_spaces/g2_fairness_cnn.yaml")
    ap.add_argument("--replicates", type=int, default=None)
    ap.add_argument("--num-samples", type=int, default=None)
    ap.add_argument("--cache", default=None, help="episode cache (default: a fresh folder)")
    args = ap.parse_args()

    import yaml

    from esper_ab.study.spec import parse_sweep_spec

    data = yaml.safe_load(Path(args.space).read_text())
    if args.replicates is not None:
        data["replicates"] = args.replicates
    if args.num_samples is not None:
        data["num_samples"] = args.num_samples
    spec = parse_sweep_spec(data, source=args.space)
    cache = Path(args.cache or tempfile.mkdtemp(prefix="esper_ab_flagship_cache_"))
    print(f"flagship end to end: {spec.name}, {len(spec.replicates)} replicates x "
          f"{len(spec.workloads)} workload(s), {spec.num_samples} configs, cache {cache}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    cold = run_once(spec, cache, "cold")
    walls = episode_walls(cache)
    if walls:
        print(f"  one episode: mean {sum(walls) / len(walls):.1f} s wall (min {min(walls):.1f}, "
              f"max {max(walls):.1f}; recorded as Ray tasks in parallel, as 'esper-ab "
              "record' does)", flush=True)
    cached = run_once(spec, cache, "cached")
    print(f"cold / cached end to end: {cold['total'] / cached['total']:.1f}x")


if __name__ == "__main__":
    main()
