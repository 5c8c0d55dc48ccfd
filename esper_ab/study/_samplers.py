"""Optuna samplers that survive pickling (imported lazily by ``studies.optuna_sampler``).

Ray Tune pickles its searcher, sampler included, into the experiment state as soon as a
``Tuner`` is built. Optuna 5's GA samplers hold a ``threading.Lock`` (``_thread_lock``, which
guards their generation cache), so a plain ``NSGAIISampler`` makes ``tune.Tuner(...)`` fail
with "cannot pickle '_thread.lock' object".
"""

from __future__ import annotations

import threading
from typing import Any

import optuna


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """``NSGAIISampler`` whose pickle leaves the lock out; unpickling makes a fresh one."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()
