"""The supported hook into esper-lite's vectorized PPO trainer (the Simic path).

Simic measures gradients in its own batch code, not through the slot, so the plug-in needs
two hooks there, both on esper-lite names that are private to it:

- ``esper.simic.training.batch_ops._collect_gradient_telemetry_for_batch(model, slots,
  env_dev)``: called on exactly the batches Simic measures (``batch_step % stride == 0``),
  after ``backward()`` (and AMP unscaling), before clipping. The hook measures there too
  (``plugin.step(model)``), then calls the original;
- ``esper.simic.training.parallel_env_state.ParallelEnvState.reset_episode_state(slots)``:
  an environment's episode reset, where Simic sets every slot's EMA to 0.0. The hook installs
  the plug-in in the environment's model (idempotent) and starts its episode.

:func:`install_ppo_hooks` checks that both exist with the signatures it was written for
(esper-lite 0.2.0, commit 2016337) and refuses in one line otherwise. It returns a handle
whose ``remove()`` (or ``with`` block end) puts esper-lite's functions back.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch

from esper_ab.errors import ConfigError
from esper_ab.integrations.esper_lite._plugin import EsperLiteG2

BATCH_OPS = "esper.simic.training.batch_ops"
ENV_STATE = "esper.simic.training.parallel_env_state"
MEASURE = "_collect_gradient_telemetry_for_batch"
RESET = "reset_episode_state"
TESTED = "esper-lite 0.2.0 (commit 2016337)"


def _params(fn: Any) -> list[str]:
    try:
        return list(inspect.signature(inspect.unwrap(fn)).parameters)
    except (TypeError, ValueError):
        return []


def _targets() -> tuple[Any, Any, Any, Any]:
    try:
        batch_ops = importlib.import_module(BATCH_OPS)
        env_state = importlib.import_module(ENV_STATE)
    except ImportError as exc:
        raise ConfigError(f"esper-lite's vectorized trainer is not importable ({exc}): put "
                          f"esper-lite's src/ on PYTHONPATH; this helper supports {TESTED}") \
            from None
    measure = getattr(batch_ops, MEASURE, None)
    cls = getattr(env_state, "ParallelEnvState", None)
    reset = getattr(cls, RESET, None)
    if any(getattr(f, "esper_ab_plugin", None) is not None for f in (measure, reset)):
        raise ConfigError("esper-ab's PPO hooks are installed already: remove() them "
                          "before installing another plug-in")
    if not callable(measure) or _params(measure)[:3] != ["model", "slots_with_active_seeds",
                                                          "env_dev"]:
        raise ConfigError(f"{BATCH_OPS}.{MEASURE}(model, slots_with_active_seeds, env_dev) is "
                          f"missing or changed in this esper-lite: this helper supports {TESTED}; "
                          "call plugin.step(model) in the trainer yourself")
    if not callable(reset) or _params(reset)[:2] != ["self", "slots"]:
        raise ConfigError(f"{ENV_STATE}.ParallelEnvState.{RESET}(self, slots) is missing or "
                          f"changed in this esper-lite: this helper supports {TESTED}; call "
                          "plugin.install(model) and plugin.start_episode(model) yourself")
    return batch_ops, measure, cls, reset


class PPOHooks:
    """Installed hooks; ``remove()`` (or leaving a ``with`` block) restores esper-lite."""

    def __init__(self, plugin: EsperLiteG2):
        if not isinstance(plugin, EsperLiteG2):
            raise ConfigError(f"install_ppo_hooks takes an EsperLiteG2, not "
                              f"{type(plugin).__name__}")
        if plugin.path != "simic":
            raise ConfigError("esper-lite's PPO trainer measures on the Simic path: create the "
                              "plug-in with EsperLiteG2(gate, path='simic')")
        batch_ops, measure, cls, reset = _targets()
        self.plugin = plugin
        self._restore = [(batch_ops, MEASURE, measure), (cls, RESET, reset)]

        @torch.compiler.disable
        def measured(model: Any, slots_with_active_seeds: Any, env_dev: Any,
                     *args: Any, **kwargs: Any) -> Any:
            plugin.install(model)
            plugin.step(model)
            return measure(model, slots_with_active_seeds, env_dev, *args, **kwargs)

        def reset_episode(env: Any, slots: Any, *args: Any, **kwargs: Any) -> Any:
            out = reset(env, slots, *args, **kwargs)
            plugin.install(env.model)
            plugin.start_episode(env.model)
            return out

        measured.esper_ab_plugin = plugin          # type: ignore[attr-defined]
        reset_episode.esper_ab_plugin = plugin     # type: ignore[attr-defined]
        setattr(batch_ops, MEASURE, measured)
        setattr(cls, RESET, reset_episode)

    def remove(self) -> None:
        for owner, name, original in self._restore:
            setattr(owner, name, original)
        self._restore = []

    def __enter__(self) -> PPOHooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def install_ppo_hooks(plugin: EsperLiteG2) -> PPOHooks:
    """Hook ``plugin`` (``path='simic'``) into esper-lite's vectorized PPO trainer: per-batch
    measurement where Simic measures, and each environment's episode reset (which also
    installs the plug-in in that environment's model). Fails in one line when esper-lite is
    not importable or lacks what this patches."""
    return PPOHooks(plugin)
