"""Blueprint contract: DOMAIN.md §3 parameter formulas at several widths, shape
preservation, zero-init structure at birth and the placebo's zero effect."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from esper_ab.episodes.blueprints import build_seed, list_blueprints, param_count_formula
from esper_ab.errors import ConfigError

torch.set_num_threads(1)


# Written from the DOMAIN.md tables, independently of the registry.
def _cnn_expected(name: str, c: int) -> int:
    b_se, b_bn = max(1, c // 4), max(8, c // 4)
    return {"noop": 0, "norm": 2 * c + 1, "attention": 2 * c * b_se + c,
            "depthwise": c * c + 11 * c, "bottleneck": 2 * c * b_bn + 9 * b_bn ** 2 + 2 * c,
            "conv_small": c * c + 2 * c, "conv_light": 9 * c * c + 2 * c,
            "conv_heavy": 18 * c * c + 4 * c, "placebo": 1}[name]


def _tf_expected(name: str, d: int) -> int:
    return {"noop": 0, "norm": 2 * d + 1, "lora8": 16 * d, "lora32": 64 * d,
            "attention": 4 * d * d + 4 * d, "mlp_small": 4 * d * d + 3 * d,
            "mlp": 8 * d * d + 5 * d, "placebo": 1}[name]


CASES = ([("cnn", n, w) for n in list_blueprints("cnn") for w in (4, 8, 16, 32, 64)]
         + [("transformer", n, w) for n in list_blueprints("transformer")
            for w in (8, 16, 64, 384)])


def test_catalog_is_complete():
    assert set(list_blueprints("cnn")) == {"noop", "norm", "attention", "depthwise",
                                           "bottleneck", "conv_small", "conv_light",
                                           "conv_heavy", "placebo"}
    assert set(list_blueprints("transformer")) == {"noop", "norm", "lora8", "lora32",
                                                   "attention", "mlp_small", "mlp", "placebo"}
    assert "placebo" not in list_blueprints("cnn", include_placebo=False)


@pytest.mark.parametrize("topology,name,width", CASES)
def test_parameter_count_matches_the_documented_formula_and_shape_is_preserved(
        topology, name, width):
    expected = (_cnn_expected if topology == "cnn" else _tf_expected)(name, width)
    seed = build_seed(name, topology=topology, width=width)
    assert sum(p.numel() for p in seed.parameters()) == expected
    assert param_count_formula(name, topology, width) == expected
    h = torch.randn(2, width, 5, 5) if topology == "cnn" else torch.randn(2, 7, width)
    assert seed(h).shape == h.shape


def test_hand_computed_counts_at_c16_and_d384():
    cnn = {n: param_count_formula(n, "cnn", 16) for n in list_blueprints("cnn")}
    assert cnn == {"noop": 0, "norm": 33, "attention": 144, "depthwise": 432,
                   "bottleneck": 864, "conv_small": 288, "conv_light": 2336,
                   "conv_heavy": 4672, "placebo": 1}
    tf = {n: param_count_formula(n, "transformer", 384) for n in list_blueprints("transformer")}
    assert tf == {"noop": 0, "norm": 769, "lora8": 6144, "lora32": 24576,
                  "attention": 591360, "mlp_small": 590976, "mlp": 1181568, "placebo": 1}


IDENTITY_AT_BIRTH = [("cnn", n) for n in ("noop", "norm", "bottleneck", "conv_small", "placebo")] \
    + [("transformer", n) for n in list_blueprints("transformer")]


@pytest.mark.parametrize("topology,name", IDENTITY_AT_BIRTH)
def test_zero_initialized_blueprints_are_exactly_the_identity_at_birth(topology, name):
    seed = build_seed(name, topology=topology, width=16)
    h = torch.randn(3, 16, 6, 6) if topology == "cnn" else torch.randn(3, 5, 16)
    assert torch.equal(seed(h), h)


def test_squeeze_excite_starts_as_a_095_gate_and_default_init_convs_do_not_start_at_identity():
    h = torch.randn(2, 16, 6, 6)
    se = build_seed("attention", topology="cnn", width=16)
    assert torch.allclose(se(h), h * torch.sigmoid(torch.tensor(3.0)))
    for name in ("depthwise", "conv_light", "conv_heavy"):
        assert not torch.equal(build_seed(name, topology="cnn", width=16)(h), h)


def _grads_at_birth(name, topology="cnn", width=16):
    torch.manual_seed(0)
    seed = build_seed(name, topology=topology, width=width)
    h = torch.randn(4, width, 6, 6) if topology == "cnn" else torch.randn(4, 5, width)
    target = torch.randn_like(h)
    F.mse_loss(seed(h), target).backward()
    return {n: p.grad for n, p in seed.named_parameters()}


def test_layers_before_a_zero_output_layer_get_exactly_zero_gradient():
    g = _grads_at_birth("attention")
    assert torch.count_nonzero(g["fc1.weight"]) == 0 and torch.count_nonzero(g["fc2.weight"]) > 0
    g = _grads_at_birth("bottleneck")
    assert torch.count_nonzero(g["down.weight"]) == 0 and torch.count_nonzero(g["mid.weight"]) == 0
    assert torch.count_nonzero(g["up.weight"]) > 0
    g = _grads_at_birth("norm")
    assert g["gate"].item() != 0 and torch.count_nonzero(g["norm.weight"]) == 0
    g = _grads_at_birth("lora8", "transformer")
    assert torch.count_nonzero(g["down.weight"]) == 0 and torch.count_nonzero(g["up.weight"]) > 0
    g = _grads_at_birth("mlp", "transformer")
    assert torch.count_nonzero(g["fc1.weight"]) == 0 and torch.count_nonzero(g["fc2.weight"]) > 0


@pytest.mark.parametrize("name", ["conv_small", "placebo"])
def test_dead_at_birth_blueprints_have_all_zero_gradients(name):
    grads = _grads_at_birth(name)
    assert grads and all(g is None or torch.count_nonzero(g) == 0 for g in grads.values())


def test_build_seed_is_deterministic_with_a_generator():
    a = build_seed("conv_heavy", topology="cnn", width=8, generator=torch.Generator().manual_seed(1))
    b = build_seed("conv_heavy", topology="cnn", width=8, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_unknown_names_topologies_and_widths_raise_config_errors():
    with pytest.raises(ConfigError, match="lora8"):
        build_seed("lora8", topology="cnn", width=16)
    with pytest.raises(ConfigError, match="topology"):
        list_blueprints("rnn")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="width"):
        param_count_formula("norm", "cnn", 0)
    with pytest.raises(ConfigError, match="multiple of 4"):
        build_seed("attention", topology="transformer", width=10)
