"""How ``make test`` shares the suite between two pytest-xdist workers.

``make test`` runs ``pytest -n 2 --dist loadscope --no-loadscope-reorder``: each worker takes
one whole module at a time (so a module-scoped fixture, one Ray or one recording per module,
is built once, as in a serial run), in collection order. Left alone, that order is the
alphabetical one, and xdist's own reorder sorts modules by their number of tests; either way
the few long modules (a sweep killed and resumed four times: two tests, minutes) could start
last and leave one worker running them alone at the end. ``heavy_first`` moves the modules of
``HEAVY_FIRST`` (the longest ones, longest first) to the front, so that both workers start on
them and end together on short modules; the order within a module, and of every other
module, stays pytest's.

``HEAVY_FIRST``: from module times measured on 2 cores (December 2026: two serial runs and
a first ``-n 2`` run). Only the order matters, and only for the wall time: a module missing
here still runs, only later.

The Ray token: a local ``ray.init()`` writes ``~/.ray/auth_token`` when it is missing, with a
plain ``open(path, "w")``; two workers starting their first Ray at once on a fresh machine
could each write their own token, and the cluster of one would then meet the token of the
other. The xdist controller (``tests/conftest.py``) writes the token once before the workers
start, with ``esper_ab.study.auth.claim_token`` (as every embedded Ray of esper-ab does); an
existing token is never touched, and token authentication stays on.
"""

from __future__ import annotations

from typing import Any

HEAVY_FIRST = (
    "tests/sweeps/test_sweeps_kill.py",
    "tests/sweeps/test_sweeps_local.py",
    "tests/sweeps/test_faults_tracking.py",
    "tests/sweeps/test_sweeps_repro.py",
    "tests/sweeps/test_faults_disk.py",
    "tests/plugins/test_example_journey.py",
    "tests/sweeps/test_sweeps_resources.py",
    "tests/sweeps/test_sweeps_tracking.py",
    "tests/stats/test_stats_planner.py",
    "tests/sweeps/test_sweeps_cluster.py",
    "tests/sweeps/test_sweeps_jobs.py",
    "tests/episodes/workloads/test_synthetic_cnn.py",
    "tests/episodes/workloads/test_synthetic_seq.py",
    "tests/fidelity/test_fidelity_multi.py",
    "tests/stats/test_stats_slow.py",
    "tests/fidelity/test_demo.py",
    "tests/fidelity/test_fidelity_holdout.py",
    "tests/episodes/test_cache_integrity.py",
    "tests/sweeps/test_sweeps_batched.py",
)


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def heavy_first(items: list[Any], heavy: tuple[str, ...] = HEAVY_FIRST) -> list[Any]:
    """``items`` (anything with a pytest ``nodeid``) with the modules of ``heavy`` first, in
    that order; a stable sort, so everything else keeps its order."""
    rank = {m: i for i, m in enumerate(heavy)}
    return sorted(items, key=lambda it: rank.get(module_of(it.nodeid), len(heavy)))
