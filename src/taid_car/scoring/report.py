"""Results of ``run`` and ``evaluate``: one row per (method, set, scale) as a terminal table,
Markdown to paste, CSV and JSON (with per-image scores) to compare; written through
:mod:`taid_car.scoring.tables`, the suite's one table writer."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from taid_car.atomic_write import write_atomically
from taid_car.channel import channel_label
from taid_car.scoring import tables
from taid_car.scoring.results import SetResult
from taid_car.scoring.tables import Column
from taid_car.scoring.tasks import RESIZE, SCORES, columns_in_order, common_task, tasks_of_results

ID_COLUMNS = [
    Column("method", "Method", text=True),
    Column("set_name", "Set", text=True),
    Column("scale", "Scale", "x{}"),
    Column("images", "Images"),
]


#: the LR channel of a row (:func:`~taid_car.channel.channel_label`), shown when a row is not png
CHANNEL_COLUMN = Column("channel", "LR channel", channel_label, text=True)

#: what results.csv records of the LR channel: its name, quality (empty for png), chroma subsampling
CHANNEL_KEYS = ["channel", "quality", "subsampling"]

#: results.csv columns: the id columns, the channel, every score of the score table (empty where a
#: task has none; ``bpp`` / ``bicubic_bpp`` are bits per LR pixel), and the task
CSV_KEYS = [*(c.key for c in ID_COLUMNS), *CHANNEL_KEYS, *SCORES, "task"]


def _rows(results: Sequence[SetResult]) -> list[dict]:
    return [r.as_row() for r in results]


def columns_for(rows: Sequence[dict]) -> list[Column]:
    """The rows' task scores (:mod:`taid_car.scoring.tasks`, titles and formats from its score
    table) after the id columns (and the LR channel when a row is not png), without those no row
    has a value for; the task's own titles when all rows are of one task (colorization's LR
    column is "gray vs plain gray")."""
    tasks = tasks_of_results(rows) or [RESIZE]
    task = common_task(rows) or RESIZE
    scores = [name for name in columns_in_order(tasks) if any(row.get(name) is not None for row in rows)]
    channel = [CHANNEL_COLUMN] if any(channel_label(row) != "png" for row in rows) else []
    return ID_COLUMNS + channel + [Column(name, task.title(name), SCORES[name].fmt) for name in scores]


def markdown_table(results: Sequence[SetResult]) -> str:
    """GitHub Markdown table, one row per (method, set, scale)."""
    rows = _rows(results)
    return tables.markdown_table(rows, columns_for(rows))


def print_results(results: Sequence[SetResult], title: str = "Results") -> None:
    """Print the table (wide console for logs and pipes, so no column is truncated)."""
    rows = _rows(results)
    tables.print_table(rows, columns_for(rows), title)


def write_results(
    results: Sequence[SetResult], out_dir: str | Path, extra: dict | None = None, markdown_after: str = ""
) -> dict[str, Path]:
    """Write results.md, results.csv, results.json (with per-image scores) into ``out_dir``,
    each whole (:func:`~taid_car.atomic_write.write_atomically`).

    ``extra`` (parameter counts, training time, ...) goes to run.json beside them;
    ``markdown_after`` (e.g. the baseline's table) is written into results.md after the table.
    """
    out = Path(out_dir)
    paths = {"md": out / "results.md", "csv": out / "results.csv", "json": out / "results.json"}
    write_atomically(paths["md"], markdown_table(results) + markdown_after)
    tables.write_csv(_rows(results), CSV_KEYS, paths["csv"])
    write_atomically(paths["json"], to_json([r.__dict__ for r in results]))
    if extra is not None:
        paths["run"] = write_atomically(out / "run.json", to_json(extra))
    return paths


#: how non-finite numbers are written (JSON has no Infinity): e.g. Bicubic's LR fidelity is inf
NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def to_json(obj) -> str:
    """Strict JSON of ``obj`` (indented); infinite / NaN floats become the strings of :data:`NONFINITE`."""
    return json.dumps(_encode(obj), indent=2, allow_nan=False)


def read_json(path: str | Path):
    """A file :func:`to_json` wrote, with the :data:`NONFINITE` strings read back as floats."""
    return _decode(json.loads(Path(path).read_text()))


def _encode(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    return obj


def _decode(obj):
    if isinstance(obj, str) and obj in NONFINITE:
        return NONFINITE[obj]
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj
