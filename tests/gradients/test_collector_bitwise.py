"""The collector's recorded numbers are bit for bit those of the collector at 4865c51.

Cached episode traces and pinned cache keys hold these numbers, so a faster collector
must not move a single bit. ``collector_4865c51.py`` is that collector, frozen verbatim;
each test gives both collectors the same gradients, step after step, and compares every
GradStats field (floats by their bits, NaN included). The values themselves are checked
against an independent float64 loop in tests/test_gradients.py.
"""

from __future__ import annotations

import importlib.util
import math
import struct
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from esper_ab.episodes.hosts import CNNHost, CNNHostConfig, TransformerHost, TransformerHostConfig
from esper_ab.gradients import LAYER_TYPES, GradientCollector

_spec = importlib.util.spec_from_file_location(
    "collector_4865c51", Path(__file__).with_name("collector_4865c51.py"))
old = importlib.util.module_from_spec(_spec)
sys.modules["collector_4865c51"] = old               # dataclasses look their module up
_spec.loader.exec_module(old)


def _bits(v):
    return struct.pack("<d", v).hex() if isinstance(v, float) else v


def _rows(stats_per_step):
    return [{name: {k: _bits(v) for k, v in s.to_row().items()} for name, s in step.items()}
            for step in stats_per_step]


class Pair:
    """The current and the frozen collector over the same groups, fed the same steps."""

    def __init__(self, groups, branch_free=False):
        self.new, self.old = GradientCollector(groups), old.GradientCollector(groups)
        self.new._branch_free = self.old._branch_free = branch_free
        self.pending_new, self.pending_old = [], []

    def collect(self):
        self.pending_new.append(self.new.collect())
        self.pending_old.append(self.old.collect())

    def check(self):
        new = _rows(self.new.materialize(self.pending_new))
        assert new == _rows(self.old.materialize(self.pending_old))
        self.pending_new, self.pending_old = [], []
        return new

    def direct(self):
        return [b.direct for b in self.new._plan.buckets]


def _gpt():
    cfg = TransformerHostConfig(vocab_size=512, context_length=64, width=128, n_layers=4,
                                n_heads=4)
    model = TransformerHost(cfg)
    idx = torch.randint(0, 512, (4, 64))
    return model, lambda: nn.functional.cross_entropy(
        model(idx).flatten(0, 1), torch.randint(0, 512, (4 * 64,)))


def _cnn():
    model = CNNHost(CNNHostConfig(in_channels=3, n_classes=10, base_width=8, n_blocks=3,
                                  image_size=32))
    x = torch.randn(16, 3, 32, 32)
    return model, lambda: nn.functional.cross_entropy(model(x), torch.randint(0, 10, (16,)))


@pytest.mark.parametrize("branch_free", [False, True])
@pytest.mark.parametrize("host, direct", [(_gpt, [True]), (_cnn, [False])])
def test_benchmark_hosts_over_training_steps(host, direct, branch_free):
    """The benchmark's two hosts, AdamW steps between collections; the GPT host's bucket
    takes the new per-gradient path, the CNN host's the fused copy."""
    torch.manual_seed(0)
    model, loss = host()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    pair = Pair({"host": model}, branch_free)
    for step in range(4):
        opt.zero_grad(set_to_none=True)
        loss().backward()
        if step == 2:                       # a zero and a non-finite element, then as usual
            p = next(iter(model.parameters()))
            p.grad.view(-1)[:2] = torch.tensor([0.0, float("nan")])
        pair.collect()
        if step == 2:
            p.grad.view(-1)[1] = 1.0
        opt.step()
    rows = pair.check()
    assert pair.direct() == direct
    assert rows[2]["host"]["n_nonfinite"] == 1 and rows[2]["host"]["n_zero_elements"] >= 1


@pytest.mark.parametrize("branch_free", [False, True])
def test_host_and_27_seeds_with_large_seeds(branch_free):
    """Incubation's shape (a host and 27 seed groups) with seeds large enough for the
    per-gradient path; some seeds idle at one step, so the layouts change between steps."""
    torch.manual_seed(7)
    model, loss = _gpt()
    seeds = {f"seed{k}": nn.Sequential(nn.Linear(96, 96), nn.LayerNorm(96)) for k in range(27)}
    pair = Pair({"host": model, **seeds}, branch_free)
    z = torch.randn(8, 96)
    for step in range(3):
        for m in (model, *seeds.values()):
            m.zero_grad(set_to_none=True)
        idle = {2, 13} if step == 1 else set()
        (loss() + sum(m(z).square().mean() * (k + 1) for k, m in enumerate(seeds.values())
                      if k not in idle)).backward()
        pair.collect()
    pair.check()
    assert pair.direct() == [True]


_SIZES = st.one_of(st.tuples(st.integers(0, 6), st.integers(1, 7)),
                   st.tuples(st.integers(60, 90), st.integers(60, 90)))
_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@settings(max_examples=40, deadline=None)
@given(shapes=st.lists(st.tuples(_SIZES, st.sampled_from(range(4)), st.booleans(),
                                 st.booleans()), min_size=1, max_size=7),
       zero_frac=st.sampled_from([0.0, 0.0, 0.01, 0.5]),
       bad_frac=st.sampled_from([0.0, 0.0, 0.001]), seed=st.integers(0, 10_000),
       n_groups=st.integers(1, 3), branch_free=st.booleans())
def test_random_gradients(shapes, zero_frac, bad_frac, seed, n_groups, branch_free):
    """Small and large gradients of four dtypes (a bucket per dtype), transposed (not
    contiguous) gradients, signed zeros, NaN and infinities, missing gradients."""
    gen = torch.Generator().manual_seed(seed)
    groups: dict[str, list] = {f"g{k}": [] for k in range(n_groups)}
    for i, ((a, b), dt, transposed, has_grad) in enumerate(shapes):
        dtype = _DTYPES[dt]
        p = nn.Parameter(torch.zeros(a, b, dtype=dtype))
        if has_grad:
            g = torch.randn(b, a, generator=gen, dtype=torch.float64) * 10.0 ** (i - 3)
            g[torch.rand(b, a, generator=gen) < zero_frac] = -0.0 if i % 2 else 0.0
            bad = torch.rand(b, a, generator=gen) < bad_frac
            g[bad] = torch.tensor([math.nan, math.inf, -math.inf],
                                  dtype=torch.float64)[torch.arange(int(bad.sum())) % 3]
            g = g.to(dtype)
            p.grad = g.t() if transposed else g.t().contiguous()
        groups[f"g{i % n_groups}"].append((p, LAYER_TYPES[i % len(LAYER_TYPES)]))
    pair = Pair(groups, branch_free)
    for _ in range(2):                      # the second step reuses the cached layout
        pair.collect()
    pair.check()
