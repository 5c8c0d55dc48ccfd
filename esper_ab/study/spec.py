"""The schema of ``search_spaces/*.yaml`` (pydantic) and its loader.

A sweep space names the workloads and slots, the replicates every trial shares (common
random numbers: the design is paired), the strategies with their parameter and threshold
ranges, the gate settings to search, the objective(s), the sampler, the trial budget and
resources, the scheduler, the selection rule and the MLflow experiment.

A searchable value is written one of four ways::

    a: 0.25                          # fixed
    a: {low: 0.0, high: 1.0}         # a range (log: true for a log scale, step: for a grid)
    mode: {choices: [raw, cosine]}   # a categorical choice
    a: declared                      # the strategy's own declared search range

A strategy parameter that is left out is fixed at its default; a strategy's threshold that
is left out is searched over the strategy's declared threshold range.

``load_sweep_spec(path)`` raises ``ConfigError`` with a one-line message that names the
bad field, its value and the fix.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from esper_ab.errors import ConfigError, shown
from esper_ab.inputs import read_yaml_mapping
from esper_ab.study._spec_parts import (
    DECLARED,
    MAX_REPLICATES,
    SYNTHETIC_OPTIONS,
    Choices,
    ConfirmSpec,
    GateSearch,
    Range,
    StrategyEntry,
    TracesSpec,
    WorkloadEntry,
    _Model,
    split_replicates,
)

__all__ = [
    "DECLARED", "OBJECTIVE_METRICS", "ConfirmSpec", "SYNTHETIC_OPTIONS", "Choices", "GateSearch", "Objective", "Range", "Resources",
    "SamplerSpec", "SchedulerSpec", "SelectionSpec", "StrategyEntry", "SweepSpec", "TracesSpec",
    "WorkloadEntry", "load_sweep_spec", "parse_sweep_spec",
]

# Objective metric -> its natural direction. These are pooled over blueprints; the names
# match the statistics module's per-strategy metrics.
OBJECTIVE_METRICS: dict[str, Literal["max", "min"]] = {
    "balanced_accuracy": "max",
    "mcc": "max",
    "realized_utility": "max",
    "tpr": "max",
    "fpr": "min",
    "pass_rate": "max",
    "pass_rate_gap": "min",
    "pass_rate_ratio": "max",
    "equal_opportunity_gap": "min",
    "equalized_odds_gap": "min",
}
ObjectiveMetric = Literal[
    "balanced_accuracy", "mcc", "realized_utility", "tpr", "fpr", "pass_rate",
    "pass_rate_gap", "pass_rate_ratio", "equal_opportunity_gap", "equalized_odds_gap"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_TRIALS = 1_000_000        # num_samples and the sampler's counts: absurd above


class Objective(_Model):
    metric: ObjectiveMetric
    mode: Literal["max", "min"] | None = None   # None: the metric's natural direction

    @property
    def direction(self) -> Literal["max", "min"]:
        return self.mode or OBJECTIVE_METRICS[self.metric]


class SamplerSpec(_Model):
    """``stratify`` (default): trial n tries strategy n mod S (round robin, so every strategy
    gets the same share of trials) and the sampler searches within that strategy's own
    parameters; the grid sampler enumerates its points instead."""

    kind: Literal["tpe", "nsga2", "random", "grid"] = "tpe"
    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1)
    stratify: bool = True
    n_startup_trials: StrictInt | None = Field(default=None, ge=0, le=MAX_TRIALS)   # tpe
    population_size: StrictInt | None = Field(default=None, ge=2, le=MAX_TRIALS)    # nsga2


class Resources(_Model):
    """Per trial (and per recording or closed-loop task). ``gpu`` may be a fraction (0.25:
    four trials share one GPU), or ``auto``: a share of the cluster's GPUs when it has some,
    the CPU otherwise (``esper_ab.study.resources.plan_resources`` says which share)."""

    cpu: float = Field(default=1.0, gt=0)
    gpu: float | Literal["auto"] = 0.0

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, v: Any) -> float | str:
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ValueError("use auto, 0 (CPU only), a fraction of a GPU (0.25) or a whole "
                             "number of GPUs")
        if v > 1 and v != int(v):
            raise ValueError("use a fraction <= 1, a whole number of GPUs or auto")
        return float(v)


class SchedulerSpec(_Model):
    """``asha`` stops weak configs early; one rung step = one more replicate evaluated."""

    kind: Literal["none", "asha"] = "none"
    grace_period: StrictInt = Field(default=1, ge=1, le=MAX_REPLICATES)
    reduction_factor: float = Field(default=2.0, gt=1, le=1000)


class FailureSpec(_Model):
    max_failures: StrictInt = Field(default=1, ge=-1, le=1000)   # retries (-1: forever)


class SelectionSpec(_Model):
    """How the winner is chosen after the sweep (the statistics module's ``SelectionRule``).

    The ``top_k`` best trials by the first objective (the Pareto front first, when there are
    several objectives) go into one paired analysis against the baseline, corrected for
    multiplicity; the winner maximizes ``objective`` among the trials whose
    ``fairness_metric`` is at most ``max_gap`` and (with ``require_significance``) whose gain
    over the baseline has a Holm-adjusted p below ``alpha``. ``margin`` (objective units) is
    the equivalence margin of "not better than the baseline"; a blueprint's TPR/FPR count in
    the fairness criterion when it has ``min_valuable`` valuable and ``min_non_valuable``
    other seeds.
    """

    objective: Literal["balanced_accuracy", "mcc", "realized_utility"] = "balanced_accuracy"
    fairness_metric: Literal["equalized_odds_gap", "equal_opportunity_gap",
                             "pass_rate_gap"] = "equalized_odds_gap"
    max_gap: float = Field(default=0.2, ge=0, allow_inf_nan=False)
    gap_bound: Literal["estimate", "ci_high"] = "ci_high"
    require_significance: bool = True
    alpha: float = Field(default=0.05, gt=0, lt=1)
    top_k: StrictInt = Field(default=5, ge=1, le=10_000)
    margin: float = Field(default=0.05, gt=0, allow_inf_nan=False)
    min_valuable: StrictInt = Field(default=10, ge=1, le=100_000)
    min_non_valuable: StrictInt = Field(default=10, ge=1, le=100_000)

    def rule(self) -> Any:
        """The statistics module's ``SelectionRule`` for these settings."""
        from esper_ab.stats import SelectionRule

        return SelectionRule(objective=self.objective, fairness_metric=self.fairness_metric,
                             max_gap=self.max_gap, gap_bound=self.gap_bound,
                             require_significance=self.require_significance, alpha=self.alpha,
                             margin=self.margin, min_valuable=self.min_valuable,
                             min_non_valuable=self.min_non_valuable)


class SweepSpec(_Model):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    experiment: str | None = None          # MLflow experiment; default: the sweep name
    description: str = ""
    fidelity: Literal["replay", "closed_loop", "multi"] = "replay"
    workloads: list[WorkloadEntry] = Field(min_length=1)
    replicates: list[StrictInt] | StrictInt = Field(default=2, validate_default=True)
    calibration_folds: StrictInt = Field(default=2, ge=2, le=100)
    baseline: str = "esper_lite_baseline"
    traces: TracesSpec = Field(default_factory=TracesSpec)
    strategies: list[StrategyEntry] = Field(min_length=1)
    gate: GateSearch = Field(default_factory=GateSearch)
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="balanced_accuracy")], min_length=1)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    num_samples: StrictInt = Field(default=8, ge=1, le=MAX_TRIALS)
    max_concurrent: StrictInt = Field(default=2, ge=1, le=10_000)
    resources: Resources = Field(default_factory=Resources)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    failure: FailureSpec = Field(default_factory=FailureSpec)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    confirm: ConfirmSpec = Field(default_factory=ConfirmSpec)   # fidelity: multi

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        """``replicates: {search: ..., confirm: ...}`` -> ``replicates`` (searched) and
        ``confirm.replicates`` (held out for the confirmation)."""
        if not isinstance(data, dict) or not isinstance(data.get("replicates"), dict):
            return data
        search, confirm = split_replicates(data["replicates"])
        section = data.get("confirm") or {}
        if not isinstance(section, dict):
            return data
        if confirm is not None and section.get("replicates") is not None:
            raise ValueError("replicates.confirm and confirm.replicates are both given: state "
                             "the confirmation replicates once")
        out = {**data, "replicates": search}
        if confirm is not None:
            out["confirm"] = {**section, "replicates": confirm}
        return out

    @field_validator("replicates")
    @classmethod
    def _replicates(cls, v: list[int] | int) -> list[int]:
        n = v if isinstance(v, int) else len(v)
        if n > MAX_REPLICATES:
            raise ValueError(f"{n} replicates is over the limit of {MAX_REPLICATES:,}: a "
                             "sweep's replicates are a few to a few hundred")
        reps = list(range(v)) if isinstance(v, int) else list(v)
        if len(reps) < 2:
            raise ValueError(f"{shown(v)} gives {len(reps)} replicate(s): paired tests and "
                             "cross-fitting need at least 2")
        if len(set(reps)) != len(reps) or min(reps) < 0 or max(reps) > 2**31 - 1:
            raise ValueError(f"{shown(v)}: replicates must be distinct whole numbers in "
                             "[0, 2**31)")
        return reps

    @field_validator("baseline")
    @classmethod
    def _baseline(cls, v: str) -> str:
        from esper_ab.gate import PRESETS

        if v not in PRESETS:
            raise ValueError(f"unknown gate preset {v!r}: use one of {sorted(PRESETS)}")
        return v

    @field_validator("strategies")
    @classmethod
    def _unique_strategies(cls, v: list[StrategyEntry]) -> list[StrategyEntry]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"strategies {names} repeat a name: list each strategy once")
        return v

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        if self.scheduler.kind == "asha" and len(self.objectives) > 1:
            raise ValueError("scheduler asha needs a single objective: drop the scheduler "
                             "(kind: none) or keep one objective")
        if self.scheduler.kind == "asha" and self.scheduler.grace_period > len(self.replicates):
            raise ValueError(f"scheduler.grace_period={self.scheduler.grace_period} exceeds "
                             f"the {len(self.replicates)} replicates: lower it")
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives {metrics} repeat a metric: list each once")
        both = sorted(set(self.replicates) & set(self.confirm.replicates or ()))
        if both:
            raise ValueError(f"replicates {both} are both searched and confirmed: the "
                             "confirmation needs replicates no search step saw; write "
                             "replicates: {search: [...], confirm: [...]} with disjoint lists")
        if self.fidelity == "multi" and self.traces.source == "synthetic":
            raise ValueError("fidelity multi confirms configs in the closed loop, which needs "
                             "real episodes: use traces: {source: record} (or directory)")
        if self.fidelity == "multi" and not self.confirm.replicates:
            raise ValueError("fidelity multi confirms in the closed loop on held-out replicates: "
                             "state them, e.g. replicates: {search: 6, confirm: 6}")
        return self

    # -- derived -------------------------------------------------------------------
    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def search_replicates(self) -> list[int]:
        """The replicates every search step sees (``replicates``)."""
        return list(self.replicates)

    @property
    def confirm_replicates(self) -> list[int]:
        """The held-out replicates of the confirmation stage (empty: none)."""
        return list(self.confirm.replicates or ())

    @property
    def all_replicates(self) -> list[int]:
        return sorted(set(self.replicates) | set(self.confirm_replicates))

    @property
    def confirm_fidelity(self) -> Literal["replay", "closed_loop"] | None:
        """How the confirmation runs (None: the space holds out no replicates)."""
        if not self.confirm.replicates:
            return None
        return self.confirm.fidelity or ("closed_loop" if self.fidelity == "multi"
                                         else "replay")

    def split_text(self) -> str:
        """One line that states the replicate split (``validate`` prints it)."""
        search = f"search on {len(self.replicates)} replicate(s) {_short(self.replicates)}"
        if not self.confirm.replicates:
            return (f"{search}; no confirmation replicates: the verdict is the search's own, "
                    "with optimistic p-values (hold some out: replicates: {search: [...], "
                    "confirm: [...]})")
        seq = (f", sequential (always-valid, from {self.confirm.min_replicates} replicates)"
               if self.confirm.sequential else "")
        return (f"{search}; confirm the top {self.confirm.top_k} + baseline on "
                f"{len(self.confirm_replicates)} held-out replicate(s) "
                f"{_short(self.confirm_replicates)} by {self.confirm_fidelity.replace('_', ' ')}"
                f"{seq}; Holm over the {self.confirm.top_k} confirmed candidates")

    def resolved(self) -> dict[str, Any]:
        """The fully resolved spec as plain JSON-ready data (defaults filled in)."""
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        text = json.dumps(self.resolved(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_overrides(self, *, num_samples: int | None = None,
                       smoke_test: bool = False) -> SweepSpec:
        """A copy with CLI overrides; ``smoke_test`` shrinks it to a minutes-long run."""
        data = self.model_dump()
        if num_samples is not None:
            if num_samples < 1:
                raise ConfigError(f"--num-samples={num_samples} is invalid: use 1 or more")
            data["num_samples"] = num_samples
        if smoke_test:
            data["num_samples"] = min(data["num_samples"], 3)
            data["max_concurrent"] = min(data["max_concurrent"], 2)
            data["replicates"] = data["replicates"][:2]
            if data["confirm"]["replicates"]:
                data["confirm"]["replicates"] = data["confirm"]["replicates"][:2]
                data["confirm"]["min_replicates"] = 2
            if data["scheduler"]["grace_period"] > 2:
                data["scheduler"]["grace_period"] = 1
        return SweepSpec.model_validate(data)


def _short(reps: list[int]) -> str:
    """``[0..9]`` for a contiguous run, else the list."""
    r = sorted(reps)
    if len(r) > 3 and r == list(range(r[0], r[-1] + 1)):
        return f"[{r[0]}..{r[-1]}]"
    return str(r)


_BRANCH_LABELS = {"Range", "Choices", "str", "int", "float", "bool", "none", "list", "dict"}


def _one_line(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    # Drop pydantic's union-branch labels ('literal[...]', 'Range', 'float', ...).
    parts = [str(p) for p in err["loc"]]
    loc = ".".join(p for p in parts if "[" not in p and p not in _BRANCH_LABELS)
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    value = err.get("input")
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    if not loc:
        text = f"{source}: {msg[:600]}{more}"
    else:   # the value bounded: never repr() unbounded input
        text = f"{source}: {loc}={shown(value)} is invalid: {msg[:600]}{more}"
    return " ".join(text.split())


def parse_sweep_spec(data: Any, *, source: str = "sweep space") -> SweepSpec:
    """Validate already-parsed YAML data; ``ConfigError`` with one line on failure."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} holds {type(data).__name__} {shown(data)}, not a mapping: "
                          "write 'name: ...', 'workloads: ...', 'strategies: ...' at top level")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, source)) from None


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Load and validate a sweep space YAML file (``ConfigError`` on any problem), read by
    the one bounded YAML reader (``esper_ab.inputs.read_yaml_mapping``)."""
    data = read_yaml_mapping(path, "sweep space", "give the path of a search_spaces/*.yaml "
                             "file")
    return parse_sweep_spec(data, source=shown(str(path)).strip("'"))
