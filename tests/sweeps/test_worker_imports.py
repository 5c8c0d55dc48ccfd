"""A Tune trial worker is a fresh process that imports the trial stack before its first batch:
scoring a batch of replay configs must not import scipy (``scipy.stats``, ``scipy.special``)
or statsmodels (0.7-1 s of a worker's start; ``esper_ab.stats._lazy``), and must score as a
process that has them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
from sweep_helpers import space

from esper_ab.replay import ReplayEvidence, synthetic_traces
from esper_ab.study.space import define_by_run
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.tune_driver.trainables import score_configs

ROOT = Path(__file__).resolve().parents[2]
STRATEGIES = [{"name": "exponent", "params": {"a": {"low": 0.0, "high": 1.5}}},
              {"name": "baseline"}, {"name": "zscore"}, {"name": "value_calibrated"}]
SPACE = space(name="worker_imports", replicates=3, num_samples=8, strategies=STRATEGIES)

# What a trial worker runs: the setup hook, Tune's import, then a batch.
WORKER = """
import json, sys
from esper_ab.tune_driver.trainables import score_configs, warm_worker
warm_worker()
import ray.tune  # noqa: F401  (the function trainable's import)
from esper_ab.replay import ReplayEvidence, synthetic_traces
from esper_ab.study.spec import parse_sweep_spec
spec = parse_sweep_spec(json.loads(sys.argv[1]), source="test")
ev = ReplayEvidence(synthetic_traces(replicates=range(3), epochs=12, steps_per_epoch=2,
                                     seeds_per_blueprint=2))
rows = score_configs(spec, ev, json.loads(sys.argv[2]))
print(json.dumps({"rows": rows, "modules": sorted(m for m in sys.modules
                  if m in ("scipy", "statsmodels") or m.startswith(("scipy.", "statsmodels.")))}))
"""


def _items(spec, n: int = 8) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    fn, items = define_by_run(spec), []
    for i in range(n):
        t = study.ask()
        fixed = fn(t)
        items.append({"number": i, "params": {**t.params, **fixed}})
    return items


def test_a_trial_worker_scores_a_batch_without_scipy():
    spec = parse_sweep_spec(SPACE, source="test")
    items = _items(spec)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(SPACE), json.dumps(items)],
                         capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["modules"] == []
    # the same rows as scoring here, where scipy is loaded
    import scipy.special  # noqa: F401
    import scipy.stats  # noqa: F401

    ev = ReplayEvidence(synthetic_traces(replicates=range(3), epochs=12, steps_per_epoch=2,
                                         seeds_per_blueprint=2))
    want = json.loads(json.dumps(score_configs(spec, ev, items), allow_nan=True))
    assert len({it["params"]["strategy"] for it in items}) >= 3
    assert all(r["metrics"] for r in want if not r["reason"]) and any(r["metrics"] for r in want)
    assert json.dumps(got["rows"], sort_keys=True) == json.dumps(want, sort_keys=True)


def test_the_statistics_still_reach_scipy_stats_when_used():
    """The proxy hands out scipy's own functions (a test and its p-value, against scipy)."""
    import scipy.special
    import scipy.stats

    from esper_ab.stats._lazy import special, sps

    assert sps.spearmanr is scipy.stats.spearmanr and special.ndtri is scipy.special.ndtri
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    assert sps.spearmanr(x, y).pvalue == scipy.stats.spearmanr(x, y).pvalue
    assert special.ndtri(0.975) == scipy.stats.norm.ppf(0.975)
