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


def conclusion(result: object) -> str:
    """One line: per strategy, the blueprints whose seeds never pass and those whose seeds
    always pass (of the seeds judged), and the spread of pass rates between them."""
    pb = result.per_blueprint  # type: ignore[attr-defined]
    parts = []
    for strategy, g in pb.groupby("strategy", sort=True):
        g = g[g["n"] > 0]
        never = [f"{r.blueprint} (0/{r.n})" for r in g.itertuples() if r.passes == 0]
        always = [r.blueprint for r in g.itertuples() if r.passes == r.n]
        text = f"{strategy}: " + (f"never pass: {', '.join(never)}" if never else
                                  "every blueprint passes some seeds")
        if always:
            text += f"; always pass: {', '.join(always)}"
        rates = g["passes"] / g["n"]
        parts.append(f"{text}; pass rates {rates.min():.2f}-{rates.max():.2f} across "
                     f"{len(g)} blueprints")
    return "Conclusion: " + (" | ".join(parts) if parts else "no seed was judged at G2")


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
    print(f"\n{conclusion(result)}")        # the text ends with the one-line answer
    return 0
