"""Deliberately broken variants of the example ``shapes`` workload, one fault each, named in
test spaces as ``broken_shapes:NAME`` (this folder is on ``sys.path`` under pytest)."""

from __future__ import annotations

import dataclasses

import torch
from shapes_workload import CATALOG, WORKLOAD, Gain, ShapesNet, make_data, make_host
from torch import nn

from esper_ab.plugins import Blueprint, BlueprintCatalog, ModuleHost, WorkloadData


def _variant(**changes):
    return dataclasses.replace(WORKLOAD, **changes)


# a required attribute is missing: the host is a bare nn.Module (no slot_names / slot_width)
NO_SLOTS = _variant(host=lambda config: ShapesNet(config.data.width))

# a factory raises: the host factory, the data loader, a blueprint factory
def _host_raises(config):
    raise RuntimeError("weights file missing")


HOST_RAISES = _variant(host=_host_raises)


def _data_raises(config, replicate):
    raise OSError("no such dataset folder")


DATA_RAISES = _variant(data=_data_raises)


def _exploding(width):
    raise RuntimeError(f"cannot build at {width}")


SEED_RAISES = _variant(catalog=BlueprintCatalog("broken-raises", (
    *CATALOG.blueprints[:-1], Blueprint("exploding", _exploding))))

# a blueprint cannot be built at a slot's width: it declares multiples of 3 only, or it
# changes the shape of h
THIRDS = _variant(catalog=BlueprintCatalog("broken-thirds", (
    Blueprint("gain", Gain),
    Blueprint("grouped", lambda w: nn.Conv2d(w, w, 1, groups=3),
              fits=lambda w: None if w % 3 == 0 else "it needs a multiple of 3 channels"))))
WIDENS = _variant(catalog=BlueprintCatalog("broken-widens", (
    Blueprint("widen", lambda w: nn.Conv2d(w, 2 * w, 1)),)))


# the host is not bit-identical while seeds incubate: it behaves differently when hooked
class _Nudged(ModuleHost):
    def forward(self, x, slot_hook=None):
        out = super().forward(x, slot_hook)
        return out if slot_hook is None else out * 1.001


NOT_IDENTICAL = _variant(host=lambda config: _Nudged(ShapesNet(config.data.width),
                                                     ["stem", "body"],
                                                     widths={"stem": config.data.width,
                                                             "body": 2 * config.data.width}))


# data is not deterministic per replicate: a draw from the global RNG
def _unseeded(config, replicate):
    good = make_data(config, replicate)
    return WorkloadData(good.train_x + 0.01 * torch.randn(good.train_x.shape), good.train_y,
                        good.test_x, good.test_y)


UNSEEDED = _variant(data=_unseeded)

# not a WorkloadPlugin at all
NOT_A_PLUGIN = {"name": "shapes", "host": make_host}
