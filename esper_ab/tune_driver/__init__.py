"""Stage 8b, tune_driver: a study run as a Ray Tune sweep (``esper-ab sweep``).

- ``tune_runner``: **the only module that imports ``ray.tune``** (:func:`run_sweep`): the
  ``Tuner``, its Optuna searcher, ASHA, the tracking callback, ``--resume``.
- ``batches``: replay fidelity that amortizes: one Tune trial scores a batch of Optuna configs.
- ``trainables``: the trial bodies Tune runs (and the worker warm-up hook).

Everything else it needs (spec, studies, lifecycle, runtime, recording, confirmation,
summary) comes from the study foundation, ``esper_ab.study``; it never imports
``esper_ab.fidelity``. This ``__init__`` imports nothing (a Tune worker loads only
``trainables``); import the modules by their paths.
"""

__all__ = ["batches", "trainables", "tune_runner"]
