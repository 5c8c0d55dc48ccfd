"""Workload configs, the built ``Workload`` and the shared batching/loss helpers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from esper_ab.errors import bad_value

__all__ = [
    "IGNORE_INDEX",
    "PretrainConfig",
    "Workload",
    "WorkloadConfig",
    "accuracy_counts",
    "config_hash",
    "correct_flags",
    "task_loss",
]

IGNORE_INDEX = -100  # sequence targets that carry no loss


@dataclass(frozen=True)
class PretrainConfig:
    """How the host is trained before any seed germinates (AdamW, fixed number of steps)."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    final_lr_fraction: float = 0.05  # cosine decay from lr to lr * final_lr_fraction

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise bad_value("PretrainConfig.steps", self.steps, "use 0 or more steps")
        if self.batch_size < 1:
            raise bad_value("PretrainConfig.batch_size", self.batch_size, "use 1 or more")
        if not self.lr > 0:
            raise bad_value("PretrainConfig.lr", self.lr, "use a positive learning rate")


# Set by ``_registry`` when the package loads: source or name -> WorkloadPlugin.
_resolve: Callable[[str], Any] | None = None


def _plugin_of(config: WorkloadConfig) -> Any:
    assert _resolve is not None, "import esper_ab.episodes.workloads, not its _base"
    return _resolve(config.source or config.name)


@dataclass(frozen=True)
class WorkloadConfig:
    """Everything that fixes a workload's data, host and host pretraining.

    ``data`` is the workload's own frozen options (generator knobs, a data path) and
    ``host`` its host settings (``None`` when the options carry them); ``source`` is how
    the space named the workload (a registered name or ``module:attribute``), from which
    any process finds its plug-in again. The content hash of the whole config keys the
    pretrained-host and episode caches.
    """

    name: str
    host: object
    data: object
    pretrain: PretrainConfig
    default_slot: str
    # hashed only when it differs from ``name`` (a registered name hashes as it always did)
    source: str = dataclasses.field(default="", metadata={"hash_unless_name": True})
    # the identity of a plug-in's own loss / accuracy / correct ("" with the defaults, and
    # then not hashed: built-in cache keys stay what they were)
    scoring: str = dataclasses.field(default="", metadata={"hash_unless_name": True})

    @property
    def plugin(self) -> Any:
        """The ``WorkloadPlugin`` this config belongs to."""
        return _plugin_of(self)

    @property
    def catalog(self) -> Any:
        """The workload's ``BlueprintCatalog``."""
        return self.plugin.blueprint_catalog

    @property
    def topology(self) -> str:
        """The name of the workload's blueprint catalog (``cnn``, ``transformer``, ...)."""
        return self.catalog.name

    def replace(self, **changes: object) -> WorkloadConfig:
        return dataclasses.replace(self, **changes)


def _jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                  if not (f.metadata.get("hash_unless_name")
                          and getattr(value, f.name) in ("", getattr(value, "name", "")))
                  and not f.metadata.get("keyed_by_format")}
        return {"__type__": type(value).__name__, **fields}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    return value


def config_hash(*parts: object, length: int = 16) -> str:
    """A stable content hash of dataclasses / plain values (sha256, hex prefix)."""
    text = json.dumps([_jsonable(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True, eq=False)
class Workload:
    """A built workload: tensors on the CPU plus its config. Deterministic given the seed.

    ``train_y``/``test_y`` are class indices: shape (N,) for images, (N, T) for sequences
    with ``IGNORE_INDEX`` where a position carries no loss.
    """

    config: WorkloadConfig
    seed: int
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    plugin: Any = None   # the WorkloadPlugin (resolved from the config when None)

    def __post_init__(self) -> None:
        if self.plugin is None:
            object.__setattr__(self, "plugin", _plugin_of(self.config))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def topology(self) -> Any:
        """The workload's ``BlueprintCatalog`` (what ``build_seed(topology=...)`` takes)."""
        return self.plugin.blueprint_catalog

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return self.plugin.loss(logits, y)

    def accuracy(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(number correct, number scored) by the workload's own accuracy."""
        return self.plugin.counts(logits, y)

    def correct(self, logits: Tensor, y: Tensor) -> Tensor:
        """One bool per scored target (its mean is the accuracy), by the workload's own."""
        return self.plugin.flags(logits, y)

    @property
    def n_train(self) -> int:
        return int(self.train_x.shape[0])

    def to(self, device: torch.device | str) -> Workload:
        """The same workload with its tensors on ``device`` (self when already there)."""
        device = torch.device(device)
        if self.train_x.device == device:
            return self
        return dataclasses.replace(
            self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
            test_x=self.test_x.to(device), test_y=self.test_y.to(device))

    def build_host(self, *, generator: torch.Generator | None = None) -> Any:
        return self.plugin.build_host(self.config, generator=generator)

    def slot_names(self) -> tuple[str, ...]:
        return self.build_host().slot_names


def task_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over every target that is not ``IGNORE_INDEX``."""
    if logits.dim() == 3:
        logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    return F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)


def accuracy_counts(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(number correct, number of scored targets) as device tensors (no host sync)."""
    if logits.dim() == 3:
        logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    scored = y != IGNORE_INDEX
    correct = (logits.argmax(dim=-1) == y) & scored
    return correct.sum(), scored.sum()


def correct_flags(logits: Tensor, y: Tensor) -> Tensor:
    """One bool per scored target (``y != IGNORE_INDEX``), in order: argmax equals target.
    The default per-target correctness; ``accuracy_counts`` is its (sum, count)."""
    if logits.dim() == 3:
        logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    scored = y != IGNORE_INDEX
    return logits[scored].argmax(dim=-1) == y[scored]
