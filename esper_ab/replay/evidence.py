"""Evidence for trials: where a gate's per-seed decisions come from.

``ReplayEvidence`` runs the replay engine (``esper_ab.replay.engine``) over a ``TraceSet``: the
per-step gradient statistics of recorded episodes (``esper_ab.episodes.runner``), or of
``synthetic_traces``, a generative model with the structure DOMAIN.md describes (parameter
counts spanning orders of magnitude, per-blueprint gradient scales, a dead-at-birth
blueprint, a zero-parameter seed, values unrelated to the gradient ratio). Synthetic traces
cost milliseconds, so the sweep machinery (Ray, Optuna, MLflow) is tested and benchmarked on
them without training anything; their numbers are illustrative, not findings.

``ReplayEvidence`` satisfies ``esper_ab.trial.Evidence``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from esper_ab.errors import DataError
from esper_ab.gate import GateConfig
from esper_ab.gradients import LAYER_TYPES
from esper_ab.replay.engine import TraceSet, calibration_data, replay_decisions
from esper_ab.strategies import get_strategy

__all__ = ["PLANTED_BLUEPRINTS", "PLANTED_SLOTS", "SYNTHETIC_BLUEPRINTS", "ReplayEvidence",
           "SyntheticBlueprint", "evidence_for_spec", "synthetic_traces"]

_SQRT_2_PI = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class SyntheticBlueprint:
    """A simulated blueprint: parameter count, per-element gradient RMS relative to the
    host's, and the mean value (pp) of its seeds against the placebo."""

    name: str
    n_params: int
    rms_ratio: float
    value_mean_pp: float
    layer_type: str = "conv"
    regime_value_pp: float = 0.0   # planted: value +/- half of it at the early / late slot
    regime_ratio: float = 1.0      # planted: gradient RMS x sqrt(it) early, / sqrt(it) late


# Shaped after DOMAIN.md §3-4 at C = 16 (illustrative).
SYNTHETIC_BLUEPRINTS: tuple[SyntheticBlueprint, ...] = (
    SyntheticBlueprint("noop", 0, 0.0, 0.0),
    SyntheticBlueprint("norm", 33, 0.115, 0.4, "norm"),
    SyntheticBlueprint("attention", 144, 0.013, 1.5, "linear"),
    SyntheticBlueprint("conv_small", 288, 0.0, 0.0),
    SyntheticBlueprint("depthwise", 432, 1.1, -0.3),
    SyntheticBlueprint("conv_light", 2336, 1.1, -0.5),
    SyntheticBlueprint("bottleneck", 1440, 4.0, -1.5),
)


# A planted better gate (``synthetic_traces(planted=True)``): every blueprint's seeds sit at
# two slots. At the early slot a seed helps (value + regime/2), at the late slot it hurts
# (value - regime/2), and the early slot's output gradient is larger, so the seed's gradient
# RMS is sqrt(ratio) times its blueprint's there and 1/sqrt(ratio) times it at the late slot.
# Within every blueprint the gradient statistic thus tells valuable seeds from the rest,
# but the blueprints' scales span three decades, so one threshold cannot: a per-blueprint
# threshold fitted to the value (``value_calibrated``) is the better gate that exists in
# truth. The measured table is in ``esper_ab.episodes.workloads`` docs (README findings).
PLANTED_BLUEPRINTS: tuple[SyntheticBlueprint, ...] = (
    SyntheticBlueprint("norm", 33, 0.115, 0.6, "norm", 4.0, 6.0),
    SyntheticBlueprint("attention", 144, 0.013, 0.5, "linear", 4.0, 6.0),
    SyntheticBlueprint("depthwise", 432, 1.1, 0.5, "conv", 4.0, 6.0),
    SyntheticBlueprint("conv_light", 2336, 1.1, 0.4, "conv", 4.0, 6.0),
    SyntheticBlueprint("bottleneck", 1440, 4.0, 0.3, "conv", 4.0, 6.0),
)
PLANTED_SLOTS = ("early", "late")


