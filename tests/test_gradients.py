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


@pytest.mark.parametrize("branch_free", [False, True])
def test_gradients_kept_in_the_graph_are_measured_and_left_there(branch_free):
    """``backward(create_graph=True)``, as a gradient penalty does: the statistics equal
    those of a plain backward (hand-computed reference), the collector adds nothing to the
    graph, and the second-order backward that follows still runs."""
    torch.manual_seed(3)
    m = SmallCNN()
    x = torch.randn(4, 3, 8, 8)
    groups = {"body": nn.ModuleList([m.conv, m.gn, m.bn]), "head": m.fc}
    m(x).logsumexp(1).sum().backward()
    plain = GradientCollector(groups).measure()
    m.zero_grad(set_to_none=True)
    m(x).logsumexp(1).sum().backward(create_graph=True)
    assert m.fc.weight.grad.requires_grad
    collector = GradientCollector(groups)
    collector._branch_free = branch_free
    kept = collector.measure()
    ref, bt = reference([(m.fc.weight, "linear"), (m.fc.bias, "linear")])
    assert_matches(kept["head"], ref, bt)
    ref, bt = reference([(p, "conv") for p in m.conv.parameters()]
                        + [(p, "norm") for p in [*m.gn.parameters(), *m.bn.parameters()]])
    assert_matches(kept["body"], ref, bt)
    for name in groups:   # the double-backward kernels round a little differently
        for field in ("sum_sq", "sum_abs"):
            assert getattr(kept[name], field) == pytest.approx(getattr(plain[name], field),
                                                               rel=1e-5)
        assert (kept[name].numel, kept[name].n_with_grad) == \
            (plain[name].numel, plain[name].n_with_grad)
    penalty = sum(p.grad.pow(2).sum() for p in m.parameters() if p.grad is not None)
    m.fc.weight.grad = None
    penalty.backward()                         # the second order still flows
    assert m.conv.weight.grad is not None and torch.isfinite(m.conv.weight.grad).all()


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


# -- the cached flat layout: both counting paths, invalidation, dtypes, edge cases ------


def _collector(groups, branch_free):
    col = GradientCollector(groups)
    col._branch_free = bool(branch_free)  # True: the accelerator path on the CPU
    return col


@pytest.mark.parametrize("branch_free", [None, True])
@settings(max_examples=25, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(0, 5), st.integers(1, 7)), min_size=1, max_size=6),
       zero_frac=st.floats(0, 1), bad_frac=st.sampled_from([0.0, 0.0, 0.2]),
       seed=st.integers(0, 10_000), n_groups=st.integers(1, 3),
       no_grad=st.lists(st.booleans(), min_size=6, max_size=6))
def test_both_counting_paths_match_reference(branch_free, shapes, zero_frac, bad_frac, seed,
                                             n_groups, no_grad):
    gen = torch.Generator().manual_seed(seed)
    groups: dict[str, list] = {f"g{k}": [] for k in range(n_groups)}
    for i, (a, b) in enumerate(shapes):
        dt = torch.float64 if i % 3 == 2 else torch.float32   # two buckets in one group
        p = nn.Parameter(torch.zeros(a, b, dtype=dt))
        if not no_grad[i]:
            g = torch.randn(a, b, generator=gen, dtype=dt) * 10 ** (i - 2)
            g[torch.rand(a, b, generator=gen) < zero_frac] = -0.0 if i % 2 else 0.0
            bad = torch.rand(a, b, generator=gen) < bad_frac
            g[bad] = torch.tensor([float("nan"), float("inf"), -float("inf")],
                                  dtype=dt)[torch.arange(int(bad.sum())) % 3]
            p.grad = g
        groups[f"g{i % n_groups}"].append((p, LAYER_TYPES[i % len(LAYER_TYPES)]))
    col = _collector(groups, branch_free)
    for _ in range(2):  # the second call reuses the cached layout and buffers
        stats = col.measure()
        for name, params in groups.items():
            ref, bt = reference(params)
            s = stats[name]
            assert (s.n_with_grad, s.n_nonfinite, s.n_zero_elements) == (
                ref["n_with_grad"], ref["n_nonfinite"], ref["n_zero"])
            if ref["n_nonfinite"] == 0:
                assert_matches(s, ref, bt)
            else:
                assert not s.is_finite


@pytest.mark.parametrize("branch_free", [None, True])
def test_layout_rebuilt_when_gradients_appear_vanish_or_change_dtype(branch_free):
    torch.manual_seed(3)
    m = SmallCNN()
    col = _collector({"body": nn.ModuleList([m.conv, m.gn, m.bn]), "head": m.fc}, branch_free)
    body = [(m.conv.weight, "conv"), (m.conv.bias, "conv"), (m.gn.weight, "norm"),
            (m.gn.bias, "norm"), (m.bn.weight, "norm"), (m.bn.bias, "norm")]
    head = [(m.fc.weight, "linear"), (m.fc.bias, "linear")]

    def check():
        stats = col.measure()
        assert_matches(stats["body"], *reference(body))
        assert_matches(stats["head"], *reference(head))

    check()                                     # no gradient anywhere yet
    m(torch.randn(4, 3, 8, 8)).logsumexp(1).sum().backward()
    check()
    m.gn.weight.grad = None                     # one gradient vanishes
    m.fc.bias.grad = torch.zeros_like(m.fc.bias)
    check()
    m.double()                                  # same Parameter objects, new dtype
    m.zero_grad(set_to_none=True)
    m(torch.randn(4, 3, 8, 8, dtype=torch.float64)).logsumexp(1).sum().backward()
    check()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_reduced_in_float32(dtype):
    p = nn.Parameter(torch.zeros(300, dtype=dtype))
    g = torch.linspace(-300, 300, 300).to(dtype)  # g^2 overflows float16 (max 65504)
    g[::7] = 0
    p.grad = g
    s = GradientCollector({"g": [(p, "linear")]}).measure()["g"]
    assert_matches(s, *reference([(p, "linear")]))
    assert math.isfinite(s.sum_sq) and s.sum_sq > 65504


