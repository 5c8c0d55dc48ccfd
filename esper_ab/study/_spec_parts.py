"""Building blocks of the sweep schema (private; ``esper_ab.study.spec`` re-exports them):
searchable values, strategy entries, workloads, the traces source and the gate search."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from esper_ab.errors import ConfigError, shown

Window = Literal["last", "mean", "median"]
DECLARED = "declared"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Model):
    """A numeric search range. ``step`` (or ``grid_points``) fixes the grid sampler's points."""

    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    grid_points: int = Field(default=3, ge=1, le=1000)

    @model_validator(mode="after")
    def _check(self) -> Range:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"low={self.low} > high={self.high}: swap them")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0 (got low={self.low})")
        if self.step is not None and (self.high - self.low) / self.step >= MAX_GRID_AXIS:
            raise ValueError(f"step={self.step:g} makes more than {MAX_GRID_AXIS:,} grid "
                             f"points over [{self.low:g}, {self.high:g}]: widen the step")
        return self

    def grid(self, *, integer: bool = False) -> list[float]:
        """The points the grid sampler evaluates (endpoints included)."""
        if self.step is not None:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            pts = [self.low + i * self.step for i in range(n)]
        elif self.grid_points == 1 or self.low == self.high:
            pts = [self.low]
        elif self.log:
            a, b = math.log(self.low), math.log(self.high)
            k = self.grid_points - 1
            pts = [math.exp(a + (b - a) * i / k) for i in range(self.grid_points)]
        else:
            k = self.grid_points - 1
            pts = [self.low + (self.high - self.low) * i / k for i in range(self.grid_points)]
        return sorted({int(round(p)) for p in pts}) if integer else pts


class Choices(_Model):
    """A categorical search: one of ``choices``."""

    choices: list[StrictBool | StrictInt | StrictFloat | str | None] = Field(min_length=1)


Scalar = StrictBool | StrictInt | StrictFloat | str | None
Searchable = Range | Choices | Scalar


class StrategyEntry(_Model):
    """One strategy arm of the search: its parameters and its threshold."""

    name: str
    params: dict[str, Searchable] = Field(default_factory=dict)
    threshold: Range | Choices | StrictFloat | StrictInt | Literal["declared"] = DECLARED

    @model_validator(mode="after")
    def _check(self) -> StrategyEntry:
        from esper_ab.strategies import list_strategies, strategy_class

        if self.name not in list_strategies():
            raise ValueError(f"unknown strategy {self.name!r}: use one of {list_strategies()}")
        cls = strategy_class(self.name)
        specs = {p.name: p for p in cls.PARAMS}
        for key, value in self.params.items():
            if key not in specs:
                raise ValueError(f"strategy {self.name} has no parameter {key!r}: it takes "
                                 f"{sorted(specs) or 'none'}")
            _check_searchable(specs[key], value, f"{self.name}.{key}")
        _check_searchable(cls.THRESHOLD, self.threshold, f"{self.name}.threshold")
        return self


