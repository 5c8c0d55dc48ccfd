"""Stage 8a, study: the foundation every sweep driver stands on; it knows neither Ray Tune
(``esper_ab.tune_driver``) nor the in-process drivers (``esper_ab.fidelity``).

- ``spec`` (+ ``_spec_parts``): the pydantic schema of a space YAML (:func:`load_sweep_spec`).
- ``space``: the search space for Optuna (define-by-run) and grids.
- ``studies``: Ray-free Optuna samplers, journal storage and the sweep folder.
- ``lifecycle``: the sweep folder + parent run + FAILED/orphan handling, shared by every
  driver; ``resume``, ``preflight``, ``writer``.
- ``runtime``: Ray core (connect, warm workers, devices), no ``ray.tune``; ``resources``,
  ``auth``.
- ``recording``: record a space's episodes as Ray tasks (parallel, resumable).
- ``replay_search``: the in-process Optuna search over replay (batched asks, one scoring
  pass); ``finalists``: the search and its best configs logged as child runs.
- ``confirmation``: the held-out verdict (``judge``, ``confirm_by_replay``) and closed-loop
  runs as Ray tasks; ``holdout``: the confirmation stage every driver calls; ``agreement``:
  how well replay predicted the closed loop.
- ``analysis``, ``outcome``, ``report``, ``summary``: the post-sweep verdict, ``report.html``
  and the console summary.

This ``__init__`` re-exports the Ray- and MLflow-free parts only; import the other modules
by their module paths.
"""

from esper_ab.study.analysis import SweepAnalysis, SweepRecord, TrialRecord, pareto_front
from esper_ab.study.space import define_by_run, grid_points, params_from_flat, space_summary
from esper_ab.study.spec import Range, SweepSpec, load_sweep_spec, parse_sweep_spec
from esper_ab.study.studies import (
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
