"""``synthetic-seq``: a generated token task mixing in-context recall and a fixed lookup.

Each sequence (length 32) is ``BOS``, eight key-value pairs ``k1 v1 .. k8 v8`` (distinct
keys), then five queries ``m q a``:

- ``m = RECALL``: ``q`` is one of the eight context keys and the answer ``a`` is its value
  in *this* sequence. Only attention can fetch it (an induction-style lookup).
- ``m = LOOKUP``: ``q`` is any key and the answer is ``table[q]``, a fixed random map
  drawn once per workload seed. It is memorized in weights: MLP / LoRA work.

The loss and the accuracy count only the answer positions (the target after each ``q``).
The host is a one-layer GPT (width 32, 4 heads, tied embedding): it memorizes the lookup
table but cannot do the two-hop recall (an induction-style lookup needs two attention
layers), so at the default slot ``layer1`` only an ``attention`` seed adds the missing hop
while ``mlp``/``lora`` seeds add per-token capacity. In short default episodes the
measured values of both families are small (within about +-1 pp, see the issue-3 report):
learning the second hop takes longer than the value horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from esper_ab.errors import bad_value
from esper_ab.hosts import TransformerHostConfig
from esper_ab.workloads._base import IGNORE_INDEX, PretrainConfig, Workload, WorkloadConfig

__all__ = ["SyntheticSeqData", "build", "default_config"]

NAME = "synthetic-seq"
N_PAIRS, N_QUERIES = 8, 5


@dataclass(frozen=True)
class SyntheticSeqData:
    n_train: int = 4096
    n_test: int = 1024
    n_keys: int = 16
    n_values: int = 16
    recall_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.n_keys < N_PAIRS:
            raise bad_value("SyntheticSeqData.n_keys", self.n_keys, f"use >= {N_PAIRS}")
        if not 0.0 <= self.recall_fraction <= 1.0:
            raise bad_value("SyntheticSeqData.recall_fraction", self.recall_fraction,
                            "use a fraction in [0, 1]")

    @property
    def vocab_size(self) -> int:
        return self.n_keys + self.n_values + 3  # + RECALL, LOOKUP, BOS

    @property
    def length(self) -> int:
        return 1 + 2 * N_PAIRS + 3 * N_QUERIES


def default_config(**data_overrides: object) -> WorkloadConfig:
    data = SyntheticSeqData(**data_overrides)  # type: ignore[arg-type]
    return WorkloadConfig(
        name=NAME,
        host=TransformerHostConfig(vocab_size=data.vocab_size, context_length=data.length,
                                   width=32, n_layers=1, n_heads=4),
        data=data,
        pretrain=PretrainConfig(steps=400, batch_size=16, lr=3e-3, weight_decay=0.0),
        default_slot="layer1",
    )


def _sequences(n: int, data: SyntheticSeqData, table: torch.Tensor, gen: torch.Generator):
    k, v = data.n_keys, data.n_values
    recall_tok, lookup_tok, bos = k + v, k + v + 1, k + v + 2
    keys = torch.argsort(torch.rand(n, k, generator=gen), dim=1)[:, :N_PAIRS]
    values = k + torch.randint(0, v, (n, N_PAIRS), generator=gen)
    pairs = torch.stack([keys, values], dim=2).reshape(n, 2 * N_PAIRS)
    recall = torch.rand(n, N_QUERIES, generator=gen) < data.recall_fraction
    which = torch.randint(0, N_PAIRS, (n, N_QUERIES), generator=gen)
    q_recall = torch.gather(keys, 1, which)
    a_recall = torch.gather(values, 1, which)
    q_lookup = torch.randint(0, k, (n, N_QUERIES), generator=gen)
    a_lookup = k + table[q_lookup]
    marker = torch.where(recall, recall_tok, lookup_tok)
    query = torch.where(recall, q_recall, q_lookup)
    answer = torch.where(recall, a_recall, a_lookup)
    queries = torch.stack([marker, query, answer], dim=2).reshape(n, 3 * N_QUERIES)
    tokens = torch.cat([torch.full((n, 1), bos), pairs, queries], dim=1)
    x = tokens[:, :-1]
    y = torch.full_like(x, IGNORE_INDEX)
    start = 1 + 2 * N_PAIRS  # position of the first marker in ``tokens``
    for i in range(N_QUERIES):
        q_pos = start + 3 * i + 1  # the query token; its next token is the answer
        y[:, q_pos] = tokens[:, q_pos + 1]
    return x, y


def build(config: WorkloadConfig, *, seed: int) -> Workload:
    data: SyntheticSeqData = config.data  # type: ignore[assignment]
    gen = torch.Generator().manual_seed(15485863 * seed + 17)
    table = torch.randint(0, data.n_values, (data.n_keys,), generator=gen)
    train_x, train_y = _sequences(data.n_train, data, table, gen)
    test_x, test_y = _sequences(data.n_test, data, table, gen)
    return Workload(config, seed, train_x, train_y, test_x, test_y)