def _check_searchable(spec: Any, value: Any, where: str) -> None:
    """Validate a searchable value against a strategy's ``ParamSpec`` (raises ValueError)."""
    if isinstance(value, str) and value == DECLARED:
        return
    if isinstance(value, Range):
        if spec.kind not in ("float", "int"):
            raise ValueError(f"{where} is {spec.kind}: give {{choices: [...]}} or a value, "
                             "not a range")
        lo, hi = spec.valid_range()
        if value.low < lo or value.high > hi:
            raise ValueError(f"{where} range [{value.low}, {value.high}] leaves the valid "
                             f"domain [{lo}, {hi}]")
        return
    for v in value.choices if isinstance(value, Choices) else [value]:
        try:
            spec.validate(v, where.rsplit(".", 1)[0])
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class WorkloadEntry(_Model):
    """A workload, the slot(s) to grow seeds in and the blueprints to compare.

    ``name`` is a registered workload (entry point of group ``esper_ab.workloads``) or
    ``module:attribute`` of a ``WorkloadPlugin``; for the latter ``source`` keeps the
    reference and ``name`` becomes the plug-in's own name (it names the trace files).
    ``data`` holds the workload's options (its config).
    """

    name: str
    source: str = ""                                       # module:attribute, when given
    slots: list[str] = Field(default_factory=list)        # empty: the workload's default
    blueprints: list[str] = Field(default_factory=list)   # empty: every blueprint
    data: dict[str, Any] = Field(default_factory=dict)     # the workload's options
    episode: dict[str, Any] = Field(default_factory=dict)  # overrides of the episode config

    @model_validator(mode="before")
    @classmethod
    def _reference(cls, values: Any) -> Any:
        if isinstance(values, dict) and ":" in str(values.get("name", "")) \
                and not values.get("source"):
            from esper_ab.episodes.workloads import resolve_workload

            try:
                plugin = resolve_workload(str(values["name"]))
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            values = {**values, "source": values["name"], "name": plugin.name}
        return values

    @model_serializer(mode="wrap")
    def _without_empty_source(self, handler: Any) -> Any:
        # a space that names a registered workload dumps (and hashes) as it always did
        data = handler(self)
        if isinstance(data, dict) and not data.get("source"):
            data.pop("source", None)
        return data

    @property
    def reference(self) -> str:
        """What finds the workload's plug-in in any process."""
        return self.source or self.name

    @model_validator(mode="after")
    def _check(self) -> WorkloadEntry:
        from esper_ab.episodes.workloads import resolve_workload
        from esper_ab.episodes.workloads.contracts import check_slots_and_blueprints

        try:
            resolve_workload(self.reference)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        config = self.workload_config()
        try:
            check_slots_and_blueprints(config, self.slots, self.blueprints)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        self.episode_config()
        return self

    def episode_config(self) -> Any:
        """The ``EpisodeConfig`` that records this workload's traces."""
        from esper_ab.episodes.runner import episode_config

        data = dict(self.data)
        data_dir = data.pop("data_dir", None)
        try:
            return episode_config(self.reference, data_dir=data_dir, data=data,
                                  slots=tuple(self.slots), blueprints=tuple(self.blueprints),
                                  **dict(self.episode))
        except ConfigError as exc:
            raise ValueError(f"episode of workload {self.name}: {exc}") from None
        except TypeError as exc:
            raise ValueError(f"bad episode option for workload {self.name}: {exc}") from None

    def workload_config(self) -> Any:
        """The workload's ``WorkloadConfig`` with the data overrides applied."""
        from esper_ab.episodes.workloads import workload_config

        try:
            return workload_config(self.reference, **self.data)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        except TypeError as exc:   # an unknown data option
            raise ValueError(f"bad data option for workload {self.name}: {exc}") from None
        except ImportError as exc:
            raise ValueError(f"workload {self.name} is not available in this installation "
                             f"({exc}): pick another workload or update esper-ab") from None

    @property
    def slot_list(self) -> list[str]:
        return list(self.slots) or [self.workload_config().default_slot]


SYNTHETIC_OPTIONS = ("epochs", "steps_per_epoch", "seeds_per_blueprint", "host_params",
                     "value_sd_pp", "margin_pp", "first_order_signal", "nonfinite_rate", "seed",
                     "planted")
MAX_GRID_AXIS = 10_000
MAX_REPLICATES = 10_000


class SyntheticOptions(_Model):
    """The options of ``esper_ab.replay.evidence.synthetic_traces`` a space may set, with the
    bounds that keep a trace set the size of a real one."""

    epochs: StrictInt = Field(default=12, ge=1, le=10_000)
    steps_per_epoch: StrictInt = Field(default=4, ge=1, le=10_000)
    seeds_per_blueprint: StrictInt = Field(default=2, ge=1, le=10_000)
    host_params: StrictInt = Field(default=6400, ge=1, le=10**12)
    value_sd_pp: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    margin_pp: float = Field(default=1.0, allow_inf_nan=False)
    first_order_signal: float | None = Field(default=0.5, allow_inf_nan=False)
    nonfinite_rate: float = Field(default=0.0, ge=0, le=1)
    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1)
    planted: StrictBool = False        # a planted better gate (synthetic_traces docs)

    @model_validator(mode="after")
    def _size(self) -> SyntheticOptions:
        cells = self.epochs * self.steps_per_epoch * self.seeds_per_blueprint
        if cells > 10_000_000:
            raise ValueError(f"epochs x steps_per_epoch x seeds_per_blueprint = {cells:,} "
                             "trace rows per blueprint and replicate, over 10,000,000: "
                             "shrink them")
        return self