def synthetic_traces(*, replicates: Sequence[int] = (0, 1), epochs: int = 12,
                     steps_per_epoch: int = 4, seeds_per_blueprint: int = 2,
                     blueprints: Sequence[SyntheticBlueprint] = SYNTHETIC_BLUEPRINTS,
                     host_params: int = 6400, value_sd_pp: float = 1.0,
                     margin_pp: float = 1.0, first_order_signal: float | None = 0.5,
                     nonfinite_rate: float = 0.0, seed: int = 0,
                     planted: bool = False) -> Any:
    """A ``TraceSet`` drawn from the generative model above (deterministic given ``seed``).

    Per replicate: a host RMS per step (log-normal), a replicate effect on every value;
    per seed: value = blueprint mean + replicate effect + noise (pp), gradient RMS = host RMS
    x the blueprint's ratio x log-normal step noise; ``first_order`` is a noisy per-step
    reading of the value (``first_order_signal=None``: not recorded, NaN). A fraction
    ``nonfinite_rate`` of seed steps carries a NaN gradient. ``planted`` draws
    ``PLANTED_BLUEPRINTS`` with ``seeds_per_blueprint`` seeds at each of the two slots
    ``PLANTED_SLOTS`` (see above).
    """
    if planted and blueprints is SYNTHETIC_BLUEPRINTS:
        blueprints = PLANTED_BLUEPRINTS
    slots = PLANTED_SLOTS if planted else ("slot0",)
    seed_rows: list[dict[str, Any]] = []
    columns: dict[str, list[np.ndarray]] = {}   # one DataFrame at the end, not one per seed
    for r in replicates:
        rng = np.random.default_rng([seed, int(r)])
        steps = epochs * steps_per_epoch
        host_rms = 0.01 * np.exp(0.3 * rng.standard_normal(steps))
        effect = 0.5 * rng.standard_normal()
        for bp, slot, i in ((b, sl, i) for b in blueprints for sl in slots
                            for i in range(seeds_per_blueprint)):
            sign = 0.0 if slot == "slot0" else (1.0 if slot == "early" else -1.0)
            sid = f"{slot}/{bp.name}/{i}"
            value = (bp.value_mean_pp + sign * bp.regime_value_pp / 2 + effect
                     + value_sd_pp * rng.standard_normal())
            seed_rows.append({"replicate": int(r), "seed_id": sid, "blueprint": bp.name,
                              "value_acc_pp": value, "value_loss": -value / 100.0,
                              "valuable": bool(value >= margin_pp), "workload": "synthetic",
                              "slot": slot, "n_params": bp.n_params,
                              "dead_at_birth": bp.rms_ratio == 0.0 and bp.n_params > 0})
            rms = (host_rms * bp.rms_ratio * bp.regime_ratio ** (sign / 2)
                   * np.exp(0.5 * rng.standard_normal(steps)))
            bad = rng.random(steps) < nonfinite_rate
            if first_order_signal is None:
                fo = np.full(steps, np.nan)
            else:
                fo = first_order_signal * value / 10.0 + 0.05 * rng.standard_normal(steps)
                fo = fo if bp.n_params else np.zeros(steps)
            cols: dict[str, Any] = {
                "replicate": np.full(steps, int(r)), "seed_id": np.full(steps, sid, object),
                "blueprint": np.full(steps, bp.name, object),
                "epoch": np.repeat(np.arange(epochs), steps_per_epoch),
                "step": np.arange(steps), "first_order": fo,
                "grad_out_norm": np.ones(steps), "delta_norm": np.ones(steps)}
            cols.update(_columns("host_", host_params, host_rms, "conv",
                                 np.zeros(steps, bool)))
            cols.update(_columns("seed_", bp.n_params, rms, bp.layer_type, bad))
            for k, v in cols.items():
                columns.setdefault(k, []).append(v)
    trace = pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()})
    return TraceSet(pd.DataFrame(seed_rows), trace)


def _columns(prefix: str, numel: int, rms: np.ndarray, layer_type: str,
             bad: np.ndarray) -> dict[str, np.ndarray]:
    """GradStats.to_row columns for one parameter group over many steps."""
    n = len(rms)
    sum_sq = np.where(bad, np.nan, numel * rms ** 2)
    sum_abs = numel * rms * _SQRT_2_PI
    tensors = 0 if numel == 0 else 2
    out = {f"{prefix}sum_sq": sum_sq, f"{prefix}sum_abs": sum_abs,
           f"{prefix}numel": np.full(n, numel), f"{prefix}n_tensors": np.full(n, tensors),
           f"{prefix}n_with_grad": np.full(n, tensors), f"{prefix}n_nonfinite": bad.astype(int),
           f"{prefix}n_zero_elements": np.where(rms == 0, numel, 0)}
    for t in LAYER_TYPES:
        own = t == layer_type
        for f, v in (("sum_sq", sum_sq), ("sum_abs", sum_abs), ("numel", np.full(n, numel)),
                     ("n_tensors", np.full(n, tensors))):
            out[f"{prefix}{t}_{f}"] = v if own else np.zeros(n)
    return out


