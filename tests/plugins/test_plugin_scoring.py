"""A seed's value is in the workload's own terms: held-out evaluation (serial forks, batched
forks, the decision point) uses the plug-in's loss, accuracy and per-target correctness;
the built-in workloads keep exactly their cross-entropy / argmax values and cache keys.

Every expected number is recomputed here independently (numpy / scipy on the logits or on
the targets alone), never read back from the code under test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax

from esper_ab.episodes._training import evaluate, generator, phase_seed
from esper_ab.episodes.workloads import (
    IGNORE_INDEX,
    build_workload,
    config_hash,
    workload_config,
)
from esper_ab.episodes.workloads import synthetic_cnn as cnn_module
from esper_ab.errors import ConfigError
from esper_ab.plugins import ContractError, check_workload

CPU = torch.device("cpu")


# -- plug-ins of this module (module:attribute references) ----------------------------------

def top2_correct(logits, y):
    """Correct when the target is among the two largest logits (every target scored)."""
    return (logits.topk(2, dim=-1).indices == y[:, None]).any(dim=-1)


def own_loss(logits, y):
    """Twice the label-smoothed cross-entropy (a scale the argmax default would not show)."""
    return 2.0 * F.cross_entropy(logits, y, label_smoothing=0.2)


def even_of_scored(logits, y):
    """Scores only targets other than class 3; one is correct when its class is even.
    Depends on the targets alone, so the accuracy is known from the data."""
    kept = y[y != 3]
    return kept % 2 == 0


def top2_counts(logits, y):
    flags = top2_correct(logits, y)
    return flags.sum(), flags.numel()


def wrong_counts(logits, y):                     # disagrees with top2_correct
    return logits.new_tensor(0), y.numel()


def _variant(name: str, **changes):
    return dataclasses.replace(cnn_module.WORKLOAD, name=name, **changes)


TOP2 = _variant("cnn-top2", correct=top2_correct, loss=own_loss)
TOP2_BOTH = _variant("cnn-top2-both", correct=top2_correct, accuracy=top2_counts)
EVEN = _variant("cnn-even", correct=even_of_scored)
DISAGREE = _variant("cnn-disagree", correct=top2_correct, accuracy=wrong_counts)


def _workload(reference: str, **options):
    options = {"n_train": 64, "n_test": 203, **options}
    return build_workload(workload_config(reference, **options), seed=0)


def _host(workload):
    return workload.build_host(generator=generator(phase_seed(0, "host"))).eval()


def _ce(logits: np.ndarray, y: np.ndarray, smoothing: float = 0.0) -> float:
    """Mean (label-smoothed) cross-entropy, float64, by scipy's log-softmax."""
    logp = log_softmax(logits.astype(np.float64), axis=-1)
    nll = -logp[np.arange(len(y)), y]
    return float(np.mean((1 - smoothing) * nll + smoothing * -logp.mean(axis=-1)))


# -- built-ins: exactly the cross-entropy / argmax they always had --------------------------

def test_a_builtin_image_workload_is_scored_by_cross_entropy_and_argmax():
    workload = _workload("synthetic-cnn")
    host = _host(workload)
    with torch.no_grad():
        logits = host(workload.test_x).numpy()
    y = workload.test_y.numpy()
    out = evaluate(host, workload, device=CPU, batch_size=50)      # 203 rows: 5 batches
    expected = logits.argmax(axis=1) == y
    np.testing.assert_array_equal(out.correct, expected)
    assert out.acc == expected.mean()
    assert out.loss == pytest.approx(_ce(logits, y), rel=1e-6)


def test_a_builtin_sequence_workload_skips_ignored_targets_as_before():
    workload = _workload("synthetic-seq", n_train=32, n_test=37)
    host = _host(workload)
    with torch.no_grad():
        logits = host(workload.test_x).numpy()
    y = workload.test_y.numpy()
    flat, fy = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    scored = fy != IGNORE_INDEX
    assert 0 < scored.sum() < fy.size                       # the sequences do ignore targets
    out = evaluate(host, workload, device=CPU, batch_size=10)
    expected = flat[scored].argmax(axis=1) == fy[scored]
    np.testing.assert_array_equal(out.correct, expected)
    assert out.acc == expected.mean()
    assert out.loss == pytest.approx(_ce(flat[scored], fy[scored]), rel=1e-6)


