"""``esper-ab strategies``: list every strategy with its formula and parameter space."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("strategies", help="list the normalization strategies",
                       description="List every registered strategy with its formula, "
                                   "parameters (search ranges, log flags) and threshold.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def strategy_table() -> list[dict]:
    from esper_ab.strategies import list_strategies, strategy_class

    return [strategy_class(name).describe() for name in list_strategies()]


def format_table(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        cal = "  [needs calibration]" if row["needs_calibration"] else ""
        lines.append(f"{row['name']}{cal}\n    statistic: {row['formula']}")
        for p in row["params"] + [row["threshold"]]:
            if p["kind"] in ("categorical", "bool"):
                space = f"one of {p['choices'] or [True, False]}"
            else:
                space = f"search [{p['low']}, {p['high']}]{' log' if p['log'] else ''}, " \
                        f"valid {p['domain']}"
            lines.append(f"    {p['name']:<18} default {p['default']!r:<8} {space}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rows = strategy_table()
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0
