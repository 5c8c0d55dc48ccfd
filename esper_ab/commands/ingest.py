"""``esper-ab ingest CLIENT PATH --out decisions.csv``: a real client's telemetry -> a table.

One client today, ``esper-lite``: every ``events.jsonl`` under PATH (one run each) becomes
rows of a per-seed G2 decisions table. The table has no placebo-controlled value, so analyze
it with ``esper-ab analyze decisions.csv --observational``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest", help="read a real client's telemetry into a decisions table",
        description="Read the telemetry a real client wrote into a per-seed G2 decisions "
                    "table (observational: no value column; analyze it with "
                    "'esper-ab analyze TABLE --observational').")
    clients = p.add_subparsers(dest="client", metavar="CLIENT")
    clients.required = True
    lite = clients.add_parser(
        "esper-lite", help="esper-lite's Nissa DirectoryOutput (events.jsonl)",
        description="PATH is one events.jsonl or a folder searched recursively for them; each "
                    "file is one run. One row per seed, keyed by (run, slot, seed id).")
    lite.add_argument("path", metavar="PATH", help="an events.jsonl, or a folder of them")
    lite.add_argument("--out", required=True, metavar="decisions.csv",
                      help="where to write the table (CSV)")
    lite.add_argument("--mode", default="auto", choices=("auto", "strict", "permissive"),
                      help="G2 mode: auto detects it per run from the G2 checks; strict or "
                           "permissive also names runs without any G2 check "
                           "(default: %(default)s)")
    lite.set_defaults(handler=run_esper_lite)


def run_esper_lite(args: argparse.Namespace) -> int:
    import os

    from esper_ab.errors import ConfigError, shown

    if not os.path.exists(args.path):     # before the heavy imports
        raise ConfigError(f"{shown(args.path)} does not exist: give an events.jsonl, or the "
                          "folder esper-lite's DirectoryOutput wrote")
    from esper_ab.integrations.esper_lite import ingest_esper_lite, write_table
    from esper_ab.study.preflight import writable_file

    writable_file(args.out, "--out")
    result = ingest_esper_lite(args.path, mode=args.mode)
    path = write_table(result.table, args.out)
    for line in result.summary.lines():
        print(line)
    print(f"wrote {len(result.table)} row(s) to {os.path.abspath(path)}")
    print(f"next: esper-ab analyze {args.out} --observational   (the table has no value "
          "column: TPR, FPR and a verdict need placebo-controlled value)")
    return 0
