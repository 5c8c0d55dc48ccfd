"""Hosts: slots, shapes, parameter counts, tied embedding, causality, identity hooks."""

from __future__ import annotations

import pytest
import torch

from esper_ab.episodes.hosts import (
    CNNHost,
    CNNHostConfig,
    TransformerHost,
    TransformerHostConfig,
    build_host,
)
from esper_ab.errors import ConfigError

torch.set_num_threads(1)


def test_cifar_baseline_has_about_6_4k_parameters():
    host = CNNHost(CNNHostConfig())  # 3 -> 8 -> 16 -> 32, 10 classes
    # conv weights 27*8 + 72*16 + 144*32, BN 2*(8+16+32), head 32*10 + 10 (by hand)
    expected = 27 * 8 + 72 * 16 + 144 * 32 + 2 * (8 + 16 + 32) + 32 * 10 + 10
    assert sum(p.numel() for p in host.parameters()) == expected == 6418


def test_cnn_slots_sit_before_and_after_pooling_with_the_right_widths():
    host = CNNHost(CNNHostConfig(image_size=16))
    seen = {}

    def hook(slot, h):
        seen[slot] = tuple(h.shape)
        return h

    host(torch.randn(2, 3, 16, 16), hook)
    assert list(seen) == list(host.slot_names)
    assert seen["block1.pre_pool"] == (2, 8, 16, 16)
    assert seen["block1.post_pool"] == (2, 8, 8, 8)
    assert seen["block2.pre_pool"] == (2, 16, 8, 8)
    assert seen["block3.post_pool"] == (2, 32, 2, 2)
    for slot, shape in seen.items():
        assert host.slot_width(slot) == shape[1]


def test_cnn_block_on_a_1x1_map_has_no_pool_slot():
    host = CNNHost(CNNHostConfig(in_channels=1, image_size=4, n_blocks=3))
    assert host.slot_names[-1] == "block3.pre_pool"
    assert host(torch.randn(2, 1, 4, 4)).shape == (2, 10)


@pytest.mark.parametrize("config", [CNNHostConfig(image_size=8), TransformerHostConfig()])
def test_identity_hook_changes_nothing(config):
    torch.manual_seed(0)
    host = build_host(config)
    x = (torch.randn(3, 3, 8, 8) if isinstance(config, CNNHostConfig)
         else torch.randint(0, config.vocab_size, (3, 10)))
    host.eval()
    assert torch.equal(host(x), host(x, lambda slot, h: h))


def test_unknown_slot_is_a_config_error_naming_the_valid_ones():
    with pytest.raises(ConfigError, match="block1.pre_pool"):
        CNNHost(CNNHostConfig()).slot_width("block7.pre_pool")
    with pytest.raises(ConfigError, match="layer1"):
        TransformerHost(TransformerHostConfig()).slot_width("layer9")


def test_transformer_ties_embedding_and_head_and_is_causal():
    cfg = TransformerHostConfig(vocab_size=20, context_length=12, width=16, n_layers=3,
                                n_heads=4)
    host = TransformerHost(cfg)
    assert host.slot_names == ("layer1", "layer2", "layer3")
    n_embedding = sum(p.numel() for n, p in host.named_parameters() if n.startswith("tok"))
    assert n_embedding == 20 * 16  # the head adds no parameters: it is the embedding
    x = torch.randint(0, 20, (2, 12))
    logits = host(x)
    assert logits.shape == (2, 12, 20)
    y = x.clone()
    y[:, 8:] = (y[:, 8:] + 1) % 20  # change the future only
    assert torch.allclose(host(y)[:, :8], logits[:, :8], atol=1e-6)


def test_transformer_init_is_gpt2_style():
    torch.manual_seed(0)
    host = TransformerHost(TransformerHostConfig(width=64, n_layers=4, vocab_size=256))
    assert abs(host.tok.weight.std().item() - 0.02) < 0.002
    proj = host.blocks[0].proj.weight
    assert abs(proj.std().item() - 0.02 / (2 * 4) ** 0.5) < 0.002
    assert torch.count_nonzero(host.blocks[0].fc.bias) == 0


def test_build_host_with_a_generator_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_host(CNNHostConfig(), generator=torch.Generator().manual_seed(3))
    b = build_host(CNNHostConfig(), generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_bad_host_configs_raise_config_errors():
    with pytest.raises(ConfigError):
        CNNHostConfig(base_width=0)
    with pytest.raises(ConfigError, match="n_heads"):
        TransformerHostConfig(width=30, n_heads=4)
