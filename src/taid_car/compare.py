"""Compare the runs of a sweep: one table and two plots from the runs' saved results.

    python -m taid_car.compare multirun/2026-01-31_12-00-00
    python -m taid_car.compare outputs/car_x4/<date> outputs/taid_x4/<date> --output reports/x4
    python -m taid_car.compare multirun/<date> --metric ssim_y
    python -m taid_car.compare multirun/taid_color      # a colour sweep: ranked on PSNR-RGB

Reads what ``python -m taid_car.run`` leaves in each run directory (no W&B needed):
``results.json`` (per-set scores), ``run.json`` (parameter counts, training time, steps) and
``csv/version_*/metrics.csv`` (training curves, written with ``logger=csv`` or ``logger=wandb``).
A directory argument may be a Hydra multirun directory (its job sub-directories are the runs),
a single run directory, or a folder holding either (searched a few levels deep).

Writes into the multirun directory (the common parent of several run directories, or ``--output``):

- ``comparison.md`` / ``comparison.csv``: one row per method x scale x set with the scores of
  its task (:mod:`taid_car.scoring.tasks`: PSNR-Y/SSIM-Y, the gain over the Bicubic & Bicubic
  reference (dB), LR fidelity (PSNR-Y of the learned LR against the bicubic LR) and the
  reference PSNR/SSIM for resizing; PSNR/SSIM-RGB and gray fidelity for colorization),
  parameters (downscaler + upscaler), training time and steps; sorted by set, scale, then
  ``--metric`` descending (``headline``, the default: each run's task headline, so a colour sweep
  ranks on PSNR-RGB);
- ``<metric>_per_set.png``: grouped bars per set and method, one panel per scale, the bicubic
  reference marked on every bar (each run's own LR channel: the first row of a set);
- with rows through a lossy LR channel (``channel=jpeg``, ``channel.test_qualities``, :mod:`taid_car.channel`):
  ``<headline>_vs_quality.png`` and ``<headline>_vs_bpp.png``, the rate-distortion view: per
  scale (rows) and set (columns), PSNR-Y (the headline) against the codec's quality and against
  the rate (bits per LR pixel), one line per method, Bicubic & Bicubic dashed, each method's
  clean (png) score a dotted level line;
- ``training_curves.png``: training loss and the validation headline against the step, one line per run.

Runs without ``results.json`` are listed as failed with the reason their files tell
(:func:`taid_car.runs.why_no_results`: a sweep job's ``failed.txt``, checkpoints of an
interrupted run or one with ``test=false``, a job that never started); runs without
``metrics.csv`` are left out of the curves. Both are said in the report.
The table is also printed. Exit status: 0 on success, 2 when no run (or no finished run) is found.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.markup import escape

from taid_car.atomic_write import write_atomically
from taid_car.channel import channel_label
from taid_car.errors import one_line
from taid_car.runs import NoRunsError, Run, collect_runs, natural_key, read_metrics_csv
from taid_car.scoring import tables
from taid_car.scoring.tables import MISSING, Column
from taid_car.scoring.tasks import (
    SCORES,
    TASKS,
    Score,
    columns_in_order,
    common_task,
    task_of_result,
    tasks_of_results,
)

#: what ``--metric`` may pick: each row's task headline, or any score of the score table
METRIC_CHOICES = ("headline", *SCORES)

#: Training curves: (metrics.csv column, accepted aliases, y-axis label).
CURVES = [
    ("train/loss", ("train/loss", "train/loss_step"), "training loss (L1 + regularisers)"),
    ("val/headline", ("val/headline", "val/psnr_y", "val/psnr_rgb"),
     "validation headline (dB): PSNR-Y; PSNR-RGB for colorization"),
]

#: comparison.csv columns (raw numbers; parameters as counts, time in seconds).
CSV_FIELDS = [
    "set_name",
    "scale",
    "method",
    "run",
    "channel",
    "quality",
    "subsampling",
    "task",
    "images",
    "headline",
    *SCORES,
    "gain_psnr_y",
    "params_downscaler",
    "params_upscaler",
    "params_total",
    "train_seconds",
    "steps",
    "pretrain_steps",
]

# ---------------------------------------------------------------------------------------------
# The comparison table


def run_rows(run: Run) -> list[dict]:
    """One flat row per set of a finished run, with its run.json figures beside the scores."""
    params = run.summary.get("params") or {}
    down, up = params.get("downscaler"), params.get("upscaler")
    rows, seen = [], set()
    for result in run.results or []:
        task = task_of_result(result)
        scores = {name: _number(result.get(name)) for name in SCORES}
        psnr, bicubic = scores["psnr_y"], scores["bicubic_psnr_y"]
        place = (str(result.get("set_name", "?")), int(result.get("scale", run.scale or 0)))
        rows.append(
            {
                "set_name": place[0],
                "scale": place[1],
                "method": str(result.get("method", run.method)),
                "run": run.name,
                "channel": str(result.get("channel") or "png"),
                "quality": result.get("quality"),
                "subsampling": result.get("subsampling"),
                # the run's own LR channel: its first row of a set (bars show it; others add rows)
                "primary": place not in seen,
                "task": task.name,
                "images": result.get("images"),
                "headline": scores[task.headline],
                "headline_reference": scores[task.headline_reference] if task.headline_reference else None,
                **scores,
                "gain_psnr_y": psnr - bicubic if psnr is not None and bicubic is not None else None,
                "params_downscaler": down,
                "params_upscaler": up,
                "params_total": down + up if down is not None and up is not None else None,
                "train_seconds": _number(run.summary.get("train_seconds")),
                "steps": run.summary.get("global_step"),
                "pretrain_steps": run.summary.get("pretrain_steps") or 0,
            }
        )
        seen.add(place)
    return rows


def _number(value) -> float | None:
    return None if value is None else float(value)


def comparison_rows(runs: Iterable[Run], metric: str = "headline") -> list[dict]:
    """Rows of all finished runs, sorted by set, scale, LR channel (png first, then each codec
    from high quality to low), then ``metric`` descending."""
    rows = [row for run in runs for row in run_rows(run)]

    def key(row: dict):
        value = row.get(metric)
        value = -math.inf if value is None or math.isnan(value) else value
        return (natural_key(row["set_name"]), row["scale"], *channel_order(row), -value, row["run"])

    return sorted(rows, key=key)


def format_count(count: int | None) -> str:
    """Parameter count as ``0``, ``950``, ``89.1k`` or ``1.52M``."""
    if count is None:
        return MISSING
    if count >= 1e6:
        return f"{count / 1e6:.2f}M"
    if count >= 1e3:
        return f"{count / 1e3:.1f}k"
    return str(int(count))


def format_seconds(seconds: float | None) -> str:
    """Training time as ``42 s``, ``3.5 min`` or ``2.1 h``."""
    if seconds is None:
        return MISSING
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return format(value, spec)


def channel_order(row: dict) -> tuple:
    """Sort key of a row's LR channel: png first, then each lossy codec from high quality to low."""
    quality = row.get("quality")
    return (row.get("channel", "png") != "png", str(row.get("channel", "png")),
            -(quality if isinstance(quality, (int, float)) else 101))


