"""``esper-ab analyze TABLE --observational``: the analysis that needs no value column."""

from __future__ import annotations

import argparse


def write_json(result: object, path: str | None) -> None:
    """``--json PATH``: the analysis as JSON (strict: no NaN), or one line when unwritable."""
    import json
    import os

    from esper_ab.errors import DataError

    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(result.to_dict(), fh, indent=2, allow_nan=False)  # type: ignore[attr-defined]
            fh.write("\n")
    except OSError as exc:
        raise DataError(f"cannot write --json {path!r} ({exc.strerror}): pass a path in a "
                        "writable directory") from None
    print(f"\nwrote {os.path.abspath(path)}")


def run_observational(args: argparse.Namespace) -> int:
    import os

    from esper_ab.integrations import write_observational_plots
    from esper_ab.stats import analyze_observational, load_observational_csv

    table = load_observational_csv(args.decisions)
    result = analyze_observational(table, ci_level=1.0 - args.alpha, n_perm=args.n_perm,
                                   n_boot=args.n_boot, seed=args.seed)
    print(result.format_table())
    write_json(result, args.json_out)
    if args.plots:
        for path in write_observational_plots(table, result, args.plots):
            print(f"wrote {os.path.abspath(path)}")
    return 0
