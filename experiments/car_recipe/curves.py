"""Validation PSNR-Y on the T91 hold-out against the total training step, one panel per scale.

    .venv/bin/python experiments/car_recipe/curves.py multirun/car_recipe experiments/car_recipe/curves.png

A warm-started run (``upscaler.init_from``) is drawn from the step its upscaler's pretraining
ended (the pretraining run's ``global_step``), so a CAR run warm-started after 2000 bicubic steps
and the bicubic baseline trained on from the same checkpoint share the x-axis with a run from
scratch: every point is at its total number of upscaler training steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from taid_car.models.trained import read_run_checkpoint
from taid_car.runs import find_run_dirs, read_metrics_csv, read_overrides

COLUMN = "val/T91_holdout/psnr_y"


def start_step(run: Path) -> int:
    """Steps the run's upscaler was trained before this run (0 without ``upscaler.init_from``)."""
    for override in read_overrides(run):
        if override.startswith("upscaler.init_from="):
            ckpt, _ = read_run_checkpoint(override.split("=", 1)[1])  # weights_only=True, as everywhere
            return int(ckpt["global_step"])
    summary = run.parent / "run.json"
    if run.name == "baseline" and summary.is_file():  # a run's own baseline starts where it did
        return start_step(run.parent)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--runs", nargs="*", help="run folder names to draw (default: all)")
    args = parser.parse_args()
    runs = [r for r in find_run_dirs(args.root)] + [r / "baseline" for r in find_run_dirs(args.root)
                                                     if (r / "baseline" / "csv").is_dir()]
    scales = {}
    for run in runs:
        name = run.name if run.name != "baseline" else f"{run.parent.name}/baseline"
        if args.runs and name not in args.runs:
            continue
        series = read_metrics_csv(run)
        if COLUMN not in series:
            continue
        config = run / ".hydra" / "config.yaml"
        scale = json.loads(json.dumps(int(next(
            line.split(":")[1] for line in (config if config.is_file() else run.parent / ".hydra" / "config.yaml")
            .read_text().splitlines() if line.startswith("scale:")))))
        offset = start_step(run)
        steps, values = zip(*series[COLUMN])
        scales.setdefault(scale, []).append((name, [s + 1 + offset for s in steps], values))
    figure, axes = plt.subplots(1, len(scales), figsize=(6 * len(scales), 4.4), squeeze=False)
    for ax, scale in zip(axes[0], sorted(scales, reverse=True)):
        for name, steps, values in sorted(scales[scale]):
            ax.plot(steps, values, marker="o", markersize=2.5, label=name)
        ax.set_title(f"x{scale}: T91 hold-out (10 images)")
        ax.set_xlabel("total upscaler training steps (pretraining included)")
        ax.set_ylabel("PSNR-Y (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
