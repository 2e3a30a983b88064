"""Validation PSNR-Y of the ablation runs next to the study's runs, at the same training step.

    .venv/bin/python experiments/cpu_study/ablations.py multirun/cpu_study multirun/cpu_study_ablations --step 499

Every ablation is the study's x4 preset with one change, trained for the first 500 of the
study's 2000 steps with the study's schedule (``scheduler.T_max=2000``), so up to that step it
sees exactly what the full run saw and differs only by its change. Reads each run's
``csv/version_*/metrics.csv`` and prints one Markdown row per run with its overrides (from
``.hydra/overrides.yaml``) and ``val/<set>/psnr_y`` and ``val/<set>/lr_psnr_y`` at ``--step``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from taid_car.runs import find_run_dirs, read_metrics_csv, read_overrides

SETS = ("Set5", "T91_holdout")
SKIP = ("experiment=", "data_root=", "trainer.max_steps=", "scheduler.T_max=", "test=")


def value_at(series: dict, column: str, step: float) -> float:
    return next((v for s, v in series.get(column, []) if s == step), math.nan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--step", type=float, default=499, help="logged step (0-based) to read")
    parser.add_argument("--scale", default="4")
    args = parser.parse_args()
    header = ["run", "changes"] + [f"{s} PSNR-Y" for s in SETS] + [f"{s} LR vs bicubic" for s in SETS]
    print("| " + " | ".join(header) + " |\n|---|---|" + "---:|" * (2 * len(SETS)))
    for run in (r for d in args.dirs for r in find_run_dirs(d)):
        overrides = read_overrides(run)
        if f"scale={args.scale}" not in overrides:
            continue
        series = read_metrics_csv(run)
        psnr = [value_at(series, f"val/{s}/psnr_y", args.step) for s in SETS]
        if all(math.isnan(v) for v in psnr):
            continue
        fidelity = [value_at(series, f"val/{s}/lr_psnr_y", args.step) for s in SETS]
        changes = " ".join(o for o in overrides if not o.startswith(SKIP) and o != f"scale={args.scale}")
        cells = [f"{v:.2f}" for v in psnr] + ["∞" if math.isinf(v) else f"{v:.2f}" for v in fidelity]
        print(f"| {run.name} | {changes or '–'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