def test_builtin_cache_keys_did_not_change():
    # computed with the code before held-out scoring followed the plug-in (commit f24371a):
    # the episode and pretrained-host caches of the built-ins stay valid
    assert config_hash(workload_config("synthetic-cnn")) == PINNED["synthetic-cnn"]
    assert config_hash(workload_config("synthetic-seq")) == PINNED["synthetic-seq"]
    assert config_hash(workload_config("digits")) == PINNED["digits"]
    for name in ("synthetic-cnn", "synthetic-seq", "digits"):
        assert workload_config(name).scoring == ""


PINNED = {"synthetic-cnn": "b6dba8a2f36296b0", "synthetic-seq": "62ab307c460bde9a", "digits": "926bc57d34f9828c"}


# -- a plug-in's own accuracy and loss ------------------------------------------------------

def test_held_out_evaluation_uses_the_plugins_top2_accuracy_and_own_loss():
    workload = _workload("test_plugin_scoring:TOP2")
    host = _host(workload)
    with torch.no_grad():
        logits = host(workload.test_x).numpy()
    y = workload.test_y.numpy()
    out = evaluate(host, workload, device=CPU, batch_size=50)
    top2 = np.argsort(-logits, axis=1)[:, :2]
    expected = (top2 == y[:, None]).any(axis=1)
    assert expected.mean() != (logits.argmax(axis=1) == y).mean()   # top-2 is not argmax
    np.testing.assert_array_equal(out.correct, expected)
    assert out.acc == pytest.approx(expected.mean(), abs=1e-12)
    assert out.loss == pytest.approx(2 * _ce(logits, y, smoothing=0.2), rel=1e-6)
    assert out.loss != pytest.approx(_ce(logits, y), rel=1e-3)
    # the accuracy given with its per-target flags gives the same numbers
    both = _workload("test_plugin_scoring:TOP2_BOTH")
    out2 = evaluate(host, both, device=CPU, batch_size=64)
    np.testing.assert_array_equal(out2.correct, expected)
    assert out2.acc == pytest.approx(expected.mean(), abs=1e-12)


def test_batched_forks_score_each_fork_by_the_plugins_accuracy():
    from esper_ab.episodes import _stacked as stacked

    workload = _workload("test_plugin_scoring:TOP2")
    host = _host(workload)
    model = stacked.StackedCNN(host, 3)
    with torch.no_grad():
        host_logits = host(workload.test_x).numpy()
        y = workload.test_y.numpy()
    expected = (np.argsort(-host_logits, axis=1)[:, :2] == y[:, None]).any(axis=1)
    outs = stacked.evaluate_stacked(model, workload, batch_size=64)
    assert len(outs) == 3
    for out in outs:                        # every fork is still the host: its numbers
        np.testing.assert_array_equal(out.correct, expected)
        assert out.acc == pytest.approx(expected.mean(), abs=1e-12)
        assert out.loss == pytest.approx(2 * _ce(host_logits, y, smoothing=0.2), rel=1e-5)
    # the built-in keeps its fused argmax / cross-entropy scoring
    builtin = _workload("synthetic-cnn")
    plain = stacked.evaluate_stacked(stacked.StackedCNN(host, 2), builtin, batch_size=64)
    with torch.no_grad():
        logits = host(builtin.test_x).numpy()
    for out in plain:
        np.testing.assert_array_equal(out.correct, logits.argmax(axis=1) == builtin.test_y.numpy())
        assert out.loss == pytest.approx(_ce(logits, builtin.test_y.numpy()), rel=1e-5)


def test_batched_training_loss_is_the_plugins_loss_per_fork():
    from esper_ab.episodes import _stacked as stacked

    logits = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    own = stacked.stacked_loss(logits, y, loss=own_loss)
    by_hand = sum(2 * _ce(logits[:, j].numpy(), y.numpy(), smoothing=0.2) for j in range(3))
    assert float(own) == pytest.approx(by_hand, rel=1e-5)
    assert float(stacked.stacked_loss(logits, y)) == pytest.approx(
        sum(_ce(logits[:, j].numpy(), y.numpy()) for j in range(3)), rel=1e-5)


