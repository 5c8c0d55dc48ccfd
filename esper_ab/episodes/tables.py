"""Per-seed and per-step tables of an episode, their parquet files and the result cache.
Private to ``esper_ab.episodes.runner``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from esper_ab.episodes._cache import install_folder, verified_folder
from esper_ab.episodes._incubation import Incubated
from esper_ab.episodes._value_forks import ForkOutcome
from esper_ab.gradients import LAYER_TYPES, GradStats

SEED_FILE, TRACE_FILE, META_FILE = "seeds.parquet", "trace.parquet", "episode.json"


def _rms(sum_sq: np.ndarray, numel: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(numel > 0, np.sqrt(sum_sq / np.maximum(numel, 1)), np.nan)


def trace_table(incubated: Incubated, *, replicate: int, workload: str) -> pd.DataFrame:
    """One row per (seed, incubation step): host_* and seed_* GradStats columns, the
    first-order term ``-<dL/dy, s - h>`` and its pieces ``||dL/dy||``, ``||s - h||``."""
    rows = []
    for rec in incubated.steps:
        host_cols = rec.host.to_row("host_")
        for i, key in enumerate(incubated.keys):
            fo, g_l2, d_l2 = (float(v) for v in rec.first_order[i])
            denom = g_l2 * d_l2
            rows.append({
                "replicate": replicate, "workload": workload, "slot": key.slot,
                "blueprint": key.blueprint, "seed_id": key.seed_id,
                "epoch": rec.epoch + 1, "step": rec.step, "train_loss": rec.train_loss,
                **host_cols, **rec.seeds[key.seed_id].to_row("seed_"),
                "first_order": fo, "grad_out_norm": g_l2, "delta_norm": d_l2,
                "first_order_cosine": fo / denom if denom > 0 and math.isfinite(denom)
                else math.nan,
            })
    table = pd.DataFrame(rows)
    table["rms_ratio"] = (_rms(table["seed_sum_sq"].to_numpy(), table["seed_numel"].to_numpy())
                          / _rms(table["host_sum_sq"].to_numpy(),
                                 table["host_numel"].to_numpy()))
    return table


def _dead_at_birth(stats: GradStats) -> object:
    if stats.numel == 0:
        return pd.NA  # not applicable: nothing to be dead
    return bool(stats.n_nonfinite == 0 and stats.n_zero_elements == stats.numel)


def seed_table(incubated: Incubated, control: ForkOutcome, outcomes: Mapping[str, ForkOutcome],
               *, replicate: int, workload: str, slot_widths: Mapping[str, int],
               param_counts: Mapping[str, Mapping[str, int]], margin_pp: float,
               decision_heldout: tuple[float, float], trace: pd.DataFrame) -> pd.DataFrame:
    """One row per germinated seed with its value against the placebo fork."""
    first = incubated.steps[0] if incubated.steps else None
    ratio = trace.groupby("seed_id", sort=False)["rms_ratio"]
    ratio_median, ratio_last = ratio.median(), ratio.last()
    rows = []
    for key in incubated.keys:
        out = outcomes[key.seed_id]
        diff = out.correct.astype(np.float64) - control.correct.astype(np.float64)
        n = diff.size
        se = float(diff.std(ddof=1) / math.sqrt(n)) * 100 if n > 1 else math.nan
        value_pp = 100.0 * (out.heldout_acc - control.heldout_acc)
        counts = param_counts[key.seed_id]
        rows.append({
            "replicate": replicate, "workload": workload, "slot": key.slot,
            "blueprint": key.blueprint, "seed_id": key.seed_id,
            "slot_width": slot_widths[key.slot],
            "n_params": sum(counts.values()),
            **{f"n_params_{t}": counts.get(t, 0) for t in LAYER_TYPES},
            "dead_at_birth": _dead_at_birth(first.seeds[key.seed_id]) if first else pd.NA,
            "rms_ratio_median": ratio_median.get(key.seed_id, math.nan),
            "rms_ratio_last": ratio_last.get(key.seed_id, math.nan),
            "value_acc_pp": value_pp,
            "value_acc_se_pp": se,
            "value_loss": control.heldout_loss - out.heldout_loss,
            "valuable": bool(value_pp >= margin_pp),
            "margin_pp": margin_pp,
            "heldout_acc": out.heldout_acc, "heldout_loss": out.heldout_loss,
            "placebo_heldout_acc": control.heldout_acc,
            "placebo_heldout_loss": control.heldout_loss,
            "decision_heldout_acc": decision_heldout[1],
            "decision_heldout_loss": decision_heldout[0],
            "removal_cost_pp": 100.0 * (out.heldout_acc - out.heldout_acc_seed_off),
        })
    table = pd.DataFrame(rows)
    table["dead_at_birth"] = table["dead_at_birth"].astype("boolean")
    return table


def write_tables(directory: Path, seeds: pd.DataFrame, trace: pd.DataFrame,
                 meta: Mapping[str, object], *, prefix: str = "") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    seed_path = directory / f"{prefix}{SEED_FILE}"
    trace_path = directory / f"{prefix}{TRACE_FILE}"
    seeds.to_parquet(seed_path, engine="pyarrow", index=False)
    trace.to_parquet(trace_path, engine="pyarrow", index=False)
    (directory / f"{prefix}{META_FILE}").write_text(json.dumps(meta, indent=2, sort_keys=True,
                                                               default=str))
    return seed_path, trace_path


def read_tables(directory: Path, *, prefix: str = "") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    seeds = pd.read_parquet(directory / f"{prefix}{SEED_FILE}", engine="pyarrow")
    trace = pd.read_parquet(directory / f"{prefix}{TRACE_FILE}", engine="pyarrow")
    meta = json.loads((directory / f"{prefix}{META_FILE}").read_text())
    return seeds, trace, meta


def has_tables(directory: Path, *, prefix: str = "") -> bool:
    return all((directory / f"{prefix}{name}").is_file()
               for name in (SEED_FILE, TRACE_FILE, META_FILE))


def _read_parquet(path: Path) -> object:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _read_json(path: Path) -> object:
    return json.loads(path.read_text())


TABLE_READERS = {SEED_FILE: _read_parquet, TRACE_FILE: _read_parquet, META_FILE: _read_json}


def verified_cache_folder(folder: Path, readers: Mapping[str, Callable[[Path], object]]
                          ) -> bool:
    """True when the cache folder holds the files of ``readers`` (name -> a reader of its
    format) as its ``index.json`` recorded them. False: recompute it (a note says why when
    something was there); ``DataError`` when a file was edited (``episodes._cache``)."""
    return verified_folder(folder, dict(readers))


def install_cache_folder(tmp: Path, folder: Path,
                         readers: Mapping[str, Callable[[Path], object]]) -> None:
    """Seal the files written to ``tmp`` with their index (written last) and move the
    folder to ``folder``, replacing a damaged one."""
    install_folder(tmp, folder, dict(readers))


def cached_tables(folder: Path) -> bool:
    """``verified_cache_folder`` for an episode's tables."""
    return verified_folder(folder, TABLE_READERS)


