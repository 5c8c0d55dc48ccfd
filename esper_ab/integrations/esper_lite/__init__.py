"""esper-lite as a client: ingest its telemetry, plug an exported gate into its G2 check.

- :func:`ingest_esper_lite` reads the ``events.jsonl`` files that esper-lite's Nissa
  ``DirectoryOutput`` writes into a per-seed decisions table (no value: observational).
- :class:`EsperLiteG2` puts an esper-ab gate (``esper_ab.load_gate("winner.yaml")`` or a
  preset) in place of esper-lite's G2 gradient-ratio check: ``install(model)`` wires it into a
  ``MorphogeneticModel``; :class:`SlotFeed` is the per-seed tracker behind it.
- :class:`Float64Collector` / :class:`KasminaCollector`: the two measurement paths.

Importing this package never imports esper-lite.
"""

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
    PATHS,
    RATIO_CHECK,
    EsperLiteG2,
    SlotFeed,
    kasmina_param_lists,
    simic_param_lists,
)

__all__ = [
    "COLUMNS",
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
    "SlotFeed",
    "ingest_esper_lite",
    "kasmina_param_lists",
    "simic_param_lists",
    "typed",
    "write_table",
]
