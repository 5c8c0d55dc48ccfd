"""``esper-ab strategies``: every strategy with its formula and parameter space, then the gate
presets (the gates esper-lite runs today)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("strategies", help="list the normalization strategies and gate presets",
                       description="List every registered strategy with its formula, "
                                   "parameters (search ranges, log flags) and threshold, then "
                                   "the gate presets: esper-lite's own G2 gates, by code path.")
    p.add_argument("--json", action="store_true", help="machine-readable output (strategies)")
    p.set_defaults(handler=run)


def strategy_table() -> list[dict]:
    from esper_ab.strategies import list_strategies, strategy_class

    return [strategy_class(name).describe() for name in list_strategies()]


PRESET_NOTES = {
    "esper_lite_kasmina": "esper-lite's Kasmina / heuristic path",
    "esper_lite_baseline": "alias of esper_lite_kasmina (the baseline of most spaces)",
    "esper_lite_simic": "esper-lite's Simic / PPO path",
}


def preset_rows() -> list[dict]:
    """One row per gate preset (a deprecated preset is listed as such, without a lookup)."""
    import warnings

    from esper_ab.gate import PRESETS

    rows = []
    for name in dict.keys(PRESETS):
        with warnings.catch_warnings(record=True) as caught:   # a deprecated one warns
            warnings.simplefilter("always")
            cfg = PRESETS[name]
        note = PRESET_NOTES.get(name, "deprecated: models neither esper-lite path (use "
                                "esper_lite_simic or esper_lite_kasmina)" if caught else "")
        start = "1st" if cfg.ema_start is None else cfg.ema_start
        rows.append({"name": name, "strategy": cfg.strategy, "threshold": f"{cfg.threshold:g}",
                     "window": cfg.window, "ema": "-" if cfg.ema_decay is None else
                     f"{cfg.ema_decay} from {start}",
                     "clamp": "-" if cfg.clamp is None else f"{cfg.clamp:g}",
                     "min_epochs": cfg.min_epochs, "note": note})
    return rows


def _space(p: dict) -> str:
    if p["kind"] in ("categorical", "bool"):
        return f"one of {p['choices'] or [True, False]}"
    return f"[{p['low']}, {p['high']}]{' log' if p['log'] else ''}"


def format_table(rows: list[dict], presets: list[dict] | None = None) -> str:
    from esper_ab.console import render_table

    strategies = render_table(
        ["strategy", "statistic", "parameters: default, search space", "threshold"],
        [[r["name"] + ("\n(needs calibration)" if r["needs_calibration"] else ""), r["formula"],
          "\n".join(f"{p['name']} {p['default']!r}, {_space(p)}" for p in r["params"]) or "-",
          f"{r['threshold']['default']!r}, {_space(r['threshold'])}"] for r in rows],
        title=f"Strategies ({len(rows)})", keep=["strategy"])
    if presets is None:
        return strategies
    gates = render_table(
        ["preset", "statistic", "thr", "window", "EMA", "clamp", "epochs", "what"],
        [[g["name"], g["strategy"], g["threshold"], g["window"], g["ema"], g["clamp"],
          g["min_epochs"], g["note"]] for g in presets],
        title="Gate presets (--gate NAME, a space's baseline; epochs: at least, EMA: decay "
              "from its start)", numeric=["thr", "epochs", "clamp"],
        keep=["preset", "EMA", "statistic", "window"])
    return (f"{strategies}\n\n{gates}\n\n{len(rows)} strategies, {len(presets)} gate presets; "
            "esper-lite runs esper_lite_baseline today (docs/STRATEGIES.md)")


def run(args: argparse.Namespace) -> int:
    rows = strategy_table()
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, preset_rows()))
    return 0
