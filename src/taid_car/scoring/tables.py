"""The one table writer: rows (dicts) and columns -> terminal (rich), Markdown, CSV.

Every CLI writes its tables through this module: ``run``/``evaluate`` results
(:mod:`taid_car.scoring.report`), ``compare``'s comparison and ``rescale roundtrip``'s per-image table.
A :class:`Column` says which row key it shows, its title and how a cell is written; text
columns are left-aligned, numbers right-aligned. CSV keeps full precision.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from taid_car.atomic_write import write_atomically

MISSING = "–"


@dataclass(frozen=True)
class Column:
    """``key`` of the row, ``title`` in the header, ``fmt`` a format spec for the value (e.g.
    ``"{:.2f}"``) or a function row -> cell text; ``text`` columns are left-aligned."""

    key: str
    title: str
    fmt: str | Callable[[dict], str] = "{}"
    text: bool = False

    def cell(self, row: dict) -> str:
        if callable(self.fmt):
            return self.fmt(row)
        value = row.get(self.key)
        return MISSING if value is None else self.fmt.format(value)


def cells(rows: Sequence[dict], columns: Sequence[Column]) -> list[list[str]]:
    """Formatted cells, one list per row."""
    return [[c.cell(row) for c in columns] for row in rows]


def markdown_table(
    rows: Sequence[dict], columns: Sequence[Column], title: str | None = None, caption: str | None = None
) -> str:
    """GitHub Markdown: optional bold title line, header, rule, one line per row, optional caption."""

    def line(items) -> str:
        return "| " + " | ".join(str(item).replace("|", "\\|") for item in items) + " |"

    rule = "|" + "|".join("---" if c.text else "---:" for c in columns) + "|"
    lines = [f"**{title}**", ""] if title else []
    lines += [line(c.title for c in columns), rule, *(line(r) for r in cells(rows, columns))]
    text = "\n".join(lines) + "\n"
    return text + (f"\n{caption}.\n" if caption else "")


def rich_table(
    rows: Sequence[dict], columns: Sequence[Column], title: str = "", caption: str | None = None,
    total_row: bool = False,
):
    """A ``rich`` Table; ``total_row`` draws a rule above the last row (a mean row)."""
    from rich.table import Table

    table = Table(title=title or None, caption=caption)
    for c in columns:
        table.add_column(c.title, justify="left" if c.text else "right")
    formatted = cells(rows, columns)
    for i, row in enumerate(formatted):
        table.add_row(*row, end_section=total_row and i == len(formatted) - 2)
    return table


def print_table(
    rows: Sequence[dict], columns: Sequence[Column], title: str = "", caption: str | None = None,
    total_row: bool = False,
) -> None:
    """Print :func:`rich_table`; logs and pipes get a wide console so no column is cut."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=250)
    console.print(rich_table(rows, columns, title, caption, total_row))


def write_csv(rows: Sequence[dict], fields: Sequence[str], path: Path, overwrite: bool = True) -> Path:
    """Raw values of ``fields`` (missing ones empty, other keys ignored), UTF-8, written whole
    (:func:`~taid_car.atomic_write.write_atomically`); ``overwrite=False`` refuses an existing
    file (``FileExistsError``)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    return write_atomically(path, text.getvalue(), overwrite=overwrite)
