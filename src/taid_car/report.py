"""Results tables: a rich table for the terminal, Markdown to paste, CSV and JSON to compare."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from taid_car.results import SetResult

COLUMNS = [
    ("method", "Method", "{}"),
    ("set_name", "Set", "{}"),
    ("scale", "Scale", "x{}"),
    ("images", "Images", "{}"),
    ("psnr_y", "PSNR-Y (dB)", "{:.2f}"),
    ("ssim_y", "SSIM-Y", "{:.4f}"),
    ("psnr_rgb", "PSNR-RGB (dB)", "{:.2f}"),
    ("lr_psnr_y", "LR vs bicubic (dB)", "{:.2f}"),
    ("bicubic_psnr_y", "Bicubic PSNR-Y", "{:.2f}"),
    ("bicubic_ssim_y", "Bicubic SSIM-Y", "{:.4f}"),
]


def _cells(result: SetResult) -> list[str]:
    row = result.as_row()
    return [fmt.format(row[key]) for key, _, fmt in COLUMNS]


def markdown_table(results: Sequence[SetResult]) -> str:
    """GitHub Markdown table, one row per (method, set, scale)."""
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|"
    rows = ["| " + " | ".join(_cells(r)) + " |" for r in results]
    return "\n".join([header, rule, *rows]) + "\n"


def rich_table(results: Sequence[SetResult], title: str = "Results") -> Table:
    table = Table(title=title)
    for i, (_, name, _) in enumerate(COLUMNS):
        table.add_column(name, justify="left" if i < 2 else "right")
    for result in results:
        table.add_row(*_cells(result))
    return table


def print_results(results: Sequence[SetResult], title: str = "Results") -> None:
    """Print the table; logs and pipes get a wide console so no column is truncated."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(rich_table(results, title))


def write_results(
    results: Sequence[SetResult], out_dir: str | Path, extra: dict | None = None
) -> dict[str, Path]:
    """Write results.md, results.csv, results.json (with per-image scores) into ``out_dir``.

    ``extra`` (parameter counts, training time, ...) goes to run.json beside them.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "results.md", "csv": out / "results.csv", "json": out / "results.json"}
    paths["md"].write_text(markdown_table(results))
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[key for key, _, _ in COLUMNS])
        writer.writeheader()
        for result in results:
            writer.writerow(result.as_row())
    paths["json"].write_text(json.dumps([r.__dict__ for r in results], indent=2))
    if extra is not None:
        paths["run"] = out / "run.json"
        paths["run"].write_text(json.dumps(extra, indent=2))
    return paths
