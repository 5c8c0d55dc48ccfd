"""``esper-lite-cnn``: esper-lite's own CNN host and CNN seed catalog as an esper-ab workload.

- Host: ``esper.kasmina.host.CNNHost`` with esper-lite's ``cifar_baseline`` settings
  (``num_classes=10, base_channels=8``: 3 blocks, 8 -> 16 -> 32 channels, pooling after
  each, about 6.4k parameters). Its slots are esper-lite's own segment ids in execution
  order (``r0c0`` after block 1 before pooling, ``r1c0`` after its pooling, ``r0c1``, ...),
  and a slot hook runs through its own routing (``forward_to_segment`` /
  ``forward_from_segment``), the path ``MorphogeneticModel`` applies its slots on.
- Catalog: every blueprint esper-lite registers for topology ``cnn``
  (``BlueprintRegistry.list_for_topology("cnn")``, its order: by parameter estimate), each
  built by esper-lite's own factory; a blueprint fits a slot when its factory builds at that
  width. The placebo is esper-ab's.
- Data: a local CIFAR-10 python-pickle folder (``data_dir``, as the ``cifar10`` workload
  reads it; nothing is downloaded) or, with no folder, generated 32x32 images: the
  ``synthetic-cnn`` task (4 classes under a random exposure; the host keeps 10 outputs).
- Host pretraining is esper-ab's (AdamW, cosine), the same for every workload.

esper-lite is imported only when the workload is resolved (``WORKLOAD`` is a function), and
a missing esper-lite is one line naming the fix. Nothing here changes esper-lite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esper_ab.errors import ConfigError, bad_value

__all__ = ["NAME", "WORKLOAD", "EsperLiteCNNOptions", "esper_lite_workload"]

NAME = "esper-lite-cnn"
_FIX = ("put esper-lite's src/ folder on PYTHONPATH (or pip install it) in the environment "
        "that runs esper-ab")


@dataclass(frozen=True)
class EsperLiteCNNOptions:
    """Options of ``esper-lite-cnn`` (a space's ``data:``). ``data_dir``: a CIFAR-10 python
    folder, or ``None`` for generated data."""

    data_dir: str | None = None
    n_train: int = 2048
    n_test: int = 1024
    num_classes: int = 10
    base_channels: int = 8

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "base_channels"):
            if getattr(self, name) < 1:
                raise bad_value(f"EsperLiteCNNOptions.{name}", getattr(self, name), "use >= 1")
        if self.num_classes < 4:
            raise bad_value("EsperLiteCNNOptions.num_classes", self.num_classes,
                            "use 4 or more (generated data has 4 classes; CIFAR-10 has 10)")


def _esper() -> tuple[Any, Any]:
    try:
        from esper.kasmina.blueprints import BlueprintRegistry
        from esper.kasmina.host import CNNHost
    except ImportError as exc:
        raise ConfigError(f"workload {NAME} needs esper-lite ({type(exc).__name__}: {exc}): "
                          f"{_FIX}") from None
    return CNNHost, BlueprintRegistry


def _host_class() -> type:
    import torch
    from torch import nn

    class EsperLiteHost(nn.Module):
        """esper-lite's ``CNNHost`` behind esper-ab's ``Host`` protocol."""

        def __init__(self, host: nn.Module) -> None:
            super().__init__()
            self.host = host
            self.slot_names: tuple[str, ...] = tuple(host.execution_order())
            self._widths = {s: int(c) for s, c in host.segment_channels.items()}

        def slot_width(self, slot: str) -> int:
            if slot not in self._widths:
                raise bad_value("slot", slot, f"choose one of {', '.join(self.slot_names)}")
            return self._widths[slot]

        def forward(self, x: torch.Tensor, slot_hook: Any = None) -> torch.Tensor:
            if slot_hook is None:
                return self.host(x)
            previous = None
            for segment in self.slot_names:
                x = self.host.forward_to_segment(segment, x, from_segment=previous)
                x = slot_hook(segment, x)
                previous = segment
            return self.host.forward_from_segment(previous, x)

    return EsperLiteHost


def _fits(spec: Any) -> Any:
    cache: dict[int, str | None] = {}

    def fits(width: int) -> str | None:
        if width not in cache:
            try:
                spec.factory(width)
                cache[width] = None
            except Exception as exc:  # noqa: BLE001 - esper-lite's own refusal, as a reason
                cache[width] = (f"esper-lite's factory refuses width {width} "
                                f"({type(exc).__name__}: {' '.join(str(exc).split())[:100]})")
        return cache[width]

    return fits


def esper_lite_workload() -> Any:
    """The ``esper-lite-cnn`` plug-in (imports esper-lite)."""
    from esper_ab.episodes.workloads import PretrainConfig, WorkloadPlugin, cifar10, synthetic_cnn
    from esper_ab.plugins import Blueprint, BlueprintCatalog

    cnn_host, registry = _esper()
    host_class = _host_class()
    catalog = BlueprintCatalog("esper-lite-cnn", tuple(
        Blueprint(spec.name, lambda width, spec=spec: spec.factory(width), fits=_fits(spec),
                  residual_form=spec.description)
        for spec in registry.list_for_topology("cnn")))

    def host(config: Any) -> Any:
        o: EsperLiteCNNOptions = config.data
        return host_class(cnn_host(num_classes=o.num_classes, base_channels=o.base_channels))

    def data(config: Any, replicate: int) -> Any:
        o: EsperLiteCNNOptions = config.data
        if o.data_dir:
            inner = cifar10.default_config(data_dir=o.data_dir, n_train=o.n_train,
                                           n_test=o.n_test)
            return cifar10.build(inner, replicate)
        inner = synthetic_cnn.default_config(image_size=32, n_train=o.n_train, n_test=o.n_test)
        return synthetic_cnn.build(inner, replicate)

    return WorkloadPlugin(
        name=NAME, host=host, data=data, catalog=catalog, default_slot="r0c1",
        options=EsperLiteCNNOptions,
        pretrain=PretrainConfig(steps=400, batch_size=32, lr=3e-3),
        tiny={"n_train": 256, "n_test": 256},
        episode={"steps_per_epoch": 5, "horizon_epochs": 6},   # 32x32 steps cost 4x
        description="esper-lite's CNNHost (cifar_baseline) and its CNN blueprint catalog")


WORKLOAD = esper_lite_workload   # resolved lazily: esper-lite is imported only when used