def test_counts_exact_beyond_float32_integers():
    """More than 2**24 elements in one tensor: float32 counters would stop at 2**24."""
    n = 2**24 + 5
    p = nn.Parameter(torch.zeros(n))
    g = torch.zeros(n)
    g[:3] = 1.0
    p.grad = g
    for branch_free in (None, True):
        s = _collector({"g": [p]}, branch_free).measure()["g"]
        assert s.n_zero_elements == n - 3 and s.n_nonfinite == 0 and s.sum_abs == 3.0


def test_empty_groups_and_empty_tensors():
    empty = nn.Parameter(torch.zeros(0, 4))
    empty.grad = torch.zeros(0, 4)
    full = nn.Parameter(torch.zeros(2))
    full.grad = torch.tensor([0.0, 3.0])
    for branch_free in (None, True):
        stats = _collector({"noop": nn.Identity(), "empty": [empty], "both": [empty, full]},
                           branch_free).measure()
        assert stats["noop"].n_tensors == 0 and not stats["noop"].has_gradient
        assert stats["empty"].n_with_grad == 1 and stats["empty"].numel == 0
        assert stats["empty"].n_zero_elements == 0 and stats["empty"].sum_sq == 0.0
        assert stats["both"].n_zero_elements == 1 and stats["both"].sum_sq == 9.0


def test_parameter_in_two_groups_counts_in_each():
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([1.0, -2.0, 0.0])
    stats = GradientCollector({"a": [p], "b": [p, p]}).measure()
    for name in ("a", "b"):
        assert stats[name].n_tensors == 1 and stats[name].sum_sq == 5.0
        assert stats[name].sum_abs == 3.0 and stats[name].n_zero_elements == 1


def test_pending_steps_are_independent_of_the_reused_buffer():
    p = nn.Parameter(torch.zeros(4))
    col = GradientCollector({"g": [p]})
    pending = []
    for k in range(3):
        p.grad = torch.full((4,), float(k + 1))
        pending.append(col.collect())
    assert [s["g"].sum_abs for s in col.materialize(pending)] == [4.0, 8.0, 12.0]



@pytest.mark.parametrize("branch_free", [None, True])
def test_host_and_27_seeds_over_steps_with_changing_layouts_match_reference(branch_free):
    """Incubation's shape: a host and 27 seeds, 28 groups. Three steps collected, then
    materialized in one call; at step 1 a few seeds get no gradient and one has a zero
    and a non-finite element, so each pending step carries its own layout. Every group of
    every step is checked against the independent per-tensor float64 loop."""
    torch.manual_seed(7)
    host = SmallCNN()
    seeds = {f"seed{k}": nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
             for k in range(27)}
    groups = {"host": host, **seeds}
    col = _collector(groups, branch_free)
    x, z = torch.randn(4, 3, 6, 6), torch.randn(2, 8, 5, 5)
    pending, refs = [], []
    for step in range(3):
        for m in groups.values():
            m.zero_grad(set_to_none=True)
        idle = {3, 11, 26} if step == 1 else set()
        loss = host(x).logsumexp(1).sum() + sum(
            m(z).square().mean() * (k + 1) for k, m in enumerate(seeds.values()) if k not in idle)
        loss.backward()
        if step == 1:
            seeds["seed5"][0].weight.grad[0, 0, 0, 0] = 0.0
            seeds["seed5"][0].weight.grad[0, 0, 0, 1] = float("inf")
        pending.append(col.collect())
        refs.append({name: reference(typed_parameters(m)) for name, m in groups.items()})
    for step, (stats, ref_step) in enumerate(zip(col.materialize(pending), refs, strict=True)):
        for name, (ref, bt) in ref_step.items():
            s = stats[name]
            assert (s.n_with_grad, s.n_nonfinite, s.n_zero_elements) == (
                ref["n_with_grad"], ref["n_nonfinite"], ref["n_zero"]), (step, name)
            if ref["n_nonfinite"] == 0:
                assert_matches(s, ref, bt)
            else:
                assert (step, name) == (1, "seed5") and not s.is_finite
        assert [stats[f"seed{k}"].has_gradient for k in (3, 11, 26)] == [step != 1] * 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_collect_matches_reference_without_host_sync():
    torch.manual_seed(4)
    m = TiedLM().cuda()
    m(torch.randint(0, 11, (3, 5), device="cuda")).logsumexp(-1).sum().backward()
    m.gain.grad[0] = float("nan")
    col = GradientCollector({"lm": m})
    col.collect()                                # builds the layout (host->device copies)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pending = col.collect()                  # the hot path: must not sync
    finally:
        torch.cuda.set_sync_debug_mode("default")
    s = col.materialize([pending])[0]["lm"]
    cpu = TiedLM()
    cpu.load_state_dict({k: v.cpu() for k, v in m.state_dict().items()})
    for pc, pg in zip(cpu.parameters(), m.parameters(), strict=True):
        pc.grad = pg.grad.cpu()
    ref, _ = reference([(cpu.emb.weight, "embedding"), (cpu.ln.weight, "norm"),
                        (cpu.ln.bias, "norm"), (cpu.gain, "other")])
    assert (s.n_nonfinite, s.n_zero_elements, s.n_with_grad) == (
        ref["n_nonfinite"], ref["n_zero"], ref["n_with_grad"]) and s.n_nonfinite == 1