class ReplayEvidence:
    """Decisions of any gate from recorded traces, by the replay engine.

    Every trial sees the same replicates (common random numbers). Decision tables get a
    ``seed`` column (the seed id) so that the statistics module pairs strategies seed by seed.
    """

    def __init__(self, traces: Any, *, folds: int = 2) -> None:
        if folds < 2:
            raise DataError(f"folds={folds} is invalid: cross-fitting needs at least 2")
        self.traces = traces
        self.folds = folds
        self._subsets: dict[tuple[int, ...], Any] = {}

    @property
    def replicates(self) -> tuple[int, ...]:
        return tuple(self.traces.replicates)

    @property
    def min_replicates_for_calibration(self) -> int:
        return self.folds

    def _subset(self, replicates: Sequence[int]) -> Any:
        key = tuple(sorted(int(r) for r in replicates))
        unknown = sorted(set(key) - set(self.replicates))
        if unknown:
            raise DataError(f"replicates {unknown} are not in the traces: record them first "
                            f"(traces hold {list(self.replicates)})")
        if key not in self._subsets:
            if len(self._subsets) > 64:
                self._subsets.clear()
            self._subsets[key] = self.traces.subset(key) if key != self.replicates \
                else self.traces
        return self._subsets[key]

    def decisions(self, gate: GateConfig, *, label: str,
                  replicates: Sequence[int]) -> pd.DataFrame:
        sub = self._subset(replicates)
        table = replay_decisions(sub, gate, label=label,
                                 folds=min(self.folds, len(replicates))).decisions
        return table.assign(seed=table["seed_id"])

    def fit_calibration(self, gate: GateConfig, *, replicates: Sequence[int]) -> GateConfig:
        """``gate`` with its strategy fitted on every row of ``replicates`` (for export)."""
        strategy = get_strategy(gate.strategy, **dict(gate.strategy_params))
        if not strategy.needs_calibration:
            return gate
        strategy.fit(calibration_data(self._subset(replicates), strategy, replicates))
        return replace(gate, calibration=strategy.fitted_state())


def evidence_for_spec(spec: Any, *, cache_dir: str | Path,
                      device: str = "cpu") -> ReplayEvidence:
    """The evidence a sweep's trials share, from the spec's ``traces`` section."""
    src = spec.traces
    if src.source == "synthetic":
        traces = synthetic_traces(replicates=spec.replicates, **src.synthetic)
    elif src.source == "directory":
        traces = TraceSet.load(src.path)
        missing = sorted(set(spec.replicates) - set(traces.replicates))
        if missing:
            raise DataError(f"traces in {src.path!r} lack replicates {missing}: record them "
                            "('esper-ab record SPACE.yaml') or list only recorded replicates")
        traces = traces.subset(spec.replicates)
    else:
        traces = record_traces(spec, cache_dir=Path(cache_dir), device=device)
    return ReplayEvidence(traces, folds=spec.calibration_folds)


def record_traces(spec: Any, *, cache_dir: Path, device: str = "cpu") -> Any:
    """Record (or load from ``cache_dir``) the episodes of every workload x replicate.

    With several workloads, seed ids are prefixed with the workload name; replicate ``r`` of
    every workload stays one independent unit (a conservative clustering).
    """
    parts = []
    for entry in spec.workloads:
        traces = _workload_traces(entry, spec.replicates, cache_dir=cache_dir, device=device)
        if len(spec.workloads) > 1:
            prefix = f"{entry.name}:"
            traces = TraceSet(traces.seeds.assign(seed_id=prefix + traces.seeds["seed_id"]),
                              traces.trace.assign(seed_id=prefix + traces.trace["seed_id"]))
        parts.append(traces)
    return parts[0] if len(parts) == 1 else TraceSet.concat(parts)


def _workload_traces(entry: Any, replicates: Sequence[int], *, cache_dir: Path,
                     device: str) -> TraceSet:
    """Record (or load from the cache) one workload's episodes, one per replicate."""
    from esper_ab.episodes import episode_config, run_episode  # torch: only when recording

    data = dict(entry.data)
    data_dir = data.pop("data_dir", None)
    config = episode_config(getattr(entry, "reference", entry.name), data_dir=data_dir, data=data,
                            slots=tuple(entry.slots), blueprints=tuple(entry.blueprints),
                            **dict(entry.episode))
    return TraceSet.concat([TraceSet.from_episode(run_episode(config, replicate=int(r),
                                                              cache_dir=cache_dir,
                                                              device=device))
                            for r in replicates])
