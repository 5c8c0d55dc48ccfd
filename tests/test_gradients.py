"""The collector against a plain float64 per-tensor loop on real modules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from esper_ab.gradients import (
    LAYER_TYPES,
    GradientCollector,
    GradStats,
    TypeStats,
    classify_layer,
    typed_parameters,
)


class TiedLM(nn.Module):
    """Embedding tied to the output head, with a LayerNorm and a free parameter."""

    def __init__(self, vocab=11, d=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight
        self.gain = nn.Parameter(torch.ones(d))

    def forward(self, idx):
        return self.head(self.ln(self.emb(idx)) * self.gain)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = self.bn(self.gn(self.conv(x))).relu()
        return self.fc(h.mean(dim=(2, 3)))


def reference(params_with_types):
    """Independent float64 loop: per tensor, no foreach, no grouping."""
    out = {"sum_sq": 0.0, "sum_abs": 0.0, "numel": 0, "n_tensors": 0, "n_with_grad": 0,
           "n_nonfinite": 0, "n_zero": 0}
    by_type = {t: [0.0, 0.0, 0, 0] for t in LAYER_TYPES}
    seen = set()
    for p, t in params_with_types:
        if id(p) in seen:
            continue
        seen.add(id(p))
        out["numel"] += p.numel()
        out["n_tensors"] += 1
        by_type[t][2] += p.numel()
        by_type[t][3] += 1
        if p.grad is None:
            continue
        g = p.grad.detach().double().flatten().numpy()
        out["n_with_grad"] += 1
        out["sum_sq"] += float(np.sum(g * g))
        out["sum_abs"] += float(np.sum(np.abs(g)))
        out["n_nonfinite"] += int(np.sum(~np.isfinite(g)))
        out["n_zero"] += int(np.sum(g == 0))
        by_type[t][0] += float(np.sum(g * g))
        by_type[t][1] += float(np.sum(np.abs(g)))
    return out, by_type


def assert_matches(stats: GradStats, ref, by_type):
    assert stats.numel == ref["numel"]
    assert stats.n_tensors == ref["n_tensors"]
    assert stats.n_with_grad == ref["n_with_grad"]
    assert stats.n_nonfinite == ref["n_nonfinite"]
    assert stats.n_zero_elements == ref["n_zero"]
    assert stats.sum_sq == pytest.approx(ref["sum_sq"], rel=1e-5, abs=1e-12)
    assert stats.sum_abs == pytest.approx(ref["sum_abs"], rel=1e-5, abs=1e-12)
    for t in LAYER_TYPES:
        ts = stats.type_stats(t)
        assert ts.numel == by_type[t][2] and ts.n_tensors == by_type[t][3], t
        assert ts.sum_sq == pytest.approx(by_type[t][0], rel=1e-5, abs=1e-12), t
        assert ts.sum_abs == pytest.approx(by_type[t][1], rel=1e-5, abs=1e-12), t


def test_cnn_groups_match_reference():
    torch.manual_seed(0)
    m = SmallCNN()
    m(torch.randn(4, 3, 8, 8)).logsumexp(1).sum().backward()
    stats = GradientCollector({"body": nn.ModuleList([m.conv, m.gn, m.bn]), "head": m.fc}).measure()
    ref, bt = reference([(m.conv.weight, "conv"), (m.conv.bias, "conv"), (m.gn.weight, "norm"),
                         (m.gn.bias, "norm"), (m.bn.weight, "norm"), (m.bn.bias, "norm")])
    assert_matches(stats["body"], ref, bt)
    ref, bt = reference([(m.fc.weight, "linear"), (m.fc.bias, "linear")])
    assert_matches(stats["head"], ref, bt)


def test_tied_embedding_counted_once_as_embedding():
    torch.manual_seed(1)
    m = TiedLM()
    m(torch.randint(0, 11, (3, 5))).logsumexp(-1).sum().backward()
    typed = typed_parameters(m)
    assert len(typed) == 4  # emb/head weight once, ln weight+bias, gain
    assert dict((id(p), t) for p, t in typed)[id(m.emb.weight)] == "embedding"
    stats = GradientCollector({"lm": m}).measure()["lm"]
    ref, bt = reference([(m.emb.weight, "embedding"), (m.ln.weight, "norm"),
                         (m.ln.bias, "norm"), (m.gain, "other"), (m.head.weight, "linear")])
    assert_matches(stats, ref, bt)
    assert stats.numel == 11 * 6 + 6 + 6 + 6


@settings(max_examples=25, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 7)), min_size=1, max_size=5),
       zero_frac=st.floats(0, 1), seed=st.integers(0, 10_000), dtype=st.sampled_from(["f32", "f64"]))
def test_random_gradients_match_reference(shapes, zero_frac, seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float32 if dtype == "f32" else torch.float64
    params = []
    for i, (a, b) in enumerate(shapes):
        p = nn.Parameter(torch.zeros(a, b, dtype=dt))
        g = torch.randn(a, b, generator=gen, dtype=dt) * 10 ** (i - 2)
        g[torch.rand(a, b, generator=gen) < zero_frac] = 0
        p.grad = g
        params.append((p, LAYER_TYPES[i % len(LAYER_TYPES)]))
    stats = GradientCollector({"g": params}).measure()["g"]
    assert_matches(stats, *reference(params))


def test_nonfinite_and_zero_counts():
    p = nn.Parameter(torch.zeros(6))
    p.grad = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, 0.0, 2.0])
    s = GradientCollector({"g": [p]}).measure()["g"]
    assert s.n_nonfinite == 3
    assert s.n_zero_elements == 2
    assert not s.is_finite
    assert math.isnan(s.sum_sq)


def test_no_gradient_is_not_zero_gradient():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    b.grad = torch.zeros(3)
    stats = GradientCollector({"none": [a], "zero": [b]}).measure()
    assert not stats["none"].has_gradient and not stats["none"].is_all_zero
    assert stats["zero"].has_gradient and stats["zero"].is_all_zero
    assert stats["zero"].n_zero_elements == 3


def test_derived_metrics_have_their_definitions():
    s = GradStats(sum_sq=16.0, sum_abs=10.0, numel=4, n_tensors=2, n_with_grad=2)
    assert s.total_l2 == 4.0
    assert s.rms_per_element == 2.0
    assert s.mean_abs_per_element == 2.5
    assert s.avg_per_tensor_l2 == 2.0  # B7-PT-08's "gradient_norm": total L2 / n_tensors


def test_many_steps_materialize_in_one_call():
    torch.manual_seed(2)
    lin = nn.Linear(4, 3)
    col = GradientCollector({"lin": lin})
    pending, refs = [], []
    for _ in range(3):
        lin.zero_grad()
        lin(torch.randn(5, 4)).sum().backward()
        pending.append(col.collect())
        refs.append(reference([(lin.weight, "linear"), (lin.bias, "linear")]))
    for stats, (ref, bt) in zip(col.materialize(pending), refs, strict=True):
        assert_matches(stats["lin"], ref, bt)


def test_row_round_trip():
    s = GradStats(1.5, 2.5, 10, 3, 2, 1, 4, by_type={"conv": TypeStats(1.0, 2.0, 7, 2),
                                                      "norm": TypeStats(0.5, 0.5, 3, 1)})
    row = s.to_row("seed_")
    assert list(row) == GradStats.column_names("seed_")
    assert GradStats.from_row(row, "seed_") == s


@pytest.mark.parametrize("module,expected", [
    (nn.Conv1d(2, 2, 1), "conv"), (nn.ConvTranspose2d(2, 2, 1), "conv"),
    (nn.Linear(2, 2), "linear"), (nn.LayerNorm(2), "norm"), (nn.GroupNorm(1, 2), "norm"),
    (nn.BatchNorm1d(2), "norm"), (nn.InstanceNorm2d(2, affine=True), "norm"),
    (nn.RMSNorm(2), "norm"), (nn.Embedding(3, 2), "embedding"), (nn.PReLU(), "other"),
])
def test_classifier(module, expected):
    assert classify_layer(module) == expected
