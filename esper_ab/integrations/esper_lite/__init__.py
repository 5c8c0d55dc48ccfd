"""esper-lite as a client: ingest its telemetry, plug an exported gate into its G2 check.

- :func:`ingest_esper_lite` reads the ``events.jsonl`` files that esper-lite's Nissa
  ``DirectoryOutput`` writes into a per-seed decisions table (no value: observational).
- :class:`EsperLiteG2` puts an esper-ab gate (``esper_ab.load_gate("winner.yaml")`` or a
  preset) in place of esper-lite's G2 gradient-ratio check: ``install(model)`` wires it into a
  ``MorphogeneticModel`` (any number of models, one table of :class:`SlotFeed` each);
  :func:`install_ppo_hooks` wires it into esper-lite's vectorized PPO trainer.
- :class:`Float64Collector` / :class:`KasminaCollector`: the two measurement paths.

Importing this package never imports esper-lite.
"""

from esper_ab.integrations.esper_lite._feeds import (
    PATHS,
    ModelFeeds,
    SlotFeed,
    kasmina_param_lists,
    simic_param_lists,
)
from esper_ab.integrations.esper_lite._ingest import (
    COLUMNS,
    PERMISSIVE,
    STRICT,
    UNDETECTED,
    IngestResult,
    IngestSummary,
    ingest_esper_lite,
    write_table,
)
from esper_ab.integrations.esper_lite._measure import Float64Collector, KasminaCollector, typed
from esper_ab.integrations.esper_lite._plugin import (
    GATE_CHECK,
    RATIO_CHECK,
    EsperLiteG2,
    PermissiveGatesWarning,
)
from esper_ab.integrations.esper_lite._ppo import PPOHooks, install_ppo_hooks

__all__ = [
    "COLUMNS",
    "GATE_CHECK",
    "PATHS",
    "PERMISSIVE",
    "RATIO_CHECK",
    "STRICT",
    "UNDETECTED",
    "EsperLiteG2",
    "Float64Collector",
    "IngestResult",
    "IngestSummary",
    "KasminaCollector",
    "ModelFeeds",
    "PPOHooks",
    "PermissiveGatesWarning",
    "SlotFeed",
    "ingest_esper_lite",
    "install_ppo_hooks",
    "kasmina_param_lists",
    "simic_param_lists",
    "typed",
    "write_table",
]
