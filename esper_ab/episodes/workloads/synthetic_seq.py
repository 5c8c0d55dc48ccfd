"""``synthetic-seq``: a generated token task for the transformer host.

Each sequence is ``BOS`` then ten 3-token blocks in a random order (30 input positions):

- four **pair** blocks ``k v t``: a key ``k`` (distinct within the sequence), a random value
  ``v`` and ``t = table[k, v]``, a fixed random map over all 8 x 25 (key, value)
  combinations drawn once per workload seed. ``t`` is answered at ``v``: the host must carry
  the previous token (a previous-token head) and memorize the 200-entry table.
- six **recall** blocks ``q RECALL a`` with ``q`` one of the sequence's four keys: ``a`` is
  the value paired with ``q`` if that pair block came *earlier*, else ``default[q]`` (a fixed
  map). ``a`` is answered at ``RECALL``. The in-context case needs a second attention hop
  (match ``q`` against earlier keys, copy the value next to it): a one-layer host cannot do
  it, an attention layer at the slot could.

The loss and the accuracy count only the answer positions (the token after every block's
second token). The host is a one-layer GPT (width 32, 4 heads, tied embedding) pretrained
800 steps: at the decision point it has learned the defaults and most of the table, but
still under-fits the table. Default episode at slot ``layer1``, measured over replicates
0-4 (one CPU core, about 16 s an episode; value = held-out accuracy vs the placebo fork):

| blueprint | params | value mean (pp) | sd | valuable (>= 1 pp) |
| --- | --- | --- | --- | --- |
| norm | 65 | +0.01 | 0.07 | 0/5 |
| lora8 | 512 | -0.01 | 0.22 | 0/5 |
| lora32 | 2048 | -0.27 | 0.37 | 0/5 |
| attention | 4224 | -3.38 | 2.40 | 0/5 |
| mlp_small | 4192 | +1.22 | 0.53 | 2/5 (5/5 > 0) |
| mlp | 8352 | +1.80 | 0.96 | 3/5 (5/5 > 0) |

So the families differ, in the *reverse* of the direction first intended: the per-token MLP
seeds add the nonlinear capacity the under-fitted ``table[k, v]`` lookup needs and are
consistently positive; LoRA (linear, low rank) and norm seeds are neutral; the ``attention``
seed does not learn the in-context recall hop within incubation + horizon (about 240 seed
steps; a separate probe trained it 1000+ steps on a frozen host for a few pp at most) and,
blended in, it costs accuracy. ``tests/workloads/test_synthetic_seq.py`` pins this.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from esper_ab.episodes.hosts import TransformerHostConfig
from esper_ab.episodes.workloads._base import IGNORE_INDEX, PretrainConfig, WorkloadConfig
from esper_ab.episodes.workloads._plugin import WorkloadData, WorkloadPlugin, builtin_host
from esper_ab.errors import bad_value

__all__ = ["WORKLOAD", "SyntheticSeqData", "build", "default_config"]

NAME = "synthetic-seq"
N_PAIRS, N_RECALLS = 4, 6
CONTEXT_LENGTH = 32  # >= the 30 input positions


@dataclass(frozen=True)
class SyntheticSeqData:
    n_train: int = 4096
    n_test: int = 1024
    n_keys: int = 8
    n_values: int = 25

    def __post_init__(self) -> None:
        if self.n_keys < N_PAIRS:
            raise bad_value("SyntheticSeqData.n_keys", self.n_keys, f"use >= {N_PAIRS}")

    @property
    def vocab_size(self) -> int:
        return self.n_keys + self.n_values + 2  # + RECALL, BOS

    @property
    def length(self) -> int:
        return 1 + 3 * (N_PAIRS + N_RECALLS)


def default_config(**data_overrides: object) -> WorkloadConfig:
    data = SyntheticSeqData(**data_overrides)  # type: ignore[arg-type]
    return WorkloadConfig(
        name=NAME,
        host=TransformerHostConfig(vocab_size=data.vocab_size, context_length=CONTEXT_LENGTH,
                                   width=32, n_layers=1, n_heads=4),
        data=data,
        pretrain=PretrainConfig(steps=800, batch_size=16, lr=3e-3, weight_decay=0.0),
        default_slot="layer1",
    )


def _sequences(n: int, data: SyntheticSeqData, table: torch.Tensor, default: torch.Tensor,
               gen: torch.Generator):
    k, v = data.n_keys, data.n_values
    recall_tok, bos = k + v, k + v + 1
    n_blocks = N_PAIRS + N_RECALLS
    keys = torch.argsort(torch.rand(n, k, generator=gen), dim=1)[:, :N_PAIRS]
    values = torch.randint(0, v, (n, N_PAIRS), generator=gen)
    query = torch.gather(keys, 1, torch.randint(0, N_PAIRS, (n, N_RECALLS), generator=gen))
    # block order: pairs and recalls shuffled; a recall sees only the pairs before it
    slot = torch.argsort(torch.rand(n, n_blocks, generator=gen), dim=1)
    pair_slot, recall_slot = slot[:, :N_PAIRS], slot[:, N_PAIRS:]
    match = ((query[:, :, None] == keys[:, None, :])
             & (pair_slot[:, None, :] < recall_slot[:, :, None]))  # (n, recalls, pairs)
    recalled = (match.long() * values[:, None, :]).sum(dim=2)
    answer = torch.where(match.any(dim=2), recalled, default[query])
    pair_blocks = torch.stack([keys, k + values, k + table[keys, values]], dim=2)
    recall_blocks = torch.stack([query, torch.full_like(query, recall_tok), k + answer], dim=2)
    blocks = torch.empty(n, n_blocks, 3, dtype=torch.long)
    blocks.scatter_(1, pair_slot[:, :, None].expand(-1, -1, 3), pair_blocks)
    blocks.scatter_(1, recall_slot[:, :, None].expand(-1, -1, 3), recall_blocks)
    tokens = torch.cat([torch.full((n, 1), bos), blocks.reshape(n, -1)], dim=1)
    x = tokens[:, :-1]
    y = torch.full_like(x, IGNORE_INDEX)
    answer_at = torch.arange(2, x.shape[1], 3)  # the 2nd token of every block
    y[:, answer_at] = tokens[:, answer_at + 1]
    return x, y


def build(config: WorkloadConfig, seed: int) -> WorkloadData:
    data: SyntheticSeqData = config.data  # type: ignore[assignment]
    gen = torch.Generator().manual_seed(15485863 * seed + 17)
    table = torch.randint(0, data.n_values, (data.n_keys, data.n_values), generator=gen)
    default = torch.randint(0, data.n_values, (data.n_keys,), generator=gen)
    train_x, train_y = _sequences(data.n_train, data, table, default, gen)
    test_x, test_y = _sequences(data.n_test, data, table, default, gen)
    return WorkloadData(train_x, train_y, test_x, test_y)


# The plug-in esper-ab resolves this workload by (entry point in pyproject.toml).
WORKLOAD = WorkloadPlugin(
    name=NAME, host=builtin_host, data=build, catalog="transformer", configure=default_config,
    tiny={"n_train": 512, "n_test": 256}, episode={"batch_size": 16},
    description="generated tokens: associative recall + bigrams")