def install_tables(tmp: Path, folder: Path) -> None:
    install_folder(tmp, folder, TABLE_READERS)


def step_measurements(trace: pd.DataFrame, seed_id: str) -> list[list[object]]:
    """The trace rows of one seed as per-epoch lists of ``gate.StepMeasurement``."""
    from esper_ab.gate import StepMeasurement

    rows = trace[trace["seed_id"] == seed_id].sort_values(["epoch", "step"], kind="stable")
    epochs: list[list[object]] = []
    for _, group in rows.groupby("epoch", sort=True):
        steps = []
        for row in group.to_dict("records"):
            steps.append(StepMeasurement(
                seed=GradStats.from_row(row, "seed_"), host=GradStats.from_row(row, "host_"),
                first_order=_opt(row.get("first_order")),
                grad_out_norm=_opt(row.get("grad_out_norm")),
                delta_norm=_opt(row.get("delta_norm"))))
        epochs.append(steps)
    return epochs


def _opt(value: object) -> float | None:
    if value is None:
        return None
    value = float(value)  # type: ignore[arg-type]
    return None if math.isnan(value) else value


def param_counts_by_type(module) -> dict[str, int]:
    from esper_ab.gradients import typed_parameters

    counts: dict[str, int] = {}
    for p, t in typed_parameters(module):
        counts[t] = counts.get(t, 0) + p.numel()
    return counts


def seed_order(keys: Sequence[object]) -> list[str]:
    return [k.seed_id for k in keys]  # type: ignore[attr-defined]
