"""Colorization study (``experiment=color_study``): table, λ sweep plot and image figure.

    python experiments/taid_color/analyse.py --runs multirun/taid_color --data ../shared/data \\
        --out experiments/taid_color

Reads every run directory under ``--runs`` (``taid_color_g<λ>`` and ``gray``): the T91 hold-out
validation score at the checkpoint the run kept (selected on hold-out RGB PSNR, never on a test
set), and the test table (Set5, Set14) the run wrote with that checkpoint. Writes ``results.md``,
``lambda_sweep.png`` (gray fidelity against RGB PSNR gain over plain gray + the same decoder) and
``colours.png`` (original / learned gray / plain gray / both restorations).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from taid_car.data.datasets import BenchmarkDataset
from taid_car.models.trained import load_pair
from taid_car.runs import read_metrics_csv, tested_checkpoint
from taid_car.scoring.pipeline import rescale_and_score
from taid_car.scoring.report import read_json

HOLDOUT = "T91_holdout"


def lambda_of(run: Path) -> float | None:
    match = re.search(r"_g([0-9.]+)$", run.name)
    return float(match.group(1)) if match else None


def collect(runs: Path) -> list[dict]:
    rows = []
    for run in sorted(p for p in runs.iterdir() if (p / "results.json").is_file()):
        metrics = read_metrics_csv(run)
        ckpt = tested_checkpoint(run)
        step = int(re.search(r"step(\d+)", ckpt.name).group(1))
        # the CSV logger stamps a validation run after n optimiser steps with step n - 1
        holdout = {key: {int(s) + 1: v for s, v in metrics.get(f"val/{HOLDOUT}/{key}", [])}.get(step)
                   for key in ("psnr_rgb", "ssim_rgb", "lr_psnr_y")}
        tests = {r["set_name"]: r for r in read_json(run / "results.json")}
        rows.append({"run": run.name, "lambda": lambda_of(run), "step": step, "holdout": holdout, "tests": tests,
                     "method": next(iter(tests.values()))["method"], "ckpt": ckpt})
    return rows


def fmt(value, spec: str) -> str:
    return "–" if value is None else ("∞" if value == float("inf") else format(value, spec))


def write_table(rows: list[dict], out: Path) -> None:
    base = next(r for r in rows if r["lambda"] is None)
    lines = [("| method | λ | kept step | T91 hold-out PSNR-RGB / SSIM-RGB (gray fidelity) | Set5 PSNR-RGB / SSIM-RGB "
              "(gray fidelity) | Set14 PSNR-RGB / SSIM-RGB (gray fidelity) | Set5 / Set14 gain over plain gray (dB) |"),
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["lambda"] is not None, r["lambda"] or 0)):
        h = r["holdout"]
        cells = [f"{fmt(h['psnr_rgb'], '.2f')} / {fmt(h['ssim_rgb'], '.4f')} ({fmt(h['lr_psnr_y'], '.1f')})"]
        gains = []
        for set_name in ("Set5", "Set14"):
            t = r["tests"][set_name]
            cells.append(f"{t['psnr_rgb']:.2f} / {t['ssim_rgb']:.4f} ({fmt(t['lr_psnr_y'], '.1f')})")
            gains.append(f"{t['psnr_rgb'] - base['tests'][set_name]['psnr_rgb']:+.2f}")
        lam = "–" if r["lambda"] is None else f"{r['lambda']:g}"
        lines.append(f"| {r['method']} | {lam} | {r['step']} | " + " | ".join(cells) + f" | {' / '.join(gains)} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def plot_sweep(rows: list[dict], out: Path) -> None:
    base = next(r for r in rows if r["lambda"] is None)
    learned = sorted((r for r in rows if r["lambda"] is not None), key=lambda r: r["lambda"])
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for set_name, marker in (("T91 hold-out", "o"), ("Set5", "s"), ("Set14", "^")):
        xs, ys = [], []
        for r in learned:
            if set_name == "T91 hold-out":
                x, y, y0 = r["holdout"]["lr_psnr_y"], r["holdout"]["psnr_rgb"], base["holdout"]["psnr_rgb"]
            else:
                x, y, y0 = (r["tests"][set_name]["lr_psnr_y"], r["tests"][set_name]["psnr_rgb"],
                            base["tests"][set_name]["psnr_rgb"])
            xs.append(x)
            ys.append(y - y0)
        ax.plot(xs, ys, marker=marker, label=set_name)
        for x, y, r in zip(xs, ys, learned):
            ax.annotate(f"λ={r['lambda']:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_xlabel("gray fidelity: PSNR of learned gray vs plain gray (dB)")
    ax.set_ylabel("RGB PSNR gain over plain gray + same decoder (dB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "lambda_sweep.png", dpi=110)


def plot_colours(rows: list[dict], data: Path, out: Path, images=(("Set5", "butterfly"), ("Set14", "flowers"))) -> None:
    base = next(r for r in rows if r["lambda"] is None)
    chosen = max((r for r in rows if r["lambda"] is not None), key=lambda r: r["holdout"]["psnr_rgb"] or 0)
    learned, plain = load_pair(chosen["ckpt"]), load_pair(base["ckpt"])
    titles = ["original", f"learned gray (λ={chosen['lambda']:g})", "plain gray (BT.601)",
              "restored from learned gray", "restored from plain gray"]
    fig, axes = plt.subplots(len(images), 5, figsize=(15, 3.2 * len(images)), squeeze=False)
    for row, (set_name, name) in enumerate(images):
        dataset = BenchmarkDataset(data / set_name, 1, name=set_name, cache=False)
        hr = dataset[dataset.names.index(name)]["hr"].unsqueeze(0)
        with torch.no_grad():
            a = rescale_and_score(learned.downscaler, learned.upscaler, hr, 1, False)
            b = rescale_and_score(plain.downscaler, plain.upscaler, hr, 1, False)
        shown = [hr, a.lr, b.lr, a.sr, b.sr]
        notes = ["", f"{float(a.scores['lr_psnr_y']):.1f} dB vs plain gray", "",
                 f"{float(a.scores['psnr_rgb']):.2f} dB RGB", f"{float(b.scores['psnr_rgb']):.2f} dB RGB"]
        for col, (image, title, note) in enumerate(zip(shown, titles, notes)):
            axes[row][col].imshow(image[0].expand(3, -1, -1).permute(1, 2, 0).clamp(0, 1).numpy())
            axes[row][col].set_title(f"{title}\n{note}" if note else title, fontsize=8)
            axes[row][col].axis("off")
    fig.tight_layout()
    fig.savefig(out / "colours.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("multirun/taid_color"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    rows = collect(args.runs)
    write_table(rows, args.out)
    plot_sweep(rows, args.out)
    plot_colours(rows, args.data, args.out)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
