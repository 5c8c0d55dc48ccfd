"""esper-lite telemetry -> a per-seed G2 decisions table (observational: no value column).

One row per seed, keyed by (run, slot, seed id): esper-lite reuses ``seed_N`` across runs.

- ``blueprint``, ``params``: from ``SEED_GERMINATED``.
- ``passed``: a ``SEED_STAGE_CHANGED`` TRAINING -> BLENDING; ``pass_epoch`` is its
  ``epochs_in_stage`` (epochs spent in TRAINING).
- ``statistic``: the gradient ratio parsed from the seed's last G2 check,
  ``seed_gradient_active_{r:.2f}`` / ``seed_gradient_low_{r:.2f}`` (two decimals: that is all
  esper-lite writes); NaN when unmeasured (``gradient_stats_never_measured``, permissive mode,
  or no G2 check at all).
- ``strategy``: ``esper_lite_strict`` or ``esper_lite_permissive``, detected per run from the
  names of its G2 checks; ``esper_lite_undetected`` for a run without any G2 check. A run in
  which the esper-ab plug-in decided G2 (its checks name the gate, ``esper_ab_gate_<name>``)
  is ``esper_ab:<name>``, and its ``statistic`` is the plug-in's own value
  (``esper_ab_g2_pass_<v>`` / ``esper_ab_g2_<check>_failed_<v>``, 9 significant digits), so
  native and plug-in runs ingested together are compared side by side.
- ``g2_attempts``: G2 evaluations; ``last_failed_check``: the failed checks of the seed's
  last failing G2 evaluation, joined by ``;``.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from esper_ab.errors import DataError
from esper_ab.integrations.esper_lite._events import EventView, find_event_files, read_events

STRICT = "esper_lite_strict"
PERMISSIVE = "esper_lite_permissive"
UNDETECTED = "esper_lite_undetected"
MODES = {"auto": None, "strict": STRICT, "permissive": PERMISSIVE}
COLUMNS = ("replicate", "run", "slot", "seed", "blueprint", "params", "strategy", "passed",
           "pass_epoch", "statistic", "g2_attempts", "last_failed_check", "final_stage")
USED = ("TRAINING_STARTED", "SEED_GERMINATED", "SEED_GATE_EVALUATED", "SEED_STAGE_CHANGED",
        "SEED_PRUNED", "SEED_FOSSILIZED")
_RATIO = re.compile(r"^seed_gradient_(?:active|low)_(-?\d+(?:\.\d+)?)$")
_STRICT_CHECK = re.compile(r"^(seed_gradient_(active|low)_|gradient_stats_never_measured$|"
                           r"global_improvement|seed_ready$|seed_not_ready$)")
_PERMISSIVE_CHECK = re.compile(r"^(trained_\d+_epochs$|insufficient_training_|gradient_health|"
                               r"no_exploding_gradients$|exploding_gradients$)")
_GATE = re.compile(r"^esper_ab_gate_([A-Za-z0-9_.-]{1,64})$")
_GATE_VALUE = re.compile(r"^esper_ab_g2_(?:pass|[a-z_]+_failed)_(unmeasured|[-+0-9.eE]+|nan|inf)$")
PLUGIN_PREFIX = "esper_ab:"
MAX_SEEDS = 1_000_000       # seeds in one ingest: memory stays bounded whatever the input
MAX_CHECKS_KEPT = 16        # failed checks kept per seed (esper-lite writes at most 5)
_ENDED = {"PRUNED", "FOSSILIZED", "EMBARGOED", "RESETTING", "DORMANT"}
_AFTER_END = {"EMBARGOED", "RESETTING", "DORMANT"}


@dataclass
class _Seed:
    run: str
    slot: str
    seed: str
    blueprint: str
    params: int | None
    episode: int | None
    env: int | None
    g2_attempts: int = 0
    statistic: float = math.nan
    last_failed: str = ""
    passed: bool = False
    pass_epoch: int | None = None
    final_stage: str = "GERMINATED"
    ended: bool = False


@dataclass
class _Run:
    name: str
    file: Path
    seeds: list[_Seed] = field(default_factory=list)
    latest: dict[tuple[str, str], _Seed] = field(default_factory=dict)
    germinations: Counter = field(default_factory=Counter)
    strict_at: int | None = None        # first line with a strict-mode G2 check
    permissive_at: int | None = None
    gate: str | None = None             # the esper-ab plug-in's gate, when it decided G2
    gate_at: int | None = None


@dataclass(frozen=True)
class IngestSummary:
    """What one ingest read: files, runs, seeds, events used and skipped."""

    files: int
    runs: int
    seeds: int
    by_strategy: dict[str, int]
    never_judged: int
    g2_events: int
    used_events: int
    skipped: dict[str, int]             # event type -> count, for types the ingest ignores

    def lines(self) -> list[str]:
        out = [f"read {self.files} file(s), {self.runs} run(s): {self.seeds} seed(s), "
               f"{self.g2_events} G2 evaluation(s)"]
        for name, n in sorted(self.by_strategy.items()):
            out.append(f"  {name}: {n} seed(s)")
        if self.never_judged:
            out.append(f"  {self.never_judged} seed(s) never reached a G2 check (g2_attempts "
                       "= 0; left out of the observational analysis)")
        if self.by_strategy.get(UNDETECTED):
            out.append(f"  {UNDETECTED}: runs without any G2 check; pass --mode strict or "
                       "--mode permissive if you know how they ran")
        skipped = sum(self.skipped.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items(),
                                                         key=lambda kv: (-kv[1], kv[0])))
        out.append(f"used {self.used_events} event(s); skipped {skipped} of types the ingest "
                   f"does not read" + (f" ({detail})" if detail else ""))
        return out


@dataclass(frozen=True, eq=False)
class IngestResult:
    table: pd.DataFrame
    summary: IngestSummary


def _strategy(run: _Run, mode: str | None) -> str:
    if run.gate is not None:
        if run.permissive_at is not None:
            raise DataError(f"{run.file}:{run.gate_at}: the esper-ab gate {run.gate!r} ran on "
                            "permissive gates, where its decision has no effect: rerun with "
                            "permissive_gates=False, or leave this run out")
        return PLUGIN_PREFIX + run.gate
    if run.strict_at is not None and run.permissive_at is not None:
        first, second = sorted([(run.strict_at, "strict"), (run.permissive_at, "permissive")])
        raise DataError(f"{run.file}:{second[0]}: a {second[1]} G2 check after the {first[1]} "
                        f"one at line {first[0]}: one run has one G2 mode; split the file "
                        "into one run per mode")
    detected = STRICT if run.strict_at is not None else (
        PERMISSIVE if run.permissive_at is not None else None)
    if mode is not None and detected is not None and mode != detected:
        line = run.strict_at if detected == STRICT else run.permissive_at
        raise DataError(f"{run.file}:{line}: --mode says {mode} but the G2 checks are "
                        f"{detected}: drop --mode (auto) or pass the matching one")
    return detected or mode or UNDETECTED


def _germinate(run: _Run, ev: EventView, key: tuple[str, str]) -> None:
    old = run.latest.get(key)
    if old is not None and not old.ended:
        raise ev.error(f"germinates seed {key[1]!r} in slot {key[0]!r} again while it is "
                       f"alive (stage {old.final_stage})", "each line must be written once; "
                       "remove the duplicated lines")
    run.germinations[key] += 1
    k = run.germinations[key]
    blueprint = ev.name("blueprint_id")
    params = ev.integer("params", optional=True)
    seed = _Seed(run=run.name, slot=key[0], seed=key[1] if k == 1 else f"{key[1]}#{k}",
                 blueprint=blueprint, params=params,
                 episode=ev.integer("episode_idx", optional=True),
                 env=ev.integer("env_id", optional=True))
    run.seeds.append(seed)
    run.latest[key] = seed


def _gate(run: _Run, ev: EventView, seed: _Seed) -> int:
    if ev.data.get("gate") != "G2":
        return 0
    passed = ev.flag("passed")
    ok, failed = ev.names("checks_passed"), ev.names("checks_failed")
    seed.g2_attempts += 1
    seed.statistic = math.nan
    plugin_value: float | None = None
    for check in ok + failed:
        m = _RATIO.match(check)
        if m:
            seed.statistic = float(m.group(1))
        g = _GATE.match(check)
        if g:
            if run.gate is not None and run.gate != g.group(1):
                raise ev.error(f"names the esper-ab gate {g.group(1)!r} after {run.gate!r} "
                               f"(line {run.gate_at})", "one run has one gate; split the file "
                               "into one run per gate")
            run.gate, run.gate_at = g.group(1), run.gate_at or ev.line
            continue
        v = _GATE_VALUE.match(check)
        if v:
            plugin_value = math.nan if v.group(1) == "unmeasured" else _number(v.group(1), ev)
            continue
        if _STRICT_CHECK.match(check) and run.strict_at is None:
            run.strict_at = ev.line
        if _PERMISSIVE_CHECK.match(check) and run.permissive_at is None:
            run.permissive_at = ev.line
    if plugin_value is not None:
        seed.statistic = plugin_value
    if not passed:
        seed.last_failed = ";".join(failed[:MAX_CHECKS_KEPT])
    return 1


def _number(text: str, ev: EventView) -> float:
    try:
        return float(text)
    except ValueError:
        raise ev.error(f"has an esper-ab check with value {text!r}", "the plug-in writes a "
                       "number or 'unmeasured'; repair or remove the line") from None


def _stage(ev: EventView, seed: _Seed) -> None:
    src, dst = ev.name("from_stage"), ev.name("to_stage")
    if src == "TRAINING" and dst == "BLENDING":
        seed.passed = True
        seed.pass_epoch = ev.integer("epochs_in_stage")
    if not (seed.ended and dst in _AFTER_END):   # PRUNED stays PRUNED through its reset
        seed.final_stage = dst
    seed.ended = seed.ended or dst in _ENDED


def _read_file(run_name: str, file: Path, used: Counter, skipped: Counter) -> tuple[list[_Run], int]:
    runs = [_Run(run_name, file)]
    g2 = 0
    for line, event in read_events(file):
        ev = EventView(file, line, event)
        if ev.type not in USED:
            skipped[ev.type] += 1
            continue
        used[ev.type] += 1
        run = runs[-1]
        if ev.type == "TRAINING_STARTED":
            if run.seeds:   # a second training run appended to the same file
                runs.append(_Run(f"{run_name}@{len(runs)}", file))
            continue
        key = (ev.name("slot_id", envelope=True, fallback="slot_id"),
               ev.name("seed_id", envelope=True))
        if ev.type == "SEED_GERMINATED":
            if used["SEED_GERMINATED"] > MAX_SEEDS:
                raise ev.error(f"is seed number {used['SEED_GERMINATED']:,}, over the "
                               f"{MAX_SEEDS:,}-seed limit of one ingest", "ingest the runs in "
                               "smaller folders")
            _germinate(run, ev, key)
            continue
        seed = run.latest.get(key)
        if seed is None:
            raise ev.error(f"names seed {key[1]!r} in slot {key[0]!r} before its "
                           "SEED_GERMINATED", "the run is incomplete: pass whole runs, from "
                           "their first line")
        if ev.type == "SEED_GATE_EVALUATED":
            g2 += _gate(run, ev, seed)
        elif ev.type == "SEED_STAGE_CHANGED":
            _stage(ev, seed)
        else:
            seed.final_stage = "PRUNED" if ev.type == "SEED_PRUNED" else "FOSSILIZED"
            seed.ended = True
    return runs, g2


def _replicates(run: _Run) -> dict[int, str]:
    envs = {s.env for s in run.seeds if s.episode is not None}
    out = {}
    for i, s in enumerate(run.seeds):
        label = run.name
        if s.episode is not None:
            label += f":ep{s.episode}"
            if len(envs) > 1:
                label += f":env{s.env}"
        out[i] = label
    return out


def ingest_esper_lite(path: str | os.PathLike[str], *, mode: str = "auto") -> IngestResult:
    """Read every esper-lite run under ``path`` into one per-seed decisions table."""
    if mode not in MODES:
        raise DataError(f"--mode={mode!r} is unknown: use one of {sorted(MODES)}")
    files = find_event_files(path)
    used: Counter = Counter()
    skipped: Counter = Counter()
    rows, n_runs, n_g2 = [], 0, 0
    for run_name, file in files:
        runs, g2 = _read_file(run_name, file, used, skipped)
        n_g2 += g2
        for run in runs:
            n_runs += 1
            strategy = _strategy(run, MODES[mode])
            reps = _replicates(run)
            for i, s in enumerate(run.seeds):
                rows.append({
                    "replicate": reps[i], "run": s.run, "slot": s.slot, "seed": s.seed,
                    "blueprint": s.blueprint, "params": s.params, "strategy": strategy,
                    "passed": s.passed, "pass_epoch": s.pass_epoch, "statistic": s.statistic,
                    "g2_attempts": s.g2_attempts, "last_failed_check": s.last_failed,
                    "final_stage": s.final_stage})
    if not rows:
        raise DataError(f"no seed in {str(path)!r}: no SEED_GERMINATED event in "
                        f"{len(files)} file(s); pass runs in which esper-lite germinated seeds")
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["params"] = table["params"].astype("Int64")
    table["pass_epoch"] = table["pass_epoch"].astype("Int64")
    summary = IngestSummary(
        files=len(files), runs=n_runs, seeds=len(table),
        by_strategy={k: int(v) for k, v in table["strategy"].value_counts().items()},
        never_judged=int(((table["g2_attempts"] == 0) & ~table["passed"]).sum()),
        g2_events=n_g2, used_events=int(sum(used.values())), skipped=dict(skipped))
    return IngestResult(table=table, summary=summary)


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def neutralized(table: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells that a spreadsheet would run as a formula (starting with
    ``= + - @``, a tab or a carriage return) start with ``'`` instead; numbers are kept."""
    out = table.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
            out[col] = out[col].map(lambda v: "'" + v if isinstance(v, str)
                                    and v.startswith(_FORMULA) else v)
    return out


def write_table(table: pd.DataFrame, out: str | os.PathLike[str]) -> Path:
    """Write the ingested table as CSV (NaN and missing values as empty cells; text cells
    neutralized against formula injection, see :func:`neutralized`)."""
    p = Path(out)
    try:
        if p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True)
        neutralized(table).to_csv(p, index=False)
    except OSError as exc:
        raise DataError(f"cannot write --out {str(out)!r} ({exc.strerror}): pass a path in a "
                        "writable folder") from None
    return p