class TracesSpec(_Model):
    """Where the per-step traces that trials replay come from.

    ``record`` (default): record the workloads' episodes (cached on disk, reused by every
    trial). ``directory``: traces recorded earlier (``path``). ``synthetic``: traces drawn from
    a generative model (``esper_ab.replay.evidence.synthetic_traces``) -- for exercising the sweep
    machinery in seconds; its numbers are illustrative, not findings.
    """

    source: Literal["record", "directory", "synthetic"] = "record"
    path: str | None = None
    synthetic: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> TracesSpec:
        if self.source == "directory" and not self.path:
            raise ValueError("source directory needs path: the folder of recorded traces")
        unknown = sorted(set(self.synthetic) - set(SYNTHETIC_OPTIONS))
        if unknown:
            raise ValueError(f"unknown synthetic option(s) {shown(unknown)}: use some of "
                             f"{list(SYNTHETIC_OPTIONS)}")
        try:   # the same checks the sweep's synthetic_traces() call would need
            SyntheticOptions.model_validate(self.synthetic)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"synthetic.{where}={shown(err.get('input'))}: "
                             f"{err['msg']}") from None
        return self


class GateSearch(_Model):
    """Gate settings shared by every strategy; a list means 'search over these'."""

    window: Window | list[Window] = "last"
    ema_decay: float | None | list[float | None] = None
    min_epochs: StrictInt | list[StrictInt] = 10
    clamp: float | None = Field(default=None, gt=0, allow_inf_nan=False)   # > 0: a bound
    fail_dead_seeds: bool = True

    @field_validator("ema_decay")
    @classmethod
    def _decay(cls, v: Any) -> Any:
        for d in v if isinstance(v, list) else [v]:
            if d is not None and not (0.0 <= d < 1.0):
                raise ValueError(f"ema_decay {d} must be in [0, 1), or null for no EMA")
        return v

    @field_validator("min_epochs")
    @classmethod
    def _min_epochs(cls, v: Any) -> Any:
        for m in v if isinstance(v, list) else [v]:
            if not 0 <= m <= 100_000:
                raise ValueError(f"min_epochs {m} must be in [0, 100000]")
        return v

    @field_validator("window", "ema_decay", "min_epochs")
    @classmethod
    def _nonempty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("an empty list searches nothing: give at least one value")
        return v


class ConfirmSpec(_Model):
    """The confirmation stage: the ``top_k`` best configs of the search and the baseline gate
    judged on ``replicates`` that no search step saw (disjoint from the search's; write them
    as ``replicates: {search: [...], confirm: [...]}`` or here). Multiplicity corrections run
    over these ``top_k`` candidates only, and the sweep's verdict is this stage's.

    ``fidelity``: ``replay`` replays the recorded confirmation replicates (exact, cheap);
    ``closed_loop`` runs the gates in the loop (``esper_ab.episodes.runner.run_closed_loop``),
    where a seed's value is its realized accuracy gain over the no-seed control. Default:
    closed loop for ``fidelity: multi``, replay otherwise. ``sequential`` confirms replicate
    by replicate and stops once an always-valid test (``esper_ab.stats.sequential_test``)
    has settled every candidate, after at least ``min_replicates``."""

    top_k: StrictInt = Field(default=3, ge=1, le=1000)
    replicates: list[StrictInt] | None = Field(default=None, max_length=10_000)
    fidelity: Literal["replay", "closed_loop"] | None = None
    sequential: bool = False
    min_replicates: StrictInt = Field(default=4, ge=2, le=10_000)

    @field_validator("replicates")
    @classmethod
    def _replicates(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if len(v) < 2 or len(set(v)) != len(v) or min(v) < 0:
            raise ValueError(f"{shown(v)}: give at least 2 distinct replicates >= 0 (paired tests "
                             "over replicates), or leave it out (no confirmation stage)")
        return v


def split_replicates(value: Any) -> tuple[Any, Any]:
    """``{search: ..., confirm: ...}`` -> (search, confirm); a whole number N means the next N
    replicates (search ``N`` = 0..N-1; confirm ``M`` = the M replicates after the search's)."""
    unknown = sorted(set(value) - {"search", "confirm"})
    if unknown or "search" not in value:
        raise ValueError(f"replicates={shown(value)}: write {{search: [...], confirm: [...]}} (whole "
                         "numbers or lists); unknown or missing key(s) "
                         f"{unknown or ['search']}")
    search, confirm = value["search"], value.get("confirm")
    if isinstance(search, bool) or isinstance(confirm, bool):
        raise ValueError(f"replicates={shown(value)}: use whole numbers or lists of replicates")
    for part in (search, confirm):
        if isinstance(part, int) and not 0 <= part <= MAX_REPLICATES:
            raise ValueError(f"replicates={shown(value)}: {part} replicates is outside "
                             f"[0, {MAX_REPLICATES:,}]: a sweep's replicates are a few to a "
                             "few hundred")
    if isinstance(search, int):
        search = list(range(search))
    if isinstance(confirm, int):
        start = max(search) + 1 if isinstance(search, list) and search else 0
        confirm = list(range(start, start + confirm))
    return search, confirm
