"""Console tables for people (``rich``): aligned, numbers rounded, long cells wrapped at word
boundaries and never cut. Rendered to plain text (no colour, no markup), so that logs, pipes
and tests read the same thing a terminal shows."""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["fmt", "render_frame", "render_table", "table_width"]


def table_width() -> int:
    """The width tables are laid out to: the terminal's, at least 100 columns; off a terminal
    (a file, a pipe) 100, or ``COLUMNS`` when set."""
    return max(100, shutil.get_terminal_size((100, 24)).columns)


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: floats rounded to ``digits`` places after the point (``digits`` significant
    digits below 10**-digits), integral counts as integers, NaN / NA / NaT as '-'."""
    if type(value).__name__ in ("NAType", "NaTType"):     # pandas' missing scalars
        return "-"
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()            # numpy scalars: int64 2 -> 2, float64 -> float
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
    others wrap between words. A table whose longest words do not fit that width is laid
    out wider rather than cut: no cell, header or word is ever cropped."""
    from rich.box import SIMPLE_HEAD
    from rich.console import Console
    from rich.table import Table

    cells = [[fmt(v) for v in row] for row in rows]
    widths = _widths([str(c) for c in columns], cells,
                     [c in keep or c in numeric for c in columns], width or table_width())
    table = Table(title=title, box=SIMPLE_HEAD, title_justify="left", pad_edge=False,
                  show_edge=False, collapse_padding=True)
    for c, w in zip(columns, widths, strict=True):
        table.add_column(c, justify="right" if c in numeric else "left", width=w,
                         overflow="fold")      # fold: never reached (see _widths)
    for row in cells:
        table.add_row(*row)
    out = io.StringIO()
    Console(file=out, width=max(width or table_width(), sum(widths) + _GAP * len(widths)),
            no_color=True, highlight=False, markup=False, emoji=False, force_terminal=False,
            soft_wrap=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").splitlines())


_GAP = 2          # between two columns: the padding (collapsed) and the rule


def _widths(columns: list[str], cells: list[list[str]], whole: list[bool],
            target: int) -> list[int]:
    """Each column's width: its widest line when the table fits ``target``; else every
    column at least its longest word (its widest cell where ``whole``: numbers and names
    are never wrapped; headers always wrap between words), the room left shared in
    proportion to what each column would still take. Wider than ``target`` rather than
    cut."""
    natural = [max(_least(c, True), *(_least(r[i], True) for r in cells))
               for i, c in enumerate(columns)]
    least = [max(_least(c, False), *(_least(r[i], w) for r in cells))
             for i, (c, w) in enumerate(zip(columns, whole, strict=True))]
    room = target - _GAP * max(0, len(columns) - 1)
    if sum(natural) <= room:
        return natural
    spare, want = max(0, room - sum(least)), [n - m for n, m in zip(natural, least, strict=True)]
    total = sum(want) or 1
    return [m + (spare * w) // total for m, w in zip(least, want, strict=True)]


def _least(cell: str, whole: bool) -> int:
    lines = cell.splitlines() or [""]
    return max(len(line) for line in lines) if whole else \
        max((len(w) for line in lines for w in line.split()), default=0)


def _numeric(series: Any) -> bool:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return True
    text = series.dropna().astype(str).str.strip()
    text = text[text != ""]
    return bool(len(text)) and bool(text.str.fullmatch(
        r"(-|[-+]?(\d[\d.e+-]*|nan|inf))( \[.*\])?|\[.*\]").all())


def render_frame(frame: Any, *, title: str | None = None, index: str | None = None,
                 counts: Sequence[str] = (), width: int | None = None) -> str:
    """A ``pandas.DataFrame`` as a ``render_table``: the index first (named ``index``; left
    out when ``index`` is None and the index is a plain range), number columns
    right-aligned, ``counts`` (and integer columns) printed as integers, text columns
    wrapped between words. Two-level column labels are joined with a space."""
    import pandas as pd

    df = frame.copy()
    if isinstance(df.columns, pd.MultiIndex):
        df.columns = [" ".join(str(p) for p in c if str(p)).strip() for c in df.columns]
    df.columns = [str(c) for c in df.columns]
    keep: list[str] = []
    if index is not None or not isinstance(df.index, pd.RangeIndex):
        names = [str(n) if n is not None else (index or "") for n in df.index.names]
        if index is not None and df.index.nlevels == 1:
            names = [index]
        df = df.reset_index(names=names)
        keep += names
    for c in counts:
        if c in df.columns:
            df[c] = pd.Series([None if pd.isna(v) else int(v) for v in df[c]],
                              index=df.index, dtype=object)
    numeric = [c for c in df.columns if c not in keep and _numeric(df[c])]
    rows = df.astype(object).where(df.notna(), None).itertuples(index=False, name=None)
    return render_table(list(df.columns), rows, title=title, numeric=numeric, keep=keep,
                        width=width)
