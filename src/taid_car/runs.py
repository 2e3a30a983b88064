"""Run directories written by ``python -m taid_car.run``: finding them and reading what they hold.

A run directory holds ``results.json`` (per-set scores), ``run.json`` (parameters, training
time, steps), ``.hydra/overrides.yaml``, ``checkpoints/`` and, with ``logger=csv`` or
``logger=wandb``, ``csv/version_*/metrics.csv`` (training curves). A Hydra multirun directory
holds one per job. Used by ``compare``, ``crops``, the GPU check and the experiment scripts.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from taid_car.rundir import LOCK_NAME
from taid_car.scoring.report import read_json

SEARCH_DEPTH = 3


class NoRunsError(ValueError):
    """The given directories hold no run (or no finished run) to compare."""


@dataclass
class Run:
    """One run directory: its per-set results (None when it failed) and its run.json summary."""

    path: Path
    name: str
    results: list[dict] | None = None
    summary: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    problem: str = ""

    @property
    def failed(self) -> bool:
        return self.results is None

    @property
    def method(self) -> str:
        if self.summary.get("method"):
            return str(self.summary["method"])
        return str(self.results[0]["method"]) if self.results else self.name

    @property
    def scale(self) -> int | None:
        if self.summary.get("scale") is not None:
            return int(self.summary["scale"])
        return int(self.results[0]["scale"]) if self.results else None


# ---------------------------------------------------------------------------------------------
# Finding and reading runs


def is_run_dir(path: Path) -> bool:
    """A directory ``taid_car.run`` wrote into (a finished run or a job that failed early)."""
    return any((path / name).exists() for name in ("results.json", "run.json", ".hydra"))


def find_run_dirs(path: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """``path`` itself when it is a run, else the runs below it (sorted, hidden folders skipped)."""
    if is_run_dir(path):
        return [path]
    if depth == 0:
        return []
    children = sorted(
        (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )
    return [run for child in children for run in find_run_dirs(child, depth - 1)]


def natural_key(text: str) -> list:
    """Sort key putting ``Set5`` before ``Set14`` and ``2_car`` before ``10_car``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def read_overrides(path: Path) -> list[str]:
    """The job's Hydra overrides (``.hydra/overrides.yaml``), to name a failed job."""
    file = path / ".hydra" / "overrides.yaml"
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(file)) if file.is_file() else []
    except Exception:  # noqa: BLE001 - a damaged file only loses the label
        return []
    return [str(item) for item in overrides] if isinstance(overrides, list) else []


def load_run(path: Path, name: str) -> Run:
    """Read ``results.json`` and ``run.json``; no readable results file marks a failed run."""
    run = Run(path=path, name=name, overrides=read_overrides(path))
    summary_file = path / "run.json"
    if summary_file.is_file():
        try:
            run.summary = read_json(summary_file)
        except (OSError, ValueError):
            run.summary = {}
    results_file = path / "results.json"
    if not results_file.is_file():
        run.problem = why_no_results(path)
        return run
    try:
        results = read_json(results_file)
    except (OSError, ValueError) as err:
        run.problem = f"unreadable results.json: {err}"
        return run
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        run.problem = "results.json is not a list of per-set results"
        return run
    run.results = results
    return run


#: what a run directory holds besides its results that says nothing of how far it got
BOOKKEEPING = (".hydra", "failed.txt", LOCK_NAME)
#: the longest part of a failed job's ``failed.txt`` quoted
FAILED_CHARS = 300


