"""The ``esper-ab`` command line.

Each subsystem owns one module in ``esper_ab.commands`` with a ``register(subparsers)``
function. Heavy imports (torch, ray, mlflow) happen inside the command handlers so that
``esper-ab --help`` stays fast. Any ``EsperABError`` becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from esper_ab.errors import EsperABError

# One entry per subsystem; each module defines ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = (
    "esper_ab.commands.strategies",
    "esper_ab.commands.demo",
    "esper_ab.commands.analyze",
    "esper_ab.commands.ingest",
    "esper_ab.commands.sweep",
    "esper_ab.commands.validate",
    "esper_ab.commands.report",
    "esper_ab.commands.export",
    "esper_ab.commands.episode",
    "esper_ab.commands.record",
    "esper_ab.commands.replay",
)


class UsageError(EsperABError):
    """Bad command-line usage (unknown option, missing argument)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="esper-ab", description="esper-ab: is the G2 gate fair to every seed "
                     "blueprint, and which strategy and threshold should we ship?")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        rc = args.handler(args)
        return int(rc or 0)
    except EsperABError as exc:
        print(f"esper-ab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("esper-ab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