ID_COLUMNS = [
    Column("set_name", "Set", text=True),
    Column("scale", "Scale", "x{}", text=True),
    Column("method", "Method", text=True),
    Column("run", "Run", text=True),
]
CHANNEL_COLUMN = Column("channel", "LR channel", channel_label, text=True)
TAIL_COLUMNS = [
    Column(
        "params", "Params (down + up)",
        lambda r: f"{format_count(r['params_downscaler'])} + {format_count(r['params_upscaler'])}",
    ),
    Column("train_seconds", "Train time", lambda r: format_seconds(r["train_seconds"])),
    Column("steps", "Steps", lambda r: MISSING if r["steps"] is None else str(r["steps"])
           + (f" (+{r['pretrain_steps']} bicubic pretraining)" if r.get("pretrain_steps") else "")),
]
GAIN_COLUMN = Column("gain_psnr_y", "Gain vs bicubic (dB)", lambda r: _fmt(r["gain_psnr_y"], "+.2f"))


def _score_column(name: str, title: str) -> Column:
    digits = SCORES[name].fmt.strip("{}:")
    return Column(name, title, lambda r: _fmt(r[name], digits))


def columns_for(rows: Sequence[dict]) -> list[Column]:
    """Markdown / terminal columns for ``rows``: the scores of their tasks (the score table's
    titles, or the task's own when all rows share one), the PSNR-Y gain over Bicubic & Bicubic
    after SSIM-Y where there is a reference, then parameters, time and steps."""
    tasks = tasks_of_results(rows) or [TASKS["resize"]]
    task = common_task(rows)
    columns = list(ID_COLUMNS)
    if any(channel_label(row) != "png" for row in rows):
        columns.append(CHANNEL_COLUMN)
    for name in columns_in_order(tasks):
        if any(row.get(name) is not None for row in rows):
            columns.append(_score_column(name, task.title(name) if task else SCORES[name].title))
            if name == "ssim_y" and any(row.get("gain_psnr_y") is not None for row in rows):
                columns.append(GAIN_COLUMN)
    return columns + TAIL_COLUMNS


