"""Optuna's TPE sampler, asking a batch's configs from one history only once.

A batched sweep asks a whole batch of configs (up to 64) while no trial is told: the
``Pipeline`` (``esper_ab.study.studies``) tells an end only between asks, and a
``Lockstep`` between rounds, so every ask of a batch (of a round) sees the same finished
trials. Optuna's ``TPESampler`` splits those trials into "below" and "above" and builds both
Parzen estimators again for every parameter of every ask -- most of an ask's time with a
few hundred trials, and on the critical path: a slot waits for its next batch's asks.

``round_cached`` keeps the split and the "below" estimator while the finished trials stay
the same (keyed by their numbers and the search space asked, in order): the split and
the "below" estimator depend on the finished trials alone, and the draws take the sampler's
random state in the same order, so every config is the one the plain sampler draws
(``tests/sweeps/test_round_tpe.py`` compares them with a plain ``TPESampler``). With
``constant_liar`` (Optuna's default) the round's running trials join "above", which is then
built for each ask as Optuna builds it; without, "above" is kept too. Building it reads every
trial's parameters into the estimator's arrays; a trial's values never change once it holds
them, so each trial's row is read once (``_get_internal_repr``) and the arrays are made from
the kept rows, in the trials' order, as Optuna makes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.samplers import TPESampler
from optuna.samplers._tpe.sampler import _split_trials, default_gamma, default_gamma_multiobjective
from optuna.trial import TrialState

__all__ = ["round_cached"]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_CACHES = ("_round_cache", "_repr_cache")
_UNREAD = object()


class _RoundCachedTPE(TPESampler):
    """``TPESampler`` whose split and Parzen estimators are kept per set of finished trials
    (no state of its own beyond that cache: ``round_cached`` turns a built sampler into one).
    """

    def __getstate__(self) -> dict[str, Any]:     # Tune pickles its searcher: no cache
        return {k: v for k, v in self.__dict__.items() if k not in _CACHES}

    def _get_internal_repr(self, trials: list[Any], search_space: dict[str, Any],
                           study: Any) -> dict[str, np.ndarray]:
        """Optuna's arrays of the trials' internal values, each trial's row read once. The
        trial being asked is never among ``trials``, and the planner asks one trial at a time:
        every other trial has all the parameters it will ever have, and a value never changes
        once set, so a row (or its absence, for a trial without one of the names) is final."""
        caches = self.__dict__.setdefault("_repr_cache", {})
        key = (id(study._storage), study._study_id,
               tuple((name, repr(dist)) for name, dist in search_space.items()))
        cache = caches.setdefault(key, {})
        names, rows = search_space.keys(), []
        for trial in trials:
            row = cache.get(trial.number, _UNREAD)
            if row is _UNREAD:
                params = self._get_params(trial, study)
                row = tuple(dist.to_internal_repr(params[name])
                            for name, dist in search_space.items()) \
                    if names <= params.keys() else None
                cache[trial.number] = row
            if row is not None:
                rows.append(row)
        return {name: np.asarray([row[i] for row in rows]) for i, name in enumerate(names)}

    def _sample(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        liar = self._constant_liar     # running trials go "above" (Optuna's default since 4)
        trials = study._get_trials(deepcopy=False, states=_FINISHED + (TrialState.RUNNING,)
                                   if liar else _FINISHED, use_cache=not liar)
        running = [t for t in trials if t.state == TrialState.RUNNING and t.number != trial.number]
        finished = [t for t in trials if t.state != TrialState.RUNNING]
        history = tuple(t.number for t in finished)
        cache = getattr(self, "_round_cache", None)
        if cache is None or cache[0] != history:
            cache = self._round_cache = (history, {})
        key = tuple((name, repr(dist)) for name, dist in search_space.items())
        if key not in cache[1]:    # Optuna's split of the finished trials, and "below"
            if self._gamma is None:
                self._gamma = default_gamma if len(study.directions) <= 1 \
                    else default_gamma_multiobjective
            below, above = _split_trials(study, finished, self._gamma(len(finished)))
            cache[1][key] = (self._build_parzen_estimator(study, search_space, below,
                                                          handle_below=True), above, None)
        mpe_below, above, mpe_above = cache[1][key]
        if running:     # as Optuna's split: the running trials above, in number order
            mpe_above = self._build_parzen_estimator(
                study, search_space, sorted(above + running, key=lambda t: t.number),
                handle_below=False)
        elif mpe_above is None:
            mpe_above = self._build_parzen_estimator(study, search_space, above,
                                                     handle_below=False)
            cache[1][key] = (mpe_below, above, mpe_above)
        samples = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        ret = TPESampler._compare(samples,
                                  self._compute_acquisition_func(samples, mpe_below, mpe_above))
        for name, dist in search_space.items():
            ret[name] = dist.to_external_repr(ret[name])
        return ret


def round_cached(sampler: Any) -> Any:
    """``sampler`` itself, made to keep a round's estimators when it is a plain
    ``TPESampler``; any other sampler is returned as it is."""
    if type(sampler) is TPESampler:
        sampler.__class__ = _RoundCachedTPE
    return sampler
