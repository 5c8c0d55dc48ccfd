"""Console tables for people (``rich``): aligned, numbers rounded, long cells wrapped at word
boundaries and never cut. Rendered to plain text (no colour, no markup), so that logs, pipes
and tests read the same thing a terminal shows."""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["fmt", "render_table"]


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: floats rounded to ``digits`` significant places after the point, NaN as '-'."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else \
            f"{value:.{digits}g}"
    return str(value)


def render_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                 title: str | None = None, numeric: Sequence[str] = (),
                 keep: Sequence[str] = (), width: int | None = None) -> str:
    """A table as plain text, as wide as the terminal (at least 100 columns off a terminal);
    ``numeric`` columns are right-aligned, ``keep`` columns (names) are never wrapped;
    others wrap between words."""
    from rich.box import SIMPLE_HEAD
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=SIMPLE_HEAD, title_justify="left", pad_edge=False,
                  show_edge=False)
    for c in columns:
        table.add_column(c, justify="right" if c in numeric else "left",
                         no_wrap=c in keep or c in numeric, overflow="fold")
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    out = io.StringIO()
    cols = width or max(100, shutil.get_terminal_size((100, 24)).columns)
    Console(file=out, width=cols, no_color=True, highlight=False, markup=False,
            emoji=False, force_terminal=False, soft_wrap=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").splitlines())