def table_cells(row: dict) -> list[str]:
    return tables.cells([row], columns_for([row]))[0]


def markdown_table(rows: Sequence[dict]) -> str:
    """GitHub Markdown table of the comparison rows."""
    return tables.markdown_table(rows, columns_for(rows))


def rich_table(rows: Sequence[dict], title: str):
    return tables.rich_table(rows, columns_for(rows), title)


def metric_score(metric: str, rows: Sequence[dict]) -> Score:
    """The score table entry ``--metric`` names; for ``headline``, the common task's headline
    (a generic "headline score" entry when the rows mix tasks)."""
    if metric != "headline":
        return SCORES[metric]
    task = common_task(rows)
    if task is not None:
        return SCORES[task.headline]
    return Score("headline score", "{:.2f}", "headline score (PSNR-Y; PSNR-RGB for colorization)", "dB")


def metric_reference(metric: str) -> str:
    """The row key of the reference beside ``metric`` (Bicubic & Bicubic), or ""."""
    return "headline_reference" if metric == "headline" else SCORES[metric].reference or ""


def write_csv(rows: Sequence[dict], path: Path) -> None:
    """Raw numbers (inf written as ``inf``, missing values empty)."""
    tables.write_csv(rows, CSV_FIELDS, path)


def failed_lines(runs: Iterable[Run]) -> list[str]:
    """``<run>: <why>`` (with the job's overrides) for each run without results."""
    return [
        f"{run.name}: {run.problem}"
        + (f" [overrides: {' '.join(run.overrides)}]" if run.overrides else "")
        for run in runs
        if run.failed
    ]


def markdown_report(
    rows: Sequence[dict],
    runs: Sequence[Run],
    metric: str,
    plots: dict[str, Path],
    notes: Sequence[str],
) -> str:
    """comparison.md: the table, the failed runs, notes on the plots, links to the PNGs."""
    finished = sum(not r.failed for r in runs)
    tasks = tasks_of_results(rows)
    scored = "; ".join(f"{task.name}: {task.scored_on}" for task in tasks)
    parts = [
        "# Comparison\n",
        (
            f"{finished} of {len(runs)} runs finished; rows sorted by set, scale, then "
            f"{metric_score(metric, rows).label} descending. Scores: {scored}. "
            + ('"Gain" is PSNR-Y minus the Bicubic & Bicubic reference on the same images; the LR '
               "fidelity is ∞ when the LR *is* the reference LR.\n" if any(t.reference_scores for t in tasks) else "\n")
        ),
        markdown_table(rows),
    ]
    failed = failed_lines(runs)
    if failed:
        parts.append("## Failed runs\n\n" + "\n".join(f"- {line}" for line in failed) + "\n")
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {note}" for note in notes) + "\n")
    if plots:
        parts.append(
            "## Plots\n\n"
            + "\n\n".join(f"![{title}]({path.name})" for title, path in plots.items())
            + "\n"
        )
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib's object API on the Agg canvas: no display, no global pyplot state)


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def series_labels(rows: Sequence[dict]) -> dict[str, str]:
    """Legend label per run: its method, with the run name where two runs share a method."""
    methods: dict[str, set[str]] = {}
    for row in rows:
        methods.setdefault(row["method"], set()).add(row["run"])
    return {
        row["run"]: row["method"]
        if len(methods[row["method"]]) == 1
        else f"{row['method']} [{row['run']}]"
        for row in rows
    }


def curve_labels(runs: Iterable[Run]) -> dict[str, str]:
    """Legend label per run for the curves: ``method x<scale>``, plus the run name if repeated."""
    finished = [run for run in runs if not run.failed]
    counts: dict[tuple, int] = {}
    for run in finished:
        counts[(run.method, run.scale)] = counts.get((run.method, run.scale), 0) + 1
    return {
        run.name: f"{run.method} x{run.scale}"
        + (f" [{run.name}]" if counts[(run.method, run.scale)] > 1 else "")
        for run in finished
    }


def plot_metric_per_set(rows: Sequence[dict], metric: str, path: Path) -> Path:
    """Grouped bars: ``metric`` per set (x) and method (bars), one panel per scale;
    the Bicubic & Bicubic reference drawn as a dashed black line across each bar.
    A method keeps its colour in every panel (hatched when it has several runs in one)."""
    score = metric_score(metric, rows)
    label, unit = score.label, score.unit
    scales = sorted({row["scale"] for row in rows})
    methods = sorted({row["method"] for row in rows})
    colors = {method: f"C{i % 10}" for i, method in enumerate(methods)}
    figure = _new_figure(max(5.0, 4.5 * len(scales)), 4.2)
    axes = figure.subplots(1, len(scales), squeeze=False)[0]
    for ax, scale in zip(axes, scales):
        _bar_panel(ax, [r for r in rows if r["scale"] == scale and r.get("primary", True)], metric, colors)
        ax.set_title(f"x{scale}")
        ax.set_xlabel("benchmark set")
        ax.set_ylabel(f"{label} ({unit})" if unit else label)
    _figure_legend(figure, axes)
    figure.suptitle(f"{label} per set and method (higher is better)")
    return write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=120))


HATCHES = ["", "//", "..", "xx", "\\\\", "++"]


def _values(by_set: dict[str, dict], sets: Sequence[str], key: str) -> list[float]:
    """``row[key]`` per set, NaN where the run has no such set or the value is not finite."""
    return [by_set[s][key] if s in by_set and _finite(by_set[s].get(key)) else np.nan for s in sets]


def _bar_panel(ax, rows: Sequence[dict], metric: str, colors: dict[str, str]) -> None:
    """One scale: a group of bars per set, one bar per run, the bicubic reference on each."""
    reference_key = metric_reference(metric)
    sets = sorted({r["set_name"] for r in rows}, key=natural_key)
    labels = series_labels(rows)
    runs = sorted({r["run"] for r in rows}, key=lambda run: labels[run])
    width, plotted, seen = 0.8 / len(runs), [], {}
    for i, run in enumerate(runs):
        by_set = {r["set_name"]: r for r in rows if r["run"] == run}
        method = next(iter(by_set.values()))["method"]
        hatch = HATCHES[seen.setdefault(method, 0) % len(HATCHES)]
        seen[method] += 1
        x = np.arange(len(sets)) - 0.4 + width * (i + 0.5)
        heights = _values(by_set, sets, metric)
        bars = ax.bar(
            x, heights, width * 0.92, label=labels[run], color=colors[method], hatch=hatch
        )
        digits = ".3f" if "ssim" in metric else ".2f"
        texts = ["" if np.isnan(h) else _fmt(h, digits) for h in heights]
        crowded = len(runs) * len(sets) > 6
        ax.bar_label(bars, labels=texts, fontsize=7, padding=1, rotation=90 if crowded else 0)
        plotted += heights
        if reference_key:
            refs = _values(by_set, sets, reference_key)
            ax.hlines(
                refs,
                x - width / 2,
                x + width / 2,
                colors="black",
                linestyles="--",
                linewidth=1.2,
                label="Bicubic & Bicubic" if i == 0 else None,
            )
            plotted += refs
    ax.set_xticks(np.arange(len(sets)), sets)
    _zoom(ax, [v for v in plotted if not np.isnan(v)], metric)
    ax.grid(axis="y", alpha=0.3)


