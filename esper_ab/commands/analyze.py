"""``esper-ab analyze``: per-blueprint fairness, tests and the verdict for a decisions CSV."""

from __future__ import annotations

import argparse

from esper_ab.commands._options import RESAMPLES, bounded_int


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
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level (default: %(default)s)")
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
    p.add_argument("--n-boot", type=RESAMPLES, default=1000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--n-perm", type=RESAMPLES, default=2000, help="permutations (default: %(default)s)")
    p.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=0, help="seed of all resampling (default: %(default)s)")
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
    from esper_ab.errors import DataError
    from esper_ab.stats import SelectionRule, analyze, load_decisions_csv

    if args.json_out:
        from esper_ab.study.preflight import writable_file

        writable_file(args.json_out, "--json")
    if args.observational:
        return run_observational(args)
    if args.plots:
        raise DataError(f"--plots {args.plots!r} needs --observational: add it, or use "
                        "'esper-ab report' for a sweep's plots")
    given = {"max_gap": args.max_gap, "gap_bound": args.gap_bound, "margin": args.margin,
             "min_valuable": args.min_valuable, "min_non_valuable": args.min_non_valuable}
    rule = SelectionRule(**{k: v for k, v in given.items() if v is not None})
    table = load_decisions_csv(args.decisions)
    baseline = args.baseline or _default_baseline(table)
    result = analyze(table, baseline=baseline, alpha=args.alpha, rule=rule,
                     n_boot=args.n_boot, n_perm=args.n_perm, seed=args.seed)
    print(result.format_table())
    write_json(result, args.json_out)
    return 0
