"""The plug-in contract of a workload: data, host, seed catalog, loss and accuracy."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from esper_ab.episodes.blueprints import BlueprintCatalog, get_catalog
from esper_ab.episodes.workloads._base import (
    PretrainConfig,
    WorkloadConfig,
    accuracy_counts,
    correct_flags,
    task_loss,
)
from esper_ab.errors import ConfigError, EsperABError, bad_value

__all__ = ["Options", "WorkloadData", "WorkloadPlugin"]


@dataclass(frozen=True)
class Options:
    """A workload's options as given (a frozen, hashable, picklable mapping)."""

    items: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[str, Any]) -> Options:
        return cls(tuple(sorted((str(k), _frozen(v)) for k, v in mapping.items())))

    def as_dict(self) -> dict[str, Any]:
        return dict(self.items)

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return Options.of(value)
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True, eq=False)
class WorkloadData:
    """The four tensors of one replicate. ``*_y`` are class indices (``IGNORE_INDEX`` where a
    sequence position carries no loss) unless the workload brings its own loss."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


HostFactory = Callable[[WorkloadConfig], nn.Module]
DataLoader = Callable[[WorkloadConfig, int], "WorkloadData | tuple[Tensor, Tensor, Tensor, Tensor]"]


@dataclass(frozen=True, eq=False)
class WorkloadPlugin:
    """Everything esper-ab needs to run the placebo-controlled study on a model.

    - ``host(config)``: a fresh host (an ``nn.Module`` satisfying ``Host``, e.g. a
      ``ModuleHost``); esper-ab seeds torch's global RNG around the call.
    - ``data(config, replicate)``: the replicate's tensors (``WorkloadData`` or a 4-tuple),
      the same on every call for the same replicate; or one fixed ``WorkloadData``.
    - ``catalog``: a ``BlueprintCatalog`` (or the name of a registered one); the placebo
      comes with it.
    - ``options``: turns the space's options into the config's ``data`` (a frozen
      dataclass class or a function); ``None`` keeps them as a frozen mapping.
    - ``loss(logits, y)``, ``accuracy(logits, y) -> (n_correct, n_scored)`` and
      ``correct(logits, y)`` (one bool per scored target, in order; its mean is the
      accuracy): default to cross-entropy / argmax for classification ((N, K) logits) and
      next-token prediction ((N, T, K) logits, ``IGNORE_INDEX`` targets skipped). They
      train every step and score the held-out split, so a seed's value is in their terms.
      Give ``correct`` alone (the accuracy is then its sum and count) or both; a custom
      ``accuracy`` needs ``correct`` (the value's paired standard error is per target).
    - ``tiny``: option overrides for ``size="tiny"`` (``--smoke-test``); ``episode``:
      defaults of the episode (``EpisodeConfig`` fields) for this workload.
    - ``configure(**options) -> WorkloadConfig``: full control of the config (instead of
      ``options``/``pretrain``/``default_slot``).
    """

    name: str
    host: HostFactory
    data: DataLoader | WorkloadData
    catalog: BlueprintCatalog | str
    default_slot: str = ""
    options: Callable[..., Any] | None = None
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    loss: Callable[[Tensor, Tensor], Tensor] = task_loss
    accuracy: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] = accuracy_counts
    correct: Callable[[Tensor, Tensor], Tensor] | None = None
    tiny: Mapping[str, Any] = field(default_factory=dict)
    episode: Mapping[str, Any] = field(default_factory=dict)
    configure: Callable[..., WorkloadConfig] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(
                c in self.name for c in ":/\\ "):
            raise bad_value("WorkloadPlugin.name", self.name,
                            "use a non-empty name without ':', '/', '\\\\' or spaces (it names files)")
        for attr in ("host", "loss", "accuracy"):
            if not callable(getattr(self, attr)):
                raise bad_value(f"WorkloadPlugin({self.name}).{attr}", getattr(self, attr),
                                "use a callable")
        if self.correct is not None and not callable(self.correct):
            raise bad_value(f"WorkloadPlugin({self.name}).correct", self.correct,
                            "use a callable (logits, y) -> one bool per scored target, or None")
        if self.correct is None and self.accuracy is not accuracy_counts:
            raise ConfigError(f"WorkloadPlugin({self.name}) has its own accuracy but no correct: "
                              "give correct(logits, y) -> one bool per scored target (its mean "
                              "is the accuracy; the value's standard error needs it), or give "
                              "correct alone")
        if not (callable(self.data) or isinstance(self.data, WorkloadData)):
            raise bad_value(f"WorkloadPlugin({self.name}).data", self.data,
                            "use a callable (config, replicate) -> WorkloadData or a WorkloadData")
        if self.configure is None and not self.default_slot:
            raise bad_value(f"WorkloadPlugin({self.name}).default_slot", self.default_slot,
                            "name the slot a study uses when the space names none")

    @property
    def default_loss(self) -> bool:
        """True when the loss is ``task_loss`` (held-out loss: cross-entropy per target)."""
        return self.loss is task_loss

    @property
    def default_accuracy(self) -> bool:
        """True when accuracy and per-target correctness are the argmax defaults."""
        return self.correct is None

    @property
    def derived_accuracy(self) -> bool:
        """True when only ``correct`` is given: the accuracy is its sum and count."""
        return self.correct is not None and self.accuracy is accuracy_counts

    def counts(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(number correct, number scored) of one batch: ``accuracy``, or the sum and count
        of ``correct`` when only that is given."""
        if self.derived_accuracy:
            flags = self.flags(logits, y)
            return flags.sum(), torch.tensor(flags.numel(), device=flags.device)
        n_correct, n_scored = self.accuracy(logits, y)
        return (torch.as_tensor(n_correct, device=logits.device),
                torch.as_tensor(n_scored, device=logits.device))

    def flags(self, logits: Tensor, y: Tensor) -> Tensor:
        """One bool per scored target of one batch, flattened in order (``correct``)."""
        out = (self.correct or correct_flags)(logits, y)
        if not isinstance(out, Tensor):
            raise ConfigError(f"workload {self.name}: its correct() returned a "
                              f"{type(out).__name__}: return a bool tensor, one entry per "
                              "scored target")
        return out.reshape(-1).bool()

    def scoring_id(self) -> str:
        """What keys the caches for a plug-in's own loss / accuracy / correct: their
        qualified names ("" with the defaults, so the built-ins' keys do not change)."""
        custom = [(attr, fn) for attr, fn, default in (
            ("loss", self.loss, task_loss), ("accuracy", self.accuracy, accuracy_counts),
            ("correct", self.correct, None)) if fn is not default]
        if not custom:
            return ""
        return "heldout-v2;" + ";".join(f"{attr}={_qualified(fn)}" for attr, fn in custom)

    @property
    def blueprint_catalog(self) -> BlueprintCatalog:
        return get_catalog(self.catalog)

    def config(self, source: str, **options: Any) -> WorkloadConfig:
        """The ``WorkloadConfig`` of these options (``source``: how the space named it)."""
        try:
            if self.configure is not None:
                config = self.configure(**options)
            else:
                data = Options.of(options) if self.options is None else self.options(**options)
                config = WorkloadConfig(name=self.name, host=None, data=data,
                                        pretrain=self.pretrain, default_slot=self.default_slot)
        except EsperABError:
            raise
        except TypeError as exc:
            raise ConfigError(f"workload {self.name} does not take these options "
                              f"{sorted(options)} ({exc}): use the options it documents") from None
        except ValueError as exc:
            raise ConfigError(f"workload {self.name} rejects its options {options!r:.120} "
                              f"({' '.join(str(exc).split())[:160]}): fix them") from None
        if not isinstance(config, WorkloadConfig):
            raise bad_value(f"workload {self.name} configure()", config,
                            "return a WorkloadConfig")
        return dataclasses.replace(config, name=self.name, source=source,
                                   scoring=self.scoring_id())

    def build_host(self, config: WorkloadConfig, *,
                   generator: torch.Generator | None = None) -> nn.Module:
        """A fresh host; with ``generator`` its initialization draws from a seed taken from
        it (the global RNG is left untouched)."""
        if generator is None:
            return self.host(config)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.host(config)

    def build_data(self, config: WorkloadConfig, replicate: int) -> WorkloadData:
        out = self.data if isinstance(self.data, WorkloadData) else self.data(config, replicate)
        if isinstance(out, WorkloadData):
            return out
        if isinstance(out, tuple | list) and len(out) == 4 and all(
                isinstance(t, Tensor) for t in out):
            return WorkloadData(*out)
        raise ConfigError(f"workload {self.name}: its data loader returned a "
                          f"{type(out).__name__}, not WorkloadData or a tuple of 4 tensors: "
                          "return (train_x, train_y, test_x, test_y)")


def _qualified(fn: Any) -> str:
    inner = getattr(fn, "func", fn)          # a functools.partial: its function and arguments
    name = f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', type(inner).__name__)}"
    if inner is not fn:
        name += repr((getattr(fn, "args", ()), sorted(getattr(fn, "keywords", {}).items())))
    return name


def builtin_host(config: WorkloadConfig) -> nn.Module:
    """The host of esper-ab's own workloads: ``config.host`` is a CNN or transformer config."""
    from esper_ab.episodes.hosts import build_host

    return build_host(config.host)  # type: ignore[arg-type]
