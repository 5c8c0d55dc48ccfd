"""Contract suite over every workload, plus checks pinned to independent sources."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from esper_ab.episodes.workloads import (
    IGNORE_INDEX,
    build_workload,
    config_hash,
    list_workloads,
    task_loss,
    workload_config,
)
from esper_ab.episodes.workloads.cifar10 import load_cifar10_folder
from esper_ab.errors import ConfigError, DataError

torch.set_num_threads(1)

SMALL = {"synthetic-cnn": {"n_train": 64, "n_test": 32},
         "synthetic-seq": {"n_train": 64, "n_test": 32},
         "digits": {}, "cifar10": {"n_train": 20, "n_test": 10},
         "esper-lite-cnn": {"n_train": 64, "n_test": 32}}


def _config(name, cifar_dir):
    if name == "cifar10":
        return workload_config(name, data_dir=str(cifar_dir[0]), **SMALL[name])
    return workload_config(name, **SMALL[name])


@pytest.mark.parametrize("name", list_workloads())
def test_workload_contract(name, cifar_dir):
    if name == "esper-lite-cnn":   # esper-lite's own network: only where it is importable
        pytest.importorskip("esper.kasmina.host", reason="needs esper-lite on the path")
    config = _config(name, cifar_dir)
    a, b = build_workload(config, seed=3), build_workload(config, seed=3)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field  # deterministic
    other = build_workload(config, seed=4)
    assert not torch.equal(a.train_x, other.train_x)  # the seed matters
    expected_x = torch.long if config.topology == "transformer" else torch.float32
    assert a.train_x.dtype == expected_x and a.train_y.dtype == torch.long
    host = a.build_host()
    assert config.default_slot in host.slot_names
    logits = host(a.train_x[:8])
    assert torch.isfinite(task_loss(logits, a.train_y[:8]))
    scored = a.test_y[a.test_y != IGNORE_INDEX]
    n_classes = logits.shape[-1]
    assert scored.numel() > 0 and int(scored.min()) >= 0 and int(scored.max()) < n_classes


def test_config_hash_is_stable_and_content_sensitive():
    a = workload_config("synthetic-cnn")
    assert config_hash(a, 0) == config_hash(workload_config("synthetic-cnn"), 0)
    assert config_hash(a, 0) != config_hash(a, 1)
    assert config_hash(a, 0) != config_hash(workload_config("synthetic-cnn", tint=0.31), 0)


def test_unknown_workload_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="synthetic-cnn"):
        workload_config("imagenet")
    with pytest.raises(ConfigError, match="data_dir"):
        workload_config("digits", data_dir="/tmp")


def test_digits_are_sklearns_images_split_by_the_seed():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    w = build_workload(workload_config("digits"), seed=0)
    assert w.train_x.shape == (1797 - 597, 1, 8, 8) and w.test_x.shape == (597, 1, 8, 8)
    counts = np.bincount(np.concatenate([w.train_y.numpy(), w.test_y.numpy()]), minlength=10)
    assert np.array_equal(counts, np.bincount(bunch.target, minlength=10))
    # undo the standardization and find an image among sklearn's (independent check)
    x = w.train_x.numpy()
    raw = x * (bunch.images[:, None] / 16.0).std() + (bunch.images / 16.0).mean()
    flat = bunch.images.reshape(len(bunch.images), -1) / 16.0
    hits = np.where(np.abs(flat - raw[0].reshape(1, -1)).max(axis=1) < 0.05)[0]
    assert hits.size >= 1 and int(w.train_y[0]) in set(bunch.target[hits].tolist())


def test_cifar10_pixels_and_labels_come_from_the_pickles(cifar_dir):
    folder, arrays = cifar_dir
    train_x, train_y, test_x, test_y = load_cifar10_folder(folder)
    data1, labels1 = arrays["data_batch_1"]
    assert train_x.shape == (48, 3, 32, 32) and test_x.shape == (16, 3, 32, 32)
    # the CIFAR layout: 1024 red, then green, then blue, row-major
    assert int(train_x[5, 1, 2, 3]) == int(data1[5, 1024 + 2 * 32 + 3])
    assert train_y[:24].tolist() == labels1
    assert test_y.tolist() == arrays["test_batch"][1]


def test_cifar10_missing_or_invalid_folder_gets_a_data_error_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere.*data-dir"):
        workload_config("cifar10", data_dir=str(missing))
    with pytest.raises(DataError, match="needs a data folder"):
        workload_config("cifar10")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no data_batch"):
        load_cifar10_folder(empty)
    (empty / "data_batch_1").write_bytes(b"not a pickle")
    (empty / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_1"):
        load_cifar10_folder(empty)


def test_cifar10_reader_refuses_pickles_that_call_arbitrary_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    folder = tmp_path / "evil"
    folder.mkdir()
    for name in ("data_batch_1", "test_batch"):
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": Evil(), b"labels": [0]}, fh)
    with pytest.raises(DataError, match="not allowed"):
        load_cifar10_folder(folder)
    assert not (tmp_path / "pwned").exists()


def test_synthetic_seq_answers_follow_the_rules():
    config = workload_config("synthetic-seq", n_train=300, n_test=10)
    data = config.data
    w = build_workload(config, seed=1)
    recall_tok = data.n_keys + data.n_values
    table, default, n_recalled = {}, {}, 0
    for x, y in zip(w.train_x.tolist(), w.train_y.tolist(), strict=True):
        seen = {}  # key -> value of the pair blocks so far
        for pos, target in enumerate(y):
            if (pos - 2) % 3:
                assert target == IGNORE_INDEX  # only the 2nd token of a block is answered
                continue
            first, second = x[pos - 1], x[pos]
            if second == recall_tok:
                if first in seen:
                    assert target == seen[first]  # the value paired earlier in context
                    n_recalled += 1
                else:
                    assert default.setdefault(first, target) == target  # one fixed map
            else:
                assert table.setdefault((first, second), target) == target  # one fixed table
                seen[first] = second
    assert n_recalled > 300
    assert len(default) == data.n_keys


def test_synthetic_cnn_context_tint_and_classes():
    w = build_workload(workload_config("synthetic-cnn", n_train=2000, n_test=8), seed=0)
    c = (w.train_y >= 2)
    tint_sign = w.train_x[:, 2].mean(dim=(1, 2)) > 0  # the gain is positive: sign survives
    assert (tint_sign == c).float().mean() > 0.95
    assert torch.bincount(w.train_y, minlength=4).min() > 400
    scale = w.train_x.flatten(1).std(dim=1)
    assert scale.max() / scale.min() > 20  # the planted exposure range
