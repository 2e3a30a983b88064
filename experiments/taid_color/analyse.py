"""Colorization study (``experiment=color_study``): tables, λ-sweep plot and the 100 % image figure.

    bash experiments/taid_color/sweep.sh ../shared/data multirun/taid_color
    python experiments/taid_color/analyse.py --runs multirun/taid_color --data ../shared/data \\
        --out experiments/taid_color

Reads ``<runs>/s<steps>/`` (``gray`` and ``taid_color_g<λ>``), ``<runs>/s<steps>_through_clamp/``
(the old quantiser) and ``<runs>/s1000_small/`` (1 residual block per network). Per run: the T91
hold-out scores at the checkpoint the run kept (selected on hold-out RGB PSNR, never on a test
set), every hold-out validation (a fall of more than 3 dB between two is a divergence), and the
test table (Set5, Set14) the run wrote with that checkpoint.

λ is chosen per budget on the hold-out alone: the best hold-out RGB PSNR among the λ whose hold-out
gray fidelity (PSNR of the learned gray vs plain gray) is at least 30 dB.

Writes ``results.md``, ``lambda_sweep.png`` (gray fidelity against RGB PSNR, per budget) and
``colours.png``: crops at 100 % (one image pixel, one screen pixel; no resampling), so the fine
pattern the learned gray carries is visible, plus a ×4 nearest-neighbour zoom of it.
"""

from __future__ import annotations

import argparse
import math
import re
from itertools import pairwise
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image, ImageDraw

from taid_car.data.datasets import BenchmarkDataset
from taid_car.models.trained import load_pair
from taid_car.runs import read_metrics_csv, tested_checkpoint
from taid_car.scoring.pipeline import rescale_and_score
from taid_car.scoring.report import read_json

HOLDOUT = "T91_holdout"
MIN_FIDELITY = 30.0  # dB, the gray-fidelity floor of the λ choice
DIVERGED_DROP = 3.0  # dB, a fall of the hold-out between two validations that counts as divergence
SCORES = ("psnr_rgb", "ssim_rgb", "lr_psnr_y", "lr_ssim_y")


def lambda_of(run: Path) -> float | None:
    match = re.search(r"_g([0-9.]+)$", run.name)
    return float(match.group(1)) if match else None


def collect_budget(folder: Path) -> list[dict]:
    """One dict per finished run in ``folder``: λ, kept step, hold-out at it and per validation, tests."""
    rows = []
    for run in sorted(p for p in folder.iterdir() if (p / "results.json").is_file()):
        metrics = read_metrics_csv(run)
        ckpt = tested_checkpoint(run)
        step = int(re.search(r"step(\d+)", ckpt.name).group(1))
        # the CSV logger stamps a validation after n optimiser steps with step n - 1
        curves = {key: {int(s) + 1: v for s, v in metrics.get(f"val/{HOLDOUT}/{key}", [])} for key in SCORES}
        holdout = {key: curves[key].get(step) for key in SCORES}
        psnr = [curves["psnr_rgb"][s] for s in sorted(curves["psnr_rgb"])]
        drop = max([0.0, *(a - b for a, b in pairwise(psnr))])  # 0: it never fell
        tests = {r["set_name"]: r for r in read_json(run / "results.json")}
        rows.append({"run": run.name, "lambda": lambda_of(run), "step": step, "holdout": holdout,
                     "curve": curves, "largest_drop": drop, "tests": tests, "ckpt": ckpt,
                     "method": next(iter(tests.values()))["method"]})
    return sorted(rows, key=lambda r: (r["lambda"] is not None, r["lambda"] or 0))


def chosen_lambda(rows: list[dict]) -> dict | None:
    """The hold-out's pick: best hold-out RGB PSNR with hold-out gray fidelity >= MIN_FIDELITY."""
    eligible = [r for r in rows if r["lambda"] is not None and (r["holdout"]["lr_psnr_y"] or 0) >= MIN_FIDELITY]
    return max(eligible, key=lambda r: r["holdout"]["psnr_rgb"], default=None)


def fmt(value, spec: str) -> str:
    if value is None:
        return "–"
    return "∞" if value == float("inf") else format(value, spec)


def _cell(scores: dict) -> str:
    return (f"{fmt(scores['psnr_rgb'], '.2f')} / {fmt(scores['ssim_rgb'], '.4f')} "
            f"({fmt(scores['lr_psnr_y'], '.1f')} / {fmt(scores.get('lr_ssim_y'), '.3f')})")


