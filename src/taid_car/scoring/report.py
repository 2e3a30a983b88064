"""Results of ``run`` and ``evaluate``: one row per (method, set, scale) as a terminal table,
Markdown to paste, CSV and JSON (with per-image scores) to compare; written through
:mod:`taid_car.scoring.tables`, the suite's one table writer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from taid_car.scoring import tables
from taid_car.scoring.results import SetResult
from taid_car.scoring.tables import Column

COLUMNS = [
    Column("method", "Method", text=True),
    Column("set_name", "Set", text=True),
    Column("scale", "Scale", "x{}"),
    Column("images", "Images"),
    Column("psnr_y", "PSNR-Y (dB)", "{:.2f}"),
    Column("ssim_y", "SSIM-Y", "{:.4f}"),
    Column("psnr_rgb", "PSNR-RGB (dB)", "{:.2f}"),
    Column("lr_psnr_y", "LR vs bicubic (dB)", "{:.2f}"),
    Column("bicubic_psnr_y", "Bicubic PSNR-Y", "{:.2f}"),
    Column("bicubic_ssim_y", "Bicubic SSIM-Y", "{:.4f}"),
]


def _rows(results: Sequence[SetResult]) -> list[dict]:
    return [r.as_row() for r in results]


def markdown_table(results: Sequence[SetResult]) -> str:
    """GitHub Markdown table, one row per (method, set, scale)."""
    return tables.markdown_table(_rows(results), COLUMNS)


def print_results(results: Sequence[SetResult], title: str = "Results") -> None:
    """Print the table (wide console for logs and pipes, so no column is truncated)."""
    tables.print_table(_rows(results), COLUMNS, title)


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
    tables.write_csv(_rows(results), [c.key for c in COLUMNS], paths["csv"])
    paths["json"].write_text(json.dumps([r.__dict__ for r in results], indent=2))
    if extra is not None:
        paths["run"] = out / "run.json"
        paths["run"].write_text(json.dumps(extra, indent=2))
    return paths
