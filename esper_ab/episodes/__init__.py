"""Stage 4, episodes: one replicate of the incubator.

A host is pretrained (cached), every seed of the catalog incubates on it at once through the
straight-through estimator (the host stays bit-identical), per-step gradient traces are
recorded, and each seed's value is measured against a placebo fork. Closed-loop runs replay a
gate's decision inside training.

- ``hosts``: the esper CNN and a pre-LN GPT host.
- ``blueprints``: the seed catalog of DOMAIN.md §3 and the placebo.
- ``workloads``: deterministic data + host + pretraining settings.
- ``runner``: :func:`run_episode`, :func:`record_episode`, :func:`run_closed_loop`.
- ``tables``: the parquet tables an episode writes (seeds, traces, meta).

Importing this package does not import torch; the runner loads the torch parts when it runs.
"""

from esper_ab.episodes.runner import (
    BATCHED_FORMAT,
    DEFAULT_CACHE_DIR,
    EPISODE_FORMAT,
    ClosedLoopResult,
    EpisodeConfig,
    EpisodeResult,
    episode_config,
    episode_format,
    episode_key,
    gate_decisions,
    record_episode,
    resolve_device,
    run_closed_loop,
    run_episode,
    summarize,
)
from esper_ab.episodes.tables import (
    META_FILE,
    SEED_FILE,
    TRACE_FILE,
    has_tables,
    install_cache_folder,
    verified_cache_folder,
)

__all__ = [
    "BATCHED_FORMAT",
    "DEFAULT_CACHE_DIR",
    "EPISODE_FORMAT",
    "META_FILE",
    "SEED_FILE",
    "TRACE_FILE",
    "ClosedLoopResult",
    "EpisodeConfig",
    "EpisodeResult",
    "episode_config",
    "episode_format",
    "episode_key",
    "gate_decisions",
    "has_tables",
    "install_cache_folder",
    "record_episode",
    "resolve_device",
    "run_closed_loop",
    "run_episode",
    "summarize",
    "verified_cache_folder",
]
