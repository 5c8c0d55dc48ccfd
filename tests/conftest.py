"""Shared pytest configuration: markers, the CUDA skip for `gpu` tests, and the xdist plan
(suite_plan: the longest modules first; one Ray token before the workers start)."""

from __future__ import annotations

import os

import pytest
from suite_plan import heavy_first

from esper_ab.study.auth import claim_token

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    workers = getattr(config.option, "numprocesses", None)
    if workers and not os.environ.get("PYTEST_XDIST_WORKER"):   # the controller
        claim_token()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = heavy_first(items)
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none available)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
