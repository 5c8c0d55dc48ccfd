"""The ``esper-ab`` command line.

Each subsystem owns one module in ``esper_ab.commands`` with a ``register(subparsers)``
function. Heavy imports (torch, ray, mlflow) happen inside the command handlers so that
``esper-ab --help`` stays fast. Any ``EsperABError`` becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from esper_ab.commands import HelpFormatter
from esper_ab.errors import DiskFull, EsperABError, InertStream, disk_full, error_lines
from esper_ab.progress import tee_output

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
    """ArgumentParser whose errors are one line and exit code 2 (no usage dump), and whose
    ``--help`` shows every default."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

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
    rc = _main(argv)
    if argv is None:     # the esper-ab process itself (not a call from Python)
        _exit_now_after_ray(rc)
    return rc


def _exit_now_after_ray(rc: int) -> None:
    """After an embedded Ray, end the process at once (``os._exit``, streams flushed): Ray's
    C++ teardown at interpreter exit took 10-12 s after a finished ``ray.shutdown`` (measured
    after a Ctrl-C), and everything esper-ab writes is written by now."""
    runtime = sys.modules.get("esper_ab.study.runtime")
    if runtime is None or not runtime.embedded_ray_started():
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except EsperABError as exc:
        return _fail(exc)
    # --log-file (long-running commands): everything printed from here on, errors included.
    # Everything printed goes through InertStream: no terminal control character from an
    # input (a blueprint name, a telemetry field) reaches the terminal.
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = InertStream(sys.stdout), InertStream(sys.stderr)
    try:
        with tee_output(getattr(args, "log_file", None)):
            try:
                rc = int(args.handler(args) or 0)
                sys.stdout.flush()          # a closed pipe fails here, not at exit
                return rc
            except BrokenPipeError:
                return _broken_pipe()
            except EsperABError as exc:
                return _fail(exc)
            except OSError as exc:          # a full disk outside a sweep: one line too
                if disk_full(exc) is None:
                    raise
                return _fail(DiskFull(f"no space left on the device of "
                                      f"{exc.filename or 'a file esper-ab wrote'}: free some "
                                      "space there and run the command again"))
            except KeyboardInterrupt:
                print("esper-ab: interrupted", file=sys.stderr)
                return 130
    except EsperABError as exc:    # the log file itself cannot be opened
        return _fail(exc)
    finally:
        sys.stdout, sys.stderr = streams


def _broken_pipe() -> int:
    """stdout was closed early (``esper-ab validate X | head -3``): one line, exit 2, and no
    second error when Python flushes stdout on its way out."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    print("esper-ab: error: the output was cut off: the pipe it was written to closed (e.g. "
          "'| head'); pipe it to a command that reads everything, or into a file",
          file=sys.stderr)
    return 2


def _fail(exc: EsperABError) -> int:
    """One line, bounded, with no terminal control character, whatever the input was (an
    explained refusal: its own few short lines, each bounded alike)."""
    first, *rest = error_lines(exc)
    print(f"esper-ab: error: {first}", file=sys.stderr)
    for line in rest:
        print(line, file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
