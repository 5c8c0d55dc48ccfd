"""``esper-ab export``: write the sweep winner's gate to winner.yaml."""

from __future__ import annotations

import argparse
from typing import Any

from esper_ab.commands._options import add_experiment, add_tracking_uri
from esper_ab.errors import EsperABError


class NoWinner(EsperABError):
    """The sweep's verdict names no winner (not better, or undecided): export refuses, and
    says in a few short lines which verdict of which sweep run it read."""

    explained = True


VERDICT_WORDS = {"not_better": "not better: no candidate beats the baseline",
                 "undecided": "undecided: the evidence cannot tell yet",
                 "winner": "a winner"}


def refusal(*, run: str, run_name: str, experiment: str, verdict: dict[str, Any],
            confirmed: bool) -> str:
    """Why export writes nothing, in short lines: the verdict it read (its kind and
    headline), the sweep run it read it from, and what to do."""
    import textwrap

    kind = str(verdict.get("kind") or ("winner" if verdict.get("winner") else "not_better"))
    stage = "confirmed verdict" if confirmed else "verdict"
    head = str(verdict.get("headline") or verdict.get("reason") or "").strip()
    lines = [f"no winner to export: the {stage} is {VERDICT_WORDS.get(kind, kind)}",
             f"  read from sweep run {run} ({run_name or 'unnamed'}, experiment {experiment!r})"]
    if head:
        lines += textwrap.wrap(head.splitlines()[0], width=96, initial_indent="  ",
                               subsequent_indent="  ", max_lines=4, placeholder=" ...")
    lines.append("  export the best trial anyway with --force, or another sweep run with "
                 "--sweep-run ID")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the sweep winner to winner.yaml",
                       description="Write the winning gate of a sweep (strategy, parameters, "
                                   "thresholds, calibration, evidence, versions). When the "
                                   "verdict names no winner (not better, or undecided) it says "
                                   "which verdict of which sweep run it read and exits 2, "
                                   "unless --force exports the best trial anyway.")
    add_experiment(p, required=False)
    add_tracking_uri(p)
    p.add_argument("--out", default="winner.yaml", metavar="PATH",
                   help="output file (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="export the best trial even when it does not beat the baseline")
    p.add_argument("--resign", metavar="FILE", default=None,
                   help="re-sign a winner file you edited on purpose: check its schema and "
                        "gate, recompute every integrity hash, write it back (no sweep read)")
    p.set_defaults(handler=run)


def export_winner(tracker: Any, experiment: str, sweep_run: str | None, out: str, *,
                  force: bool = False) -> tuple[Any, Any]:
    """Write winner.yaml for a tracked sweep; returns the written path."""
    from esper_ab.errors import ConfigError
    from esper_ab.export import build_winner, write_winner
    from esper_ab.gate import GateConfig
    from esper_ab.study.spec import parse_sweep_spec

    parent = tracker.find_sweep_run(experiment, sweep_run)
    analysis = tracker.read_json(parent, "sweep/analysis.json")
    if analysis is None:
        if tracker.run_status(parent) == "FINISHED":
            raise NoWinner(f"sweep run {parent} finished without a complete trial "
                           f"({tracker.run_tags(parent).get('esper_ab.verdict', '')}): "
                           "nothing to export")
        raise ConfigError(f"sweep run {parent} has no analysis (it did not finish): resume it "
                          "with 'esper-ab sweep SPACE.yaml --resume', then export")
    spec = parse_sweep_spec(tracker.read_json(parent, "sweep/spec.yaml"),
                            source=f"run {parent} spec")
    verdict = analysis.get("verdict", {})
    label = verdict.get("winner")
    if label is None:
        if not force:
            raise NoWinner(refusal(run=parent, run_name=tracker.run_name(parent),
                                   experiment=experiment, verdict=verdict,
                                   confirmed="confirmation" in analysis))
        complete = [c for c in verdict.get("candidates", [])
                    if c.get("objective_value") is not None]
        # --force exports the best trial that can be shipped: a degenerate gate (admits no
        # seed, every seed or no valuable seed) never is, so the next one is taken.
        cands = sorted((c for c in complete if not c.get("degenerate")),
                       key=lambda c: -c["objective_value"])
        if not cands:
            raise NoWinner(f"sweep run {parent} has no complete trial to export, even with "
                           "--force: run the sweep to completion" if not complete else
                           f"every complete trial of sweep run {parent} is a degenerate gate "
                           "(it admits no seed, every seed or no valuable seed): nothing can "
                           "be exported, even with --force; widen the sweep's threshold range")
        label = cands[0]["strategy"]
    number = int(label.split("-", 1)[0].removeprefix("t"))
    trial = tracker.trial_by_number(parent, number)
    gate_data = tracker.read_json(trial, "trial/gate_config.json") if trial else None
    if gate_data is None:
        raise ConfigError(f"trial {label} of sweep run {parent} has no trial/gate_config.json: "
                          "re-run the sweep")
    versions = tracker.read_json(parent, "sweep/versions.json") or {}
    doc = build_winner(gate=GateConfig.from_dict(gate_data), analysis=analysis, label=label,
                       experiment=experiment, sweep_run_id=parent, trial_run_id=trial,
                       spec=spec, versions=versions.get("packages", {}),
                       git_commit=versions.get("git_commit", "unknown"),
                       forced=verdict.get("winner") is None)
    return write_winner(doc, out), doc


def run(args: argparse.Namespace) -> int:
    from esper_ab.errors import ConfigError
    from esper_ab.study.preflight import check_tracking_uri, writable_file

    if args.resign is not None:
        return resign(args.resign)
    if not args.experiment:
        raise ConfigError("export needs --experiment NAME (the sweep's experiment), or "
                          "--resign FILE to re-sign an edited winner file")
    check_tracking_uri(args.tracking_uri, existing=True)   # read only: create nothing
    writable_file(args.out, "--out")
    from esper_ab.tracking import SweepTracker

    path, doc = export_winner(SweepTracker(args.tracking_uri), args.experiment, args.sweep_run,
                              args.out, force=args.force)
    ev = doc.evidence
    note = " (FORCED: it does not beat the baseline)" if ev.forced else ""
    print(f"wrote {path.resolve()}: {ev.trial} = {doc.gate['strategy']} threshold "
          f"{doc.gate['threshold']}{note}; {ev.objective} "
          f"{ev.metrics[ev.objective].estimate}, Holm-adjusted p vs baseline "
          f"{ev.pvalue_adjusted_vs_baseline}")
    print("use it with:  esper_ab.load_gate('" + str(path) + "')")
    return 0


def resign(path: str) -> int:
    """``--resign FILE``: the documented way to keep a winner file edited on purpose."""
    from esper_ab.errors import shown
    from esper_ab.gate import resign_winner

    doc = resign_winner(path)
    print(f"re-signed {shown(path)}: {doc.gate['strategy']} threshold {doc.gate['threshold']}; "
          f"{len(doc.integrity)} field hashes recomputed, exported_at {doc.exported_at!r}")
    return 0
