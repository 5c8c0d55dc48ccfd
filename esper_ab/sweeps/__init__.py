"""Stage 8a, sweeps: one study of gate configs on a Ray cluster.

- ``spec`` (+ ``_spec_parts``): the pydantic schema of a space YAML (:func:`load_sweep_spec`).
- ``space``: the search space for Optuna (define-by-run) and grids.
- ``studies``: Ray-free Optuna samplers, journal storage and the sweep folder.
- ``runtime``: Ray core (connect, warm workers, devices), no ``ray.tune``.
- ``auth``: Ray token auth for local and job-client use.
- ``tune_runner``: **the only module that imports ``ray.tune``** (:func:`run_sweep`).
- ``lifecycle``: the sweep folder + parent run + FAILED/orphan handling, shared by every
  entry point.
- ``analysis``, ``report``, ``summary``: the post-sweep verdict, ``report.html`` and the console
  summary.

This ``__init__`` re-exports the Ray- and MLflow-free parts only; import ``runtime``,
``tune_runner``, ``lifecycle`` and ``summary`` by their module paths.
"""

from esper_ab.sweeps.analysis import SweepAnalysis, SweepRecord, TrialRecord, pareto_front
from esper_ab.sweeps.space import define_by_run, grid_points, params_from_flat, space_summary
from esper_ab.sweeps.spec import Range, SweepSpec, load_sweep_spec, parse_sweep_spec
from esper_ab.sweeps.studies import (
    BatchedJournalBackend,
    SweepFolderLock,
    optuna_sampler,
    optuna_storage,
    store_dir,
    sweep_dir_for,
)

__all__ = [
    "BatchedJournalBackend",
    "Range",
    "SweepAnalysis",
    "SweepFolderLock",
    "SweepRecord",
    "SweepSpec",
    "TrialRecord",
    "define_by_run",
    "grid_points",
    "load_sweep_spec",
    "optuna_sampler",
    "optuna_storage",
    "pareto_front",
    "params_from_flat",
    "parse_sweep_spec",
    "space_summary",
    "store_dir",
    "sweep_dir_for",
]