def test_episode_and_closed_loop_values_follow_a_plugin_that_scores_only_some_targets(tmp_path):
    from esper_ab.episodes import episode_config, run_episode

    config = episode_config("test_plugin_scoring:EVEN", size="tiny", blueprints=["depthwise"],
                            incubation_epochs=2, horizon_epochs=1)
    test_y = build_workload(config.workload, seed=0).test_y.numpy()
    kept = test_y[test_y != 3]
    expected = float(np.mean(kept % 2 == 0))      # the plug-in's accuracy, from the data
    assert 0 < expected < 1
    seeds = run_episode(config, replicate=0, cache_dir=tmp_path).seeds
    for column in ("heldout_acc", "placebo_heldout_acc", "decision_heldout_acc"):
        assert seeds[column].to_numpy() == pytest.approx(expected, abs=1e-12), column
    assert (seeds["value_acc_pp"] == 0).all() and (seeds["value_acc_se_pp"] == 0).all()
    assert (seeds["removal_cost_pp"] == 0).all()
    from esper_ab.episodes import run_closed_loop

    loop = run_closed_loop(config, replicate=0, cache_dir=tmp_path).table   # the gate in it
    assert loop["final_heldout_acc"].to_numpy() == pytest.approx(expected, abs=1e-12)


# -- identity in the cache key, contracts -----------------------------------------------

def test_a_plugins_own_scoring_keys_its_caches():
    plain = workload_config("synthetic-cnn")
    top2 = workload_config("test_plugin_scoring:TOP2")
    assert "correct=test_plugin_scoring.top2_correct" in top2.scoring
    assert "loss=test_plugin_scoring.own_loss" in top2.scoring
    same_but_default = dataclasses.replace(top2, scoring="")
    assert config_hash(top2) != config_hash(same_but_default)
    assert config_hash(workload_config("test_plugin_scoring:EVEN")) != config_hash(top2)
    assert plain.scoring == ""


def test_a_custom_accuracy_without_per_target_correct_is_one_clear_error():
    with pytest.raises(ConfigError, match="own accuracy but no correct: give correct") as info:
        _variant("cnn-acc-only", accuracy=top2_counts)
    assert "\n" not in str(info.value)


def test_accuracy_and_correct_that_disagree_fail_validate_and_evaluation():
    config = workload_config("test_plugin_scoring:DISAGREE", n_train=16, n_test=16)
    with pytest.raises(ContractError, match="correct\\(\\) marks .* but its accuracy\\(\\) "
                                            "counts 0 of 8: make them agree"):
        check_workload(config, blueprints=["depthwise"])
    workload = build_workload(config, seed=0)
    with pytest.raises(ConfigError, match="make them agree"):
        evaluate(_host(workload), workload, device=CPU)
    check_workload(workload_config("test_plugin_scoring:TOP2_BOTH", n_train=16, n_test=16),
                   blueprints=["depthwise"])            # a consistent pair passes


@pytest.mark.gpu
def test_a_plugins_own_scoring_runs_on_cuda_as_on_the_cpu():
    from esper_ab.episodes import episode_config, run_episode

    workload = _workload("test_plugin_scoring:TOP2")
    host = _host(workload)
    cpu = evaluate(host, workload, device=CPU, batch_size=50)
    cuda = torch.device("cuda")
    gpu = evaluate(host.to(cuda), workload.to(cuda), device=cuda, batch_size=50)
    assert gpu.acc == pytest.approx(cpu.acc, abs=2 / len(cpu.correct))
    config = episode_config("test_plugin_scoring:EVEN", size="tiny", blueprints=["depthwise"],
                            incubation_epochs=2, horizon_epochs=1)
    result = run_episode(config, replicate=0, cache_dir=None, device="cuda")
    assert result.device == "cuda"
    test_y = build_workload(config.workload, seed=0).test_y.numpy()
    kept = test_y[test_y != 3]
    assert result.seeds["heldout_acc"].to_numpy() == pytest.approx(np.mean(kept % 2 == 0))
