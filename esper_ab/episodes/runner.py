"""One replicate of the experiment: uncensored, placebo-controlled ground truth (stage 4).

``run_episode(config, replicate=r)``:

1. **Pretrain** the host, or load it from ``cache_dir`` (keyed by a content hash of the
   workload config, the replicate and the device type), so every strategy reuses it.
2. **Germinate** one seed per blueprint (the placebo included) at each slot and **incubate**
   all of them at once in TRAINING: detached input, straight-through output. The host is
   bit-identical to a seedless run.
3. **Record** per step the host's and every seed's ``GradStats`` (before clipping) and the
   first-order term ``-<dL/dy, s - h>`` with its pieces.
4. **Measure the value of every seed** (no censoring): fork at the decision point, blend over
   a fixed ramp, train a fixed horizon, compare held-out loss and accuracy with a placebo
   fork that reads the same batches in the same order.

The result holds two tables (``seeds``: one row per seed; ``trace``: one row per seed and
incubation step) and is cached on disk, so a second call with the same config is a load.
``run_closed_loop`` runs the gate in the loop instead (``esper_ab.episodes._closed_loop``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from esper_ab.episodes._memory import reused_buffers
from esper_ab.episodes.blueprints import PLACEBO
from esper_ab.episodes.decisions import gate_decisions, summarize
from esper_ab.episodes.workloads import (
    WorkloadConfig,
    config_hash,
    resolve_workload,
    workload_config,
)
from esper_ab.errors import bad_value

__all__ = [
    "DEFAULT_CACHE_DIR",
    "ClosedLoopResult",
    "EpisodeConfig",
    "EpisodeResult",
    "episode_config",
    "gate_decisions",
    "record_episode",
    "resolve_device",
    "run_closed_loop",
    "run_episode",
    "summarize",
]

DEFAULT_CACHE_DIR = Path(".esper_ab_cache")
# bump when the tables or the procedure change. An episode's format is part of its cache key:
# "episode-v1" value forks trained one at a time (every episode before batching became the
# default, and any host that cannot be stacked), "episode-v2" the CNN host's forks together
# (``_stacked``; values within float rounding of v1's, docs/PERFORMANCE.md).
EPISODE_FORMAT = "episode-v1"
BATCHED_FORMAT = "episode-v2"
Forks = Literal["batched", "serial"]
Ramp = Literal["linear", "sigmoid"]
Size = Literal["default", "tiny"]
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class EpisodeConfig:
    """Everything that fixes an episode besides the replicate and the device.

    An *epoch* is ``steps_per_epoch`` optimizer steps (the gate's unit of time). The value
    forks blend over ``blend_epochs`` and then train ``horizon_epochs`` more.
    """

    workload: WorkloadConfig
    slots: tuple[str, ...] = ()          # empty: the workload's default slot
    blueprints: tuple[str, ...] = ()     # empty: the whole catalog; the placebo is always in
    steps_per_epoch: int = 10
    incubation_epochs: int = 12
    blend_epochs: int = 2
    horizon_epochs: int = 10
    ramp: Ramp = "linear"
    batch_size: int = 32
    host_lr: float = 1e-3
    seed_lr: float = 1e-2
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    margin_pp: float = 1.0
    eval_batch_size: int = 1024
    # "batched": the value forks are trained together where the host can be stacked (the
    # CNN host), else one at a time; "serial": always one at a time (reproduces episodes
    # recorded before batching, and serves their caches). Keyed through ``episode_format``.
    forks: Forks = dataclasses.field(default="batched", metadata={"keyed_by_format": True})

    def __post_init__(self) -> None:
        for name in ("steps_per_epoch", "incubation_epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise bad_value(f"EpisodeConfig.{name}", getattr(self, name), "use 1 or more")
        for name in ("blend_epochs", "horizon_epochs"):
            if getattr(self, name) < 0:
                raise bad_value(f"EpisodeConfig.{name}", getattr(self, name), "use 0 or more")
        if self.forks not in ("batched", "serial"):
            raise bad_value("EpisodeConfig.forks", self.forks, "use 'batched' or 'serial'")
        if self.ramp not in ("linear", "sigmoid"):
            raise bad_value("EpisodeConfig.ramp", self.ramp, "use 'linear' or 'sigmoid'")
        for name in ("host_lr", "seed_lr"):
            if not getattr(self, name) > 0:
                raise bad_value(f"EpisodeConfig.{name}", getattr(self, name),
                                "use a positive learning rate")
        object.__setattr__(self, "slots", tuple(self.slots))
        object.__setattr__(self, "blueprints", tuple(self.blueprints))

    @property
    def resolved_slots(self) -> tuple[str, ...]:
        return self.slots or (self.workload.default_slot,)

    @property
    def resolved_blueprints(self) -> tuple[str, ...]:
        names = self.blueprints or self.workload.catalog.names()
        return tuple(dict.fromkeys([*names, PLACEBO]))

    def seed_keys(self) -> tuple[tuple[str, str], ...]:
        """(slot, blueprint) of every seed an episode grows: each resolved blueprint at each
        slot it fits (a blueprint named in ``blueprints`` must fit every slot)."""
        from esper_ab.episodes.workloads.contracts import fitting_keys

        return fitting_keys(self.workload, self.resolved_slots, self.resolved_blueprints)

    def validate(self) -> None:
        """Check slots and blueprints against the host and the catalog (raises ConfigError):
        every slot is the host's and every named blueprint fits every slot."""
        from esper_ab.episodes.workloads.contracts import check_slots_and_blueprints

        check_slots_and_blueprints(self.workload, self.resolved_slots, self.blueprints)

    def replace(self, **changes: Any) -> EpisodeConfig:
        return dataclasses.replace(self, **changes)

    @functools.cached_property
    def batched_forks(self) -> bool:
        """True when this episode's value forks are trained together: ``forks`` asks for it
        and the workload's host can be stacked."""
        from esper_ab.episodes import _stacked

        return self.forks == "batched" and _stacked.supports(
            self.workload.plugin.build_host(self.workload))


def episode_format(config: EpisodeConfig) -> str:
    """The format an episode of ``config`` is recorded in (part of its cache key)."""
    return BATCHED_FORMAT if config.batched_forks else EPISODE_FORMAT


def episode_key(config: EpisodeConfig, replicate: int, device_type: str) -> str:
    """The cache key of one replicate of ``config`` recorded on ``device_type``."""
    return config_hash(config, replicate, device_type, episode_format(config))


def episode_config(workload: str, *, size: Size = "default", data_dir: str | None = None,
                   slots: Sequence[str] = (), blueprints: Sequence[str] = (),
                   data: dict[str, Any] | None = None, **overrides: Any) -> EpisodeConfig:
    """The episode config of a named workload. ``size="tiny"`` is a seconds-long episode for
    tests and smoke runs (small data, short pretraining, 10 epochs of 2 steps).
    ``workload`` is a registered name or ``module:attribute``; its plug-in supplies the
    tiny data options and its own episode defaults."""
    if size not in ("default", "tiny"):
        raise bad_value("size", size, "use 'default' or 'tiny'")
    plugin = resolve_workload(workload)
    data_overrides = dict(plugin.tiny if size == "tiny" else {})
    data_overrides.update(data or {})
    wl = workload_config(workload, data_dir=data_dir, **data_overrides)
    base: dict[str, Any] = dict(plugin.episode)
    if size == "tiny":
        wl = wl.replace(pretrain=dataclasses.replace(wl.pretrain, steps=40))
        base.update({"steps_per_epoch": 2, "incubation_epochs": 10, "blend_epochs": 1,
                     "horizon_epochs": 2, "eval_batch_size": 256})
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(EpisodeConfig)})
    if unknown:
        raise bad_value("episode option", unknown[0],
                        f"use fields of EpisodeConfig: {[f.name for f in dataclasses.fields(EpisodeConfig)]}")
    config = EpisodeConfig(workload=wl, slots=tuple(slots), blueprints=tuple(blueprints),
                           **{**base, **overrides})
    config.validate()
    return config