def _figure_legend(figure: Figure, axes) -> None:
    """One legend below all panels, each label once."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(text, handle)
    ncol = 1 if max(map(len, entries), default=0) > 45 else min(3, len(entries))
    figure.legend(
        list(entries.values()),
        list(entries),
        loc="outside lower center",
        ncol=max(ncol, 1),
        fontsize=7,
        frameon=False,
    )


def _zoom(ax, values: Sequence[float], metric: str) -> None:
    """Y range around the values (PSNR differences of tenths of a dB stay visible)."""
    if not values:
        return
    low, high = min(values), max(values)
    pad = max((high - low) * 0.15, 0.02 if "ssim" in metric else 0.5)
    ax.set_ylim(max(low - 3 * pad, 0.0), high + 2 * pad)


def is_lossy(row: dict) -> bool:
    """Whether a row's LR went through a lossy channel at a quality (jpeg, webp)."""
    return row.get("channel", "png") != "png" and row.get("quality") is not None


def rate_distortion_series(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """The lossy rows as lines: one per method (``method (codec)`` when rows mix codecs; per
    method and run where two runs of a method give the same point)."""
    codecs = {row["channel"] for row in rows if is_lossy(row)}
    groups: dict[str, list[dict]] = {}
    for row in filter(is_lossy, rows):
        groups.setdefault(row["method"] + (f" ({row['channel']})" if len(codecs) > 1 else ""), []).append(row)
    series: dict[str, list[dict]] = {}
    for label, members in groups.items():
        points = [(m["scale"], m["set_name"], m["quality"]) for m in members]
        if len(points) == len(set(points)):
            series[label] = members
            continue
        for member in members:
            series.setdefault(f"{label} [{member['run']}]", []).append(member)
    return series


#: the x axis of each rate-distortion plot: (row key, reference row key, axis label, file suffix)
RD_AXES = {
    "quality": ("quality", "quality", "codec quality (JPEG 1..100, WebP 0..100)", "vs_quality"),
    "bpp": ("bpp", "bicubic_bpp", "rate: bits per LR pixel", "vs_bpp"),
}


def plot_rate_distortion(rows: Sequence[dict], axis: str, path: Path) -> Path:
    """The headline (PSNR-Y) against the lossy channel's quality (``axis="quality"``) or rate
    (``"bpp"``), one panel per scale (row) and set (column), one line per method
    (:func:`rate_distortion_series`), Bicubic & Bicubic dashed black, each method's clean (png)
    score a dotted level line in its colour."""
    x_key, reference_x, x_label, _ = RD_AXES[axis]
    lossy = [row for row in rows if is_lossy(row)]
    series = rate_distortion_series(rows)
    scales = sorted({row["scale"] for row in lossy})
    sets = sorted({row["set_name"] for row in lossy}, key=natural_key)
    colors = {label: f"C{i % 10}" for i, label in enumerate(sorted(series))}
    clean = {(r["method"], r["scale"], r["set_name"]): r["headline"] for r in rows
             if r.get("channel", "png") == "png" and _finite(r.get("headline"))}
    score = metric_score("headline", rows)
    figure = _new_figure(max(5.0, 4.2 * len(sets)), 3.6 * len(scales) + 0.9)
    axes = figure.subplots(len(scales), len(sets), squeeze=False)
    for i, scale in enumerate(scales):
        for j, set_name in enumerate(sets):
            ax = axes[i][j]
            here = [r for r in lossy if r["scale"] == scale and r["set_name"] == set_name]
            for label in sorted(series):
                points = sorted((m[x_key], m["headline"]) for m in series[label]
                                if m["scale"] == scale and m["set_name"] == set_name
                                and _finite(m.get(x_key)) and _finite(m.get("headline")))
                if not points:
                    continue
                ax.plot(*zip(*points), marker="o", markersize=3, color=colors[label], label=label)
                level = clean.get((series[label][0]["method"], scale, set_name))
                if level is not None:
                    ax.axhline(level, color=colors[label], linestyle=":", linewidth=1)
            reference: dict[tuple, tuple[float, float]] = {}
            for row in here:  # one point per channel and quality (the same crop's reference)
                if _finite(row.get(reference_x)) and _finite(row.get("headline_reference")):
                    reference.setdefault((row["channel"], row["quality"]), (row[reference_x], row["headline_reference"]))
            if reference:
                ax.plot(*zip(*sorted(reference.values())), color="black", linestyle="--", marker="x",
                        markersize=4, linewidth=1.2, label="Bicubic & Bicubic")
            ax.set_title(f"x{scale} {set_name}", fontsize=9)
            ax.set_xlabel(x_label)
            ax.set_ylabel(f"{score.label} ({score.unit})" if score.unit else score.label)
            ax.grid(alpha=0.3)
    _figure_legend(figure, axes.ravel())
    what = "quality" if axis == "quality" else "rate (bits per LR pixel)"
    figure.suptitle(f"{score.label} against the LR codec's {what}\n(dotted: each method's clean png score)",
                    fontsize=10)
    return write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=120))


