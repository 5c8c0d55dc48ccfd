"""``esper-ab analyze``: per-blueprint fairness, tests and the verdict for a decisions CSV."""

from __future__ import annotations

import argparse
import json
import sys

from esper_ab.commands._options import RESAMPLES, bounded_int

# alpha and resampling when neither a flag nor --settings-from gives them
_DEFAULTS = (("alpha", 0.05), ("n_boot", 1000), ("n_perm", 2000), ("seed", 0))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="analyze a decisions table (fairness per blueprint, tests, verdict)",
        description="Read a decisions CSV (columns replicate, blueprint, strategy, passed, "
                    "pass_epoch, statistic, value, valuable), print the per-blueprint table, "
                    "the tests and the verdict, and optionally write them as JSON.")
    p.add_argument("decisions", metavar="DECISIONS.csv", help="the decisions table")
    p.add_argument("--baseline", default=None, metavar="NAME",
                   help="name of the baseline strategy (default: 'reference', the label "
                        "esper-ab's sweeps give the reference gate, when the table has it; "
                        "else 'baseline')")
    p.add_argument("--alpha", type=float, default=None,
                   help="significance level (default: 0.05)")
    p.add_argument("--settings-from", metavar="ANALYSIS.json", default=None,
                   help="reuse the baseline, alpha, selection rule and resampling (n_boot, "
                        "n_perm, seed) of an earlier analysis: a sweep's analysis.json (under "
                        "sweep/ in MLflow, or in a 'report --out' folder) reproduces the sweep's "
                        "verdict from its decisions.csv; flags given here still win")
    p.add_argument("--json", dest="json_out", metavar="OUT", default=None,
                   help="also write the analysis as JSON to OUT")
    p.add_argument("--max-gap", type=float, default=None, metavar="EPS",
                   help="bound on the debiased equalized-odds gap in the selection rule "
                        "(default 0.2)")
    p.add_argument("--gap-bound", choices=("estimate", "ci_high"), default=None,
                   help="ci_high (default): a gate is fair when the gap's upper 90%% CI "
                        "limit is under --max-gap, unfair when the lower one is over it, "
                        "undetermined in between; estimate: the point estimate alone (less "
                        "conservative)")
    p.add_argument("--margin", type=float, default=None, metavar="M",
                   help="equivalence margin of 'not better than the baseline', in the "
                        "objective's units (default 0.05)")
    p.add_argument("--min-valuable", type=bounded_int(1, 1_000_000), default=None, metavar="N",
                   help="valuable seeds a blueprint needs to enter TPR parity (default 10)")
    p.add_argument("--min-non-valuable", type=bounded_int(1, 1_000_000), default=None, metavar="N",
                   help="non-valuable seeds a blueprint needs to enter FPR parity (default 10)")
    p.add_argument("--n-boot", type=RESAMPLES, default=None, help="bootstrap resamples (default: 1000)")
    p.add_argument("--n-perm", type=RESAMPLES, default=None, help="permutations (default: 2000)")
    p.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=None, help="seed of all resampling (default: 0)")
    p.add_argument("--observational", action="store_true",
                   help="a table without value (e.g. from 'esper-ab ingest'): pass rates per "
                        "blueprint with CIs clustered over runs, the blueprint x pass test, "
                        "the pass-rate gap and ratio; no TPR/FPR/verdict")
    p.add_argument("--plots", metavar="DIR", default=None,
                   help="with --observational: write the pass-rate and statistic plots there")
    p.set_defaults(handler=run)


def _not_observational(path: str) -> None:
    """A table without value columns is observational: say which flag reads it (before the
    stats are imported)."""
    import csv

    from esper_ab.errors import ConfigError, shown

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), [])
    if "passed" in header and not {"value", "valuable"} & set(header):
        raise ConfigError(f"{shown(path)} has no 'value' or 'valuable' column: it is an "
                          "observational table (e.g. from 'esper-ab ingest'); add "
                          "--observational to analyze it")


def _default_baseline(table) -> str:
    """A sweep's decisions name the reference gate ``reference`` (a candidate of the
    ``baseline`` strategy is ``tNNN-baseline``); a user's own table may say ``baseline``."""
    from esper_ab.trial import BASELINE_LABEL, LEGACY_BASELINE_LABEL

    names = set(table["strategy"].astype(str))
    return BASELINE_LABEL if BASELINE_LABEL in names else LEGACY_BASELINE_LABEL


def run(args: argparse.Namespace) -> int:
    from esper_ab.commands._options import existing_file

    existing_file(args.decisions, "decisions table", "give the path of a decisions CSV (or, "
                  "with --observational, the table 'esper-ab ingest' wrote)")
    if not args.observational:
        _not_observational(args.decisions)
    from esper_ab.commands._observational import run_observational, write_json
    from esper_ab.errors import ConfigError, DataError
    from esper_ab.stats import SelectionRule, analyze, load_decisions_csv
    from esper_ab.trial import BASELINE_LABEL

    if args.json_out:
        from esper_ab.study.preflight import writable_file

        writable_file(args.json_out, "--json")
    if args.observational:
        if args.settings_from:
            raise ConfigError("--settings-from applies to a verdict's analysis, not to "
                              "--observational: drop one of them")
        for name, default in _DEFAULTS:
            if getattr(args, name) is None:
                setattr(args, name, default)
        return run_observational(args)
    if args.plots:
        raise DataError(f"--plots {args.plots!r} needs --observational: add it, or use "
                        "'esper-ab report' for a sweep's plots")
    given = {"max_gap": args.max_gap, "gap_bound": args.gap_bound, "margin": args.margin,
             "min_valuable": args.min_valuable, "min_non_valuable": args.min_non_valuable}
    given = {k: v for k, v in given.items() if v is not None}
    earlier = _earlier_settings(args.settings_from) if args.settings_from else {}
    rule = SelectionRule(**{**earlier.get("rule", {}), **given})
    table = load_decisions_csv(args.decisions)
    baseline = args.baseline or earlier.get("baseline") or _default_baseline(table)
    chosen = {k: getattr(args, k) if getattr(args, k) is not None else earlier.get(k, default)
              for k, default in _DEFAULTS}
    result = analyze(table, baseline=baseline, rule=rule,
                     ci_level=earlier.get("ci_level", 0.95), **chosen)
    print(result.format_table())
    if not args.settings_from and not given and BASELINE_LABEL in set(table["strategy"]):
        print("note: this looks like a sweep's decisions table; the sweep judged it by its "
              "space's rule: add --settings-from analysis.json (beside it) to reproduce the "
              "sweep's verdict", file=sys.stderr)
    write_json(result, args.json_out)
    return 0


def _earlier_settings(path: str) -> dict:
    """Baseline, alpha, ci_level, rule and resampling of an analysis JSON (``--json`` of
    ``analyze``, a sweep's ``analysis.json``); ConfigError naming the file otherwise."""
    from esper_ab.commands._options import existing_file
    from esper_ab.errors import ConfigError, shown
    from esper_ab.stats import SelectionRule

    existing_file(path, "--settings-from", "give the analysis.json of an earlier analysis "
                  "or sweep")
    fix = ("give the analysis.json written by 'esper-ab analyze --json' or by a sweep "
           "(sweep/analysis.json in MLflow, or a 'report --out' folder)")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        settings = doc["settings"]
        rule = dict(settings["rule"])
        SelectionRule(**rule)                       # every field known, every value valid
        out = {"rule": rule, "n_boot": int(settings["n_boot"]),
               "n_perm": int(settings["n_perm"]), "seed": int(settings["seed"]),
               "alpha": float(doc["alpha"]), "ci_level": float(doc["ci_level"]),
               "baseline": str(doc["baseline"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0][:120]
        raise ConfigError(f"--settings-from {shown(path)} is not an analysis's JSON ({what}): "
                          f"{fix}") from None
    return out