def budget_table(rows: list[dict], steps: int) -> list[str]:
    base = next((r for r in rows if r["lambda"] is None), None)
    pick = chosen_lambda(rows)
    lines = [f"### {steps} steps",
             "",
             ("| method | λ | kept step | T91 hold-out | Set5 | Set14 | Set5 / Set14 gain over plain gray (dB) "
              "| largest hold-out fall (dB) |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        gains = ["–" if base is None else f"{r['tests'][s]['psnr_rgb'] - base['tests'][s]['psnr_rgb']:+.2f}"
                 for s in ("Set5", "Set14")]
        lam = "–" if r["lambda"] is None else f"{r['lambda']:g}" + (" ◀" if r is pick else "")
        cells = [_cell(r["holdout"]), *(_cell(r["tests"][s]) for s in ("Set5", "Set14"))]
        lines.append(f"| {r['method']} | {lam} | {r['step']} | " + " | ".join(cells)
                     + f" | {' / '.join(gains)} | {r['largest_drop']:.2f} |")
    return lines


VARIANTS = {"through_clamp": ("the old quantiser (through the clamp, no penalty) against the new", "old", "new"),
            "small": ("1 residual block per network (32k parameters) against 4 (88k)", "1 block", "4 blocks")}


def variant_table(main: list[dict], other: list[dict], steps: int, variant: str) -> list[str]:
    title, other_label, main_label = VARIANTS[variant]
    lines = [f"### {steps} steps: {title}",
             "",
             "| λ | run | kept step | T91 hold-out | Set5 | Set14 | largest fall (dB) | hold-out per validation |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    by_lambda = {r["lambda"]: r for r in main}
    for r_other in other:
        for label, r in ((other_label, r_other), (main_label, by_lambda.get(r_other["lambda"]))):
            if r is None:
                continue
            curve = " ".join(f"{v:.1f}" for _, v in sorted(r["curve"]["psnr_rgb"].items()))
            lines.append(f"| {fmt(r['lambda'], 'g')} | {label} | {r['step']} | {_cell(r['holdout'])} | "
                         f"{_cell(r['tests']['Set5'])} | {_cell(r['tests']['Set14'])} | {r['largest_drop']:.2f} | {curve} |")
    return lines


def write_results(budgets: dict[str, list[dict]], out: Path) -> None:
    lines = ["# Colorization study: results (written by analyse.py)", "",
             ("Cells: PSNR-RGB (dB) / SSIM-RGB (gray fidelity: PSNR (dB) / SSIM of the learned gray vs plain gray). "
              f"◀: the λ the T91 hold-out chose (best hold-out PSNR-RGB at hold-out gray fidelity ≥ {MIN_FIDELITY:g} dB)."),
             ""]
    for name in sorted((n for n in budgets if "_" not in n), key=lambda n: int(n[1:])):
        lines += budget_table(budgets[name], int(name[1:])) + [""]
        pick = chosen_lambda(budgets[name])
        if pick:
            t5, t14 = pick["tests"]["Set5"], pick["tests"]["Set14"]
            lines += [(f"Chosen at {name[1:]} steps: λ = {pick['lambda']:g}: Set5 / Set14 {t5['psnr_rgb']:.2f} / "
                       f"{t14['psnr_rgb']:.2f} dB RGB at gray fidelity {t5['lr_psnr_y']:.1f} / {t14['lr_psnr_y']:.1f} dB."), ""]
        for variant in VARIANTS:
            if budgets.get(f"{name}_{variant}"):
                lines += variant_table(budgets[name], budgets[f"{name}_{variant}"], int(name[1:]), variant) + [""]
    lines += ["Hold-out PSNR-RGB at every validation:", ""]
    for name, rows in sorted(budgets.items()):
        for r in rows:
            curve = " ".join(f"{v:.2f}" for _, v in sorted(r["curve"]["psnr_rgb"].items()))
            lines.append(f"- {name} {r['run']}: {curve}")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def plot_sweep(budgets: dict[str, list[dict]], out: Path) -> None:
    names = sorted((n for n in budgets if "_" not in n), key=lambda n: int(n[1:]))
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = budgets[name]
        base = next((r for r in rows if r["lambda"] is None), None)
        learned = [r for r in rows if r["lambda"] is not None]
        for set_name, marker in (("T91 hold-out", "o"), ("Set5", "s"), ("Set14", "^")):
            def scores(r, set_name=set_name):
                return r["holdout"] if set_name == "T91 hold-out" else r["tests"][set_name]
            xs = [scores(r)["lr_psnr_y"] for r in learned]
            ys = [scores(r)["psnr_rgb"] for r in learned]
            line, = ax.plot(xs, ys, marker=marker, label=set_name)
            if base is not None:
                ax.axhline(scores(base)["psnr_rgb"], color=line.get_color(), ls=":", lw=1)
            for x, y, r in zip(xs, ys, learned):
                ax.annotate(f"λ={r['lambda']:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axvline(MIN_FIDELITY, color="gray", lw=0.6, ls="--")
        ax.set_title(f"{name[1:]} steps (dotted: plain gray + the same decoder)", fontsize=9)
        ax.set_xlabel("gray fidelity: PSNR of learned gray vs plain gray (dB)")
        ax.set_ylabel("restored colour, PSNR-RGB (dB)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "lambda_sweep.png", dpi=110)


def _uint8(image: torch.Tensor) -> np.ndarray:
    """(1,C,H,W) in [0,1] -> (H,W,3) uint8 (gray replicated), rounded as the metrics round."""
    return (image[0].expand(3, -1, -1).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def plot_colours(rows: list[dict], data: Path, out: Path, crops=(("Set5", "butterfly", 40, 100, 160),
                                                                   ("Set14", "flowers", 60, 200, 160))) -> None:
    """Crops (set, image, top, left, side) at 100 %: original | learned gray | plain gray | colour
    restored from each; below, a ×4 nearest zoom of the learned and plain gray's central 40 px."""
    pick, base = chosen_lambda(rows), next(r for r in rows if r["lambda"] is None)
    learned, plain = load_pair(pick["ckpt"]), load_pair(base["ckpt"])
    titles = ["original", f"learned gray, lambda={pick['lambda']:g}", "plain gray (BT.601)",
              "from learned gray", "from plain gray"]
    gap, label_h = 6, 30
    blocks = []
    for set_name, name, top, left, side in crops:
        dataset = BenchmarkDataset(data / set_name, 1, name=set_name, cache=False)
        hr = dataset[dataset.names.index(name)]["hr"].unsqueeze(0)
        with torch.no_grad():
            a = rescale_and_score(learned.downscaler, learned.upscaler, hr, 1, False)
            b = rescale_and_score(plain.downscaler, plain.upscaler, hr, 1, False)
        notes = ["", f"{float(a.scores['lr_psnr_y']):.1f} dB / SSIM {float(a.scores['lr_ssim_y']):.3f}", "",
                 f"{float(a.scores['psnr_rgb']):.2f} dB RGB", f"{float(b.scores['psnr_rgb']):.2f} dB RGB"]
        tiles = [_uint8(t)[top:top + side, left:left + side] for t in (hr, a.lr, b.lr, a.sr, b.sr)]
        z, c = 4, side // 2 - 20
        zooms = [np.kron(t[c:c + 40, c:c + 40], np.ones((z, z, 1), dtype=np.uint8)) for t in tiles[1:3]]
        width = 5 * side + 4 * gap
        canvas = Image.new("RGB", (width, label_h + side + gap + label_h + 40 * z), "white")
        draw = ImageDraw.Draw(canvas)
        for i, (tile, title, note) in enumerate(zip(tiles, titles, notes)):
            x = i * (side + gap)
            canvas.paste(Image.fromarray(tile), (x, label_h))
            draw.text((x, 2), f"{set_name} {name}: {title}" if i == 0 else title, fill="black")
            draw.text((x, 15), note, fill="black")
        y = label_h + side + gap
        for i, (zoom, title) in enumerate(zip(zooms, ("learned gray, x4 zoom", "plain gray, x4 zoom"))):
            x = i * (40 * z + gap)
            draw.text((x, y + 2), title, fill="black")
            canvas.paste(Image.fromarray(zoom), (x, y + label_h))
        blocks.append(canvas)
    height = sum(b.height for b in blocks) + gap * (len(blocks) - 1)
    figure = Image.new("RGB", (max(b.width for b in blocks), height), "white")
    y = 0
    for block in blocks:
        figure.paste(block, (0, y))
        y += block.height + gap
    figure.save(out / "colours.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("multirun/taid_color"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--figure-steps", type=int, default=1000, help="budget whose chosen λ colours.png shows")
    args = parser.parse_args()
    budgets = {p.name: collect_budget(p) for p in sorted(args.runs.iterdir()) if p.is_dir() and p.name.startswith("s")}
    budgets = {k: v for k, v in budgets.items() if v}
    write_results(budgets, args.out)
    plot_sweep(budgets, args.out)
    plot_colours(budgets[f"s{args.figure_steps}"], args.data, args.out)
    print((args.out / "results.md").read_text())
    diverged = [(n, r["run"]) for n, rows in budgets.items() for r in rows if r["largest_drop"] > DIVERGED_DROP]
    print("diverged (hold-out fell > 3 dB between validations):", diverged or "none")
    assert all(math.isfinite(r["holdout"]["psnr_rgb"]) for rows in budgets.values() for r in rows)


if __name__ == "__main__":
    main()