def _curve(series: dict[str, list], aliases: Sequence[str]) -> list[tuple[float, float]]:
    for name in aliases:
        if series.get(name):
            return series[name]
    return []


def plot_training_curves(
    curves: dict[str, dict[str, list]], labels: dict[str, str], path: Path
) -> Path:
    """Training loss and the validation headline against the step, one line per run."""
    figure = _new_figure(11.0, 4.2)
    axes = figure.subplots(1, len(CURVES), squeeze=False)[0]
    for ax, (_, aliases, ylabel) in zip(axes, CURVES):
        plotted = False
        for run, series in curves.items():
            points = _curve(series, aliases)
            if points:
                steps, values = zip(*points)
                ax.plot(
                    steps,
                    values,
                    marker="o" if len(points) < 20 else None,
                    markersize=3,
                    label=labels.get(run, run),
                )
                plotted = True
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=7)
        else:
            ax.text(
                0.5,
                0.5,
                f"no {aliases[0]} logged",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
    figure.suptitle("Training curves (from csv/version_*/metrics.csv)")
    return write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=120))


def collect_curves(runs: Iterable[Run]) -> tuple[dict[str, dict[str, list]], list[str]]:
    """Curves of the finished runs that have metrics.csv files; names of those that do not."""
    curves, missing = {}, []
    for run in runs:
        if run.failed:
            continue
        series = read_metrics_csv(run.path)
        if any(_curve(series, aliases) for _, aliases, _ in CURVES):
            curves[run.name] = series
        else:
            missing.append(run.name)
    return curves, missing


def curve_notes(curves: dict[str, dict[str, list]], no_curves: Sequence[str]) -> list[str]:
    """What the curves leave out: runs without metrics.csv, runs that never logged a curve."""
    notes = []
    if no_curves:
        notes.append(
            "no training curves (no csv/version_*/metrics.csv; logger=none?) for: "
            + ", ".join(no_curves)
        )
    for column, aliases, _ in CURVES:
        lacking = [name for name, series in curves.items() if not _curve(series, aliases)]
        if lacking:
            notes.append(
                f"no {column} logged (fewer steps than trainer.log_every_n_steps?) for: "
                + ", ".join(lacking)
            )
    return notes


