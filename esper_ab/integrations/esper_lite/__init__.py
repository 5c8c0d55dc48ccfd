"""esper-lite as a client: ingest its telemetry, plug an exported gate into its G2 check.

- :func:`ingest_esper_lite` reads the ``events.jsonl`` files that esper-lite's Nissa
  ``DirectoryOutput`` writes into a per-seed decisions table (no value: observational).

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

__all__ = [
    "COLUMNS",
    "PERMISSIVE",
    "STRICT",
    "UNDETECTED",
    "IngestResult",
    "IngestSummary",
    "ingest_esper_lite",
    "write_table",
]