def _one_line(text: str, limit: int = FAILED_CHARS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _planned_test(path: Path) -> bool | None:
    """The job's ``test`` setting from ``.hydra/config.yaml`` (None when unreadable)."""
    file = path / ".hydra" / "config.yaml"
    try:
        value = OmegaConf.load(file).get("test") if file.is_file() else None
    except Exception:  # noqa: BLE001 - a damaged file only loses the hint
        return None
    return value if isinstance(value, bool) else None


def why_no_results(path: Path) -> str:
    """Why a run directory has no ``results.json``, as far as its files tell: the one-line error
    of a failed sweep job (``failed.txt``), checkpoints of a run that was interrupted, is still
    running or ran with ``test=false`` (with the command that goes on from there), or a folder
    where the job never got to write anything."""
    folder = path / "checkpoints"
    ckpts = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    shown = ", ".join(ckpts[:4]) + (", ..." if len(ckpts) > 4 else "")
    resume = f"resume it with its overrides and ckpt_path=last hydra.run.dir={path}"
    failed = path / "failed.txt"
    if failed.is_file():
        try:
            error = _one_line(failed.read_text(errors="replace")) or "(empty failed.txt)"
        except OSError as err:
            error = f"failed.txt unreadable: {err}"
        after = f"; it left checkpoints/{shown}: fix the cause, then {resume}" if ckpts else ""
        return f"no results.json: the job failed: {error}{after}"
    if ckpts:
        if _planned_test(path) is False:
            try:
                ckpt = tested_checkpoint(path)
            except FileNotFoundError:  # only resume points
                ckpt = folder / ckpts[-1]
            return (f"no results.json: run with test=false (trained: checkpoints/{shown}); score it with "
                    f"`python -m taid_car.evaluate ckpt_path={ckpt}`")
        state = "interrupted" if "interrupted.ckpt" in ckpts else "interrupted or still running"
        return f"no results.json: {state} (checkpoints/{shown}); {resume}"
    logs = sorted(p.name for p in path.glob("*.log"))
    written = [p.name for p in path.iterdir() if p.name not in BOOKKEEPING and p.suffix != ".log"]
    see = f"; see {logs[0]}" if logs else ""
    if not written:
        return ("no results.json: the job wrote nothing but its config (not started, killed at "
                f"start-up, or stopped before training{see})")
    return (f"no results.json and no checkpoint: it stopped (or is still running) before its first "
            f"checkpoint{see}; run it again with its overrides")


def collect_runs(paths: Sequence[str | Path]) -> tuple[list[Run], Path]:
    """All runs under ``paths`` and the directory they share (names are relative to it)."""
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.is_dir():
            raise NoRunsError(f"{root} is not a directory")
    base = common_base(roots)
    found: dict[Path, None] = {}
    for root in roots:
        for run_dir in find_run_dirs(root):
            found.setdefault(run_dir.resolve(), None)
    if not found:
        empty = [str(root) for root in roots if not any(root.iterdir())]
        said = f" ({', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty: not started yet?)" if empty else ""
        raise NoRunsError(
            f"no runs found in {', '.join(map(str, roots))}{said}: expected a Hydra multirun directory "
            "(job sub-directories such as 0_car_x2/ holding results.json and run.json) or run "
            "directories written by `python -m taid_car.run`"
        )
    return [load_run(path, run_name(path, base)) for path in found], base


def common_base(roots: Sequence[Path]) -> Path:
    """The one directory given, or the common parent of several."""
    resolved = [r.resolve() for r in roots]
    if len(resolved) == 1:
        return resolved[0]
    return Path(os.path.commonpath([str(r) for r in resolved]))


def run_name(path: Path, base: Path) -> str:
    """The run's path relative to ``base`` (its own name when it *is* ``base``)."""
    relative = path.relative_to(base) if path.is_relative_to(base) else Path(path.name)
    return relative.as_posix() if relative.parts else path.name


def read_metrics_csv(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """``column -> [(step, value)]`` from the run's Lightning CSVLogger files (all versions,
    later versions winning on repeated steps, as after a resume); {} when there are none."""
    files = sorted(
        run_dir.glob("*/version_*/metrics.csv"),
        key=lambda p: (p.parent.parent.name, natural_key(p.parent.name)),
    )
    series: dict[str, dict[float, float]] = {}
    for file in files:
        with file.open(newline="") as handle:
            for record in csv.DictReader(handle):
                step = record.get("step")
                if not step:
                    continue
                for column, text in record.items():
                    if column in ("step", "epoch") or not text:
                        continue
                    try:
                        series.setdefault(column, {})[float(step)] = float(text)
                    except ValueError:
                        continue
    return {column: sorted(points.items()) for column, points in series.items()}


def tested_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a run was tested with: the best one its validation kept, else ``last.ckpt``
    (``periodic.ckpt`` and ``interrupted.ckpt``, the resume points, are never the tested one)."""
    folder = run_dir / "checkpoints"
    rolling = ("last.ckpt", "periodic.ckpt", "interrupted.ckpt")
    kept = sorted(p for p in folder.glob("*.ckpt") if p.name not in rolling) if folder.is_dir() else []
    if kept:
        return kept[-1]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise FileNotFoundError(f"{run_dir}: no checkpoint in {folder}")