# ---------------------------------------------------------------------------------------------
# The command


def compare(
    paths: Sequence[str | Path],
    output: str | Path | None = None,
    metric: str = "headline",
    console: Console | None = None,
) -> dict[str, Path]:
    """Read the runs, write comparison.md/.csv and the PNG plots, print the table.

    Returns the written files by kind (``md``, ``csv``, ``bars``, ``curves``; ``quality`` and
    ``bpp``, the rate-distortion plots, when rows went through a lossy LR channel).
    Raises :class:`NoRunsError` when no run, or no finished run, is found.
    """
    if metric not in METRIC_CHOICES:
        raise ValueError(f"metric must be one of {', '.join(METRIC_CHOICES)}, got {metric!r}")
    runs, base = collect_runs(paths)
    rows = comparison_rows(runs, metric)
    if not rows:
        raise NoRunsError(
            f"none of the {len(runs)} run(s) under {base} has results to compare: "
            + "; ".join(failed_lines(runs))
        )
    out = Path(output) if output is not None else base
    out.mkdir(parents=True, exist_ok=True)
    written = {"md": out / "comparison.md", "csv": out / "comparison.csv"}
    write_csv(rows, written["csv"])

    plots = {}
    task = common_task(rows)
    shown = task.headline if metric == "headline" and task else metric  # psnr_y_per_set.png, not headline_
    written["bars"] = plot_metric_per_set(rows, metric, out / f"{shown}_per_set.png")
    plots[f"{metric_score(metric, rows).label} per set"] = written["bars"]
    if any(is_lossy(row) for row in rows):  # the rate-distortion view
        headline = task.headline if task else "headline"
        for axis, (_, _, _, suffix) in RD_AXES.items():
            written[axis] = plot_rate_distortion(rows, axis, out / f"{headline}_{suffix}.png")
            plots[f"{metric_score('headline', rows).label} against the LR codec's {axis}"] = written[axis]
    curves, no_curves = collect_curves(runs)
    if curves:
        written["curves"] = plot_training_curves(
            curves, curve_labels(runs), out / "training_curves.png"
        )
        plots["Training curves"] = written["curves"]
    notes = curve_notes(curves, no_curves)
    write_atomically(written["md"], markdown_report(rows, runs, metric, plots, notes))
    _print_summary(console, rows, runs, notes, written)
    return written


def _print_summary(console: Console | None, rows, runs, notes, written) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
    finished = sum(not r.failed for r in runs)
    tasks = tasks_of_results(rows)
    console.print(rich_table(rows, f"Comparison of {finished} finished runs ({'; '.join(t.scored_on for t in tasks)})"))
    for line in failed_lines(runs):
        console.print(f"[red]failed[/red] {escape(line)}", highlight=False)
    for note in notes:
        console.print(f"note: {escape(note)}", highlight=False)
    for path in written.values():
        console.print(f"wrote {path}", highlight=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m taid_car.compare",
        description="Compare finished taid_car runs (a Hydra multirun directory or several run "
        "directories): Markdown/CSV table and PNG plots.",
    )
    parser.add_argument("runs", nargs="+", help="a multirun directory, or run directories")
    parser.add_argument(
        "--output",
        "-o",
        default=None,
        help="folder for comparison.md/.csv and the plots "
        "(default: the multirun directory, or the runs' common parent)",
    )
    parser.add_argument(
        "--metric",
        default="headline",
        choices=list(METRIC_CHOICES),
        help="sort key within set and scale, and the bar-chart quantity (default headline: "
        "each run's task headline, PSNR-Y; PSNR-RGB for colorization)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        compare(args.runs, args.output, args.metric)
    except NoRunsError as err:
        print(f"taid_car.compare: error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