@dataclass(frozen=True)
class EpisodeTimings:
    """Wall-clock seconds per phase; ``loaded`` when the whole result came from the cache."""

    pretrain_s: float
    incubate_s: float
    value_s: float
    pretrain_cached: bool
    loaded: bool

    @property
    def total_s(self) -> float:
        return self.pretrain_s + self.incubate_s + self.value_s


@dataclass(frozen=True, eq=False)
class EpisodeResult:
    """The two tables of one replicate. ``seeds``: replicate, workload, slot, blueprint,
    seed_id, n_params (total and per layer type), dead_at_birth, rms_ratio_median/last,
    value_acc_pp (+ its paired standard error over held-out targets), value_loss (placebo
    loss minus seed loss: positive is better), valuable, the held-out numbers of both forks
    and removal_cost_pp. ``trace``: replicate, seed_id, blueprint, slot, epoch (from 1),
    step, train_loss, ``host_*`` and ``seed_*`` GradStats columns, first_order,
    grad_out_norm, delta_norm, first_order_cosine and rms_ratio."""

    config: EpisodeConfig
    replicate: int
    device: str
    seeds: pd.DataFrame
    trace: pd.DataFrame
    timings: EpisodeTimings
    # torch's intra-op threads when the episode was computed: float sums are split by
    # thread, so another count rounds differently and 120 training steps amplify it (the
    # CNN flagship's replicate 20, 1 vs 2 threads: seed values moved by a median 0.15 pp,
    # at most 6.8 pp, and 2 of 27 valuable labels flipped; docs/PERFORMANCE.md). Recording
    # runs one thread per CPU of its task (default 1); the cache key leaves the count out.
    threads: int | None = None
    torch_version: str | None = None

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``<workload>-r<replicate>-seeds.parquet`` / ``-trace.parquet`` (+ json)."""
        from esper_ab.episodes.tables import write_tables

        prefix = f"{self.config.workload.name}-r{self.replicate}-"
        return write_tables(Path(directory), self.seeds, self.trace, _meta(self), prefix=prefix)


def _meta(result: EpisodeResult) -> dict[str, Any]:
    from esper_ab.episodes.workloads import jsonable as _jsonable

    config = result.config
    return {"format": episode_format(config),
            "forks": "batched" if config.batched_forks else "serial",
            "replicate": result.replicate, "device": result.device,
            "config": _jsonable(config),
            "timings": dataclasses.asdict(result.timings),
            "threads": result.threads, "torch": result.torch_version}


def resolve_device(device: str = "cpu"):
    """``cpu``, ``cuda`` (falls back to the CPU with a warning when CUDA is missing) or
    ``auto`` (CUDA when available)."""
    import torch

    if device not in ("cpu", "cuda", "auto") and not device.startswith("cuda:"):
        raise bad_value("device", device, "use cpu, cuda, cuda:N or auto")
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda" if device == "auto" else device)
    if device != "auto":
        warnings.warn(f"device={device!r} asked for but CUDA is not available: running on the "
                      "CPU", RuntimeWarning, stacklevel=2)
    return torch.device("cpu")


def _cache_root(cache_dir: str | Path | None) -> Path | None:
    return None if cache_dir is None else Path(cache_dir)


def run_episode(config: EpisodeConfig, *, replicate: int,
                cache_dir: str | Path | None = DEFAULT_CACHE_DIR, device: str = "cpu",
                progress: Progress | None = None) -> EpisodeResult:
    """Run (or load from ``cache_dir``) one replicate. ``cache_dir=None`` caches nothing."""
    dev = resolve_device(device)
    config.validate()
    root = _cache_root(cache_dir)
    key = episode_key(config, replicate, dev.type)
    if root is not None:
        from esper_ab.episodes.tables import cached_tables, read_tables

        folder = root / "episodes" / key
        if cached_tables(folder):         # verified against its index (episodes._cache)
            seeds, trace, meta = read_tables(folder)
            t = meta.get("timings", {})
            timings = EpisodeTimings(float(t.get("pretrain_s", 0.0)),
                                     float(t.get("incubate_s", 0.0)),
                                     float(t.get("value_s", 0.0)),
                                     bool(t.get("pretrain_cached", False)), loaded=True)
            return EpisodeResult(config, replicate, dev.type, seeds, trace, timings,
                                 meta.get("threads"), meta.get("torch"))
    result = _compute_episode(config, replicate=replicate, device=dev, cache_root=root,
                              progress=progress)
    if root is not None:
        from esper_ab.episodes.tables import install_tables, write_tables

        folder = root / "episodes" / key
        tmp = folder.with_name(f"{key}.tmp{os.getpid()}")
        try:
            write_tables(tmp, result.seeds, result.trace, _meta(result))
            install_tables(tmp, folder)   # sealed with its index, then renamed into place
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


@reused_buffers()
def _compute_episode(config: EpisodeConfig, *, replicate: int, device, cache_root: Path | None,
                     progress: Progress | None) -> EpisodeResult:
    import torch

    from esper_ab.episodes._incubation import (
        IncubationSettings,
        SeedKey,
        germinate,
        incubate,
        load_host,
    )
    from esper_ab.episodes._training import evaluate, pretrain_host
    from esper_ab.episodes._value_forks import ForkSettings, measure_values
    from esper_ab.episodes.tables import param_counts_by_type, seed_table, trace_table
    from esper_ab.episodes.workloads import build_workload

    workload = build_workload(config.workload, seed=replicate).to(device)
    keys = [SeedKey(slot, bp) for slot, bp in config.seed_keys()]
    settings = IncubationSettings(
        steps_per_epoch=config.steps_per_epoch, epochs=config.incubation_epochs,
        batch_size=config.batch_size, host_lr=config.host_lr, seed_lr=config.seed_lr,
        weight_decay=config.weight_decay, grad_clip=config.grad_clip)
    forks = ForkSettings(blend_steps=config.blend_epochs * config.steps_per_epoch,
                         horizon_steps=config.horizon_epochs * config.steps_per_epoch,
                         ramp=config.ramp, eval_batch_size=config.eval_batch_size)
    host_dir = None if cache_root is None else cache_root / "hosts"
    t0 = time.perf_counter()
    start, pretrain_cached = pretrain_host(workload, replicate=replicate, device=device,
                                           cache_dir=host_dir)
    t1 = time.perf_counter()
    n_epochs = config.incubation_epochs

    def on_epoch(epoch: int, _records) -> None:
        if progress is not None:
            progress("incubate", epoch + 1, n_epochs)

    incubated = incubate(workload, start, keys, settings, replicate=replicate, device=device,
                         on_epoch=on_epoch)
    t2 = time.perf_counter()
    host, _ = load_host(workload, incubated.host, settings_lr=config.host_lr,
                        weight_decay=config.weight_decay, device=device)
    decision = evaluate(host, workload, device=device, batch_size=config.eval_batch_size)
    seeds = germinate(keys, host, topology=workload.topology, replicate=replicate, device=device)
    counts = {sid: param_counts_by_type(m) for sid, m in seeds.items()}
    widths = {slot: host.slot_width(slot) for slot in config.resolved_slots}
    done = [0]

    def on_fork() -> None:
        done[0] += 1
        if progress is not None:
            progress("value", done[0], len(keys) + 1)

    control, outcomes = measure_values(workload, incubated, settings, forks,
                                       replicate=replicate, device=device, on_fork=on_fork,
                                       batched=config.batched_forks)
    t3 = time.perf_counter()
    trace = trace_table(incubated, replicate=replicate, workload=config.workload.name)
    table = seed_table(incubated, control, outcomes, replicate=replicate,
                       workload=config.workload.name, slot_widths=widths, param_counts=counts,
                       margin_pp=config.margin_pp, decision_heldout=(decision.loss,
                                                                     decision.acc),
                       trace=trace)
    timings = EpisodeTimings(t1 - t0, t2 - t1, t3 - t2, pretrain_cached, loaded=False)
    return EpisodeResult(config, replicate, device.type, table, trace, timings,
                         torch.get_num_threads(), torch.__version__)


def record_episode(config: EpisodeConfig, *, replicate: int, out_dir: str | Path,
                   cache_dir: str | Path | None = DEFAULT_CACHE_DIR, device: str = "cpu",
                   progress: Progress | None = None) -> EpisodeResult:
    """``run_episode`` (cached) and write its tables under ``out_dir``."""
    result = run_episode(config, replicate=replicate, cache_dir=cache_dir, device=device,
                         progress=progress)
    result.save(out_dir)
    return result


# -- closed loop ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ClosedLoopResult:
    """The gate in the loop. ``table``: one row per (slot, blueprint) with admitted,
    blend_epoch (the gate's pass epoch, None if never), steps_to_blend, final held-out
    accuracy and loss of the host with the admitted seed, the same for the no-seed control,
    and gain_vs_control_pp."""

    config: EpisodeConfig
    replicate: int
    gate_config: Any
    table: pd.DataFrame


def run_closed_loop(config: EpisodeConfig, *, replicate: int, gate: Any = "esper_lite_baseline",
                    cache_dir: str | Path | None = DEFAULT_CACHE_DIR, device: str = "cpu",
                    progress: Progress | None = None) -> ClosedLoopResult:
    """Run every seed alone with ``gate`` (a Gate, GateConfig, preset or YAML path) deciding
    when it blends; every run trains for the same total number of steps."""
    from esper_ab.episodes._closed_loop import closed_loop
    from esper_ab.gate import Gate, build_gate

    gate_obj = gate if isinstance(gate, Gate) else build_gate(gate)
    config.validate()
    table = closed_loop(config, replicate=replicate, gate=gate_obj,
                        device=resolve_device(device), cache_root=_cache_root(cache_dir),
                        progress=progress)
    return ClosedLoopResult(config, replicate, gate_obj.config, table)
