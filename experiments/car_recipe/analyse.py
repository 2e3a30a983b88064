"""The car_recipe ablation table: validation, test and kernel statistics of every run below the dirs.

    .venv/bin/python experiments/car_recipe/analyse.py multirun/car_recipe --step 499 --data ../shared/data

One Markdown row per run (its Hydra overrides, less the preset's): PSNR-Y on the T91 hold-out
(the selection set) and Set5 at validation step ``--step``, LR fidelity (LR vs bicubic LR, dB) on
the hold-out, the test table's Set5/Set14 PSNR-Y when the run was tested, and for CAR runs the
kernel statistics of the checkpoint it was tested with (the best on the hold-out) on 8 fixed T91
crops: effective support 1/Σk² in taps and mean offset length in LR pixels (cpu_study/diagnose.py).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpu_study"))
from ablations import value_at
from diagnose import kernel_statistics, rescaler_from, t91_batch

from taid_car.runs import find_run_dirs, read_metrics_csv, read_overrides, tested_checkpoint
from taid_car.scoring.report import read_json

SKIP = ("experiment=", "data_root=", "scheduler.T_max=", "test=", "hydra.")
SHORT = {
    "model.downscaler.kernel_prior=": "prior=", "model.loss_weights.offset_magnitude=": "w_mag=",
    "model.loss_weights.offset_tv=": "w_tv=", "model.downscaler_lr_scale=": "down_lr×",
    "upscaler.init_from=": "init_from=", "model.quantize=": "quantize=", "trainer.max_steps=": "steps=",
}


def short(override: str) -> str:
    for long, abbrev in SHORT.items():
        if override.startswith(long):
            value = override[len(long):]
            return abbrev + (Path(value).parts[-3] if long.startswith("upscaler.init_from") else value)
    return override


def fmt(value: float) -> str:
    return "–" if math.isnan(value) else "∞" if math.isinf(value) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--step", type=float, default=None, help="validation step (0-based); default: the last")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    torch.manual_seed(0)
    batches: dict[int, torch.Tensor] = {}
    print("| run | changes | T91 hold-out PSNR-Y | Set5 (val) | hold-out LR vs bicubic | "
          "Set5 test | Set14 test | taps (eff.) | offset (LR px) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for run in (r for d in args.dirs for r in find_run_dirs(d)):
        series = read_metrics_csv(run)
        column = "val/T91_holdout/psnr_y"
        if column not in series:
            continue
        step = args.step if args.step is not None else series[column][-1][0]
        hold, set5 = (value_at(series, f"val/{s}/psnr_y", step) for s in ("T91_holdout", "Set5"))
        fidelity = value_at(series, "val/T91_holdout/lr_psnr_y", step)
        tests = {}
        if (run / "results.json").is_file():
            tests = {r["set_name"]: r["psnr_y"] for r in read_json(run / "results.json")}
        taps = offset = math.nan
        try:
            rescaler, config = rescaler_from(tested_checkpoint(run))
        except FileNotFoundError:
            rescaler = None
        if rescaler is not None and hasattr(rescaler.downscaler, "kernel_net"):
            scale = int(config["scale"])
            hr = batches.setdefault(scale, t91_batch(args.data, size=math.lcm(96, scale, 8)))
            with torch.no_grad():
                _, _, _, taps, offset = kernel_statistics(rescaler, hr)
        changes = " ".join(short(o) for o in read_overrides(run) if not o.startswith(SKIP))
        cells = [fmt(hold), fmt(set5), fmt(fidelity), fmt(tests.get("Set5", math.nan)),
                 fmt(tests.get("Set14", math.nan)), fmt(taps), "–" if math.isnan(offset) else f"{offset:.3f}"]
        print(f"| {run.name} (step {int(step) + 1}) | {changes or '–'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
