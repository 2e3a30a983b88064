"""The study's results table, with each learned downscaler's gain over bicubic + the same upscaler.

    .venv/bin/python experiments/cpu_study/table.py multirun/cpu_study/comparison.csv

Reads the ``comparison.csv`` that ``python -m taid_car.compare`` writes and prints one Markdown
row per set x scale x method: PSNR-Y / SSIM-Y, the gain over "bicubic & <same upscaler>" at the
same scale (the papers' equal-upscaler baseline), the gain over Bicubic & Bicubic, LR fidelity,
parameters and training time.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from taid_car.compare import format_count, format_seconds
from taid_car.runs import natural_key


def upscaler_of(method: str) -> str:
    return method.split(" & ", 1)[1]


def rows_with_baseline_gain(rows: list[dict]) -> list[dict]:
    """Add ``gain_vs_bicubic_up``: PSNR-Y minus that of bicubic + same upscaler, same set and scale."""
    baseline = {
        (r["set_name"], r["scale"], upscaler_of(r["method"])): float(r["psnr_y"])
        for r in rows
        if r["method"].startswith("bicubic & ")
    }
    for r in rows:
        base = baseline.get((r["set_name"], r["scale"], upscaler_of(r["method"])))
        r["gain_vs_bicubic_up"] = float(r["psnr_y"]) - base if base is not None else math.nan
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csv", type=Path)
    args = parser.parse_args()
    with args.csv.open(newline="") as handle:
        rows = rows_with_baseline_gain(list(csv.DictReader(handle)))
    rows.sort(key=lambda r: (natural_key(r["set_name"]), -int(r["scale"]), -float(r["psnr_y"])))
    print("| Set | Scale | Method | PSNR-Y (dB) | SSIM-Y | vs bicubic + same upscaler (dB) | "
          "vs Bicubic & Bicubic (dB) | LR vs bicubic LR (dB) | Params (down + up) | Train time | Steps |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lr = float(r["lr_psnr_y"])
        print(
            f"| {r['set_name']} | x{r['scale']} | {r['method']} | {float(r['psnr_y']):.2f} | "
            f"{float(r['ssim_y']):.4f} | {r['gain_vs_bicubic_up']:+.2f} | {float(r['gain_psnr_y']):+.2f} | "
            f"{'∞' if math.isinf(lr) else f'{lr:.2f}'} | {format_count(int(r['params_downscaler']))} + "
            f"{format_count(int(r['params_upscaler']))} | {format_seconds(float(r['train_seconds']))} | "
            f"{r['steps']} |"
        )
    print("\nBicubic & Bicubic reference on the same crops:")
    seen = set()
    for r in rows:
        key = (r["set_name"], r["scale"])
        if key not in seen:
            seen.add(key)
            print(f"- {r['set_name']} x{r['scale']}: {float(r['bicubic_psnr_y']):.2f} dB / "
                  f"{float(r['bicubic_ssim_y']):.4f}")


if __name__ == "__main__":
    main()
