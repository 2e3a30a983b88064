"""TAD's extreme scaling at CPU scale: ×2 pairs applied n times (×2 … ×128), scored per factor.

    python experiments/taid_extreme/extreme.py --data ../shared/data --runs multirun/taid_extreme \\
        --out experiments/taid_extreme

Methods, all scored on the same HR crops per factor s (sides cropped to multiples of s; images
smaller than :func:`~taid_car.data.datasets.benchmark_min_size` left out and counted):

* Bicubic & Bicubic (MATLAB imresize at the full factor);
* bicubic + the ×2 upscaler of ``bicubic_x2`` (EDSR-tiny trained on bicubic ×2 LR) applied n
  times to the standard ×s bicubic LR;
* TAID ×2 (``taid_x2_g<λ>``) applied n times (every intermediate LR on the 8-bit grid);
* TAID trained end-to-end at ×4 with one shared ×2 pair (``taid_x4_recursive_g0.01``), applied
  at ×4, ×16, ×64 (whole ×4 units).

Sets: Set14 and the 10 images of T91 held out of training (the selection set). Writes
``results.csv`` (per method, set, factor), ``results.md``, ``psnr_per_factor.png`` and
``thumbnails.png`` (LR thumbnails and reconstructions at ×8/×16/×32 of one Set14 image).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from taid_car.data.datamodule import split_holdout
from taid_car.data.datasets import BenchmarkDataset, NoImageLargeEnough
from taid_car.data.io import list_images
from taid_car.models.bicubic import BicubicDownscaler, BicubicUpscaler
from taid_car.models.recursive import recursion_levels
from taid_car.models.trained import TrainedPair, load_pair
from taid_car.runs import tested_checkpoint
from taid_car.scoring.benchmark import evaluate_set
from taid_car.scoring.pipeline import rescale_and_score

FACTORS = (2, 4, 8, 16, 32, 64, 128)
FIELDS = ("method", "set_name", "scale", "images", "psnr_y", "ssim_y", "lr_psnr_y")


def methods(runs: Path) -> dict[str, TrainedPair]:
    """Label -> the trained pair at its own scale (``at_scale`` takes it further)."""
    bicubic = TrainedPair("Bicubic & Bicubic", 2, BicubicDownscaler(2), BicubicUpscaler(2), {})
    found = {"Bicubic & Bicubic": bicubic}
    named = {
        "bicubic + EDSR-tiny x2, n times": "bicubic_x2",
        "TAID x2 (λ=0.01), n times": "taid_x2_g0.01",
        "TAID x2 (λ=0.1), n times": "taid_x2_g0.1",
        "TAID x4 end-to-end (λ=0.01), n times": "taid_x4_recursive_g0.01",
    }
    for label, run in named.items():
        try:
            found[label] = load_pair(tested_checkpoint(runs / run))  # the one its T91 hold-out kept
        except FileNotFoundError as err:
            print(f"{err}: {label} left out")
    return found


def test_sets(data: Path, scale: int) -> dict[str, BenchmarkDataset]:
    sets = {}
    _, held = split_holdout(list_images(data / "T91"), 10)
    for name, make in (
        ("Set14", lambda: BenchmarkDataset(data / "Set14", scale, name="Set14", cache=False, skip_small=True)),
        ("T91_holdout", lambda: BenchmarkDataset.from_paths(held, scale, name="T91_holdout", cache=False,
                                                            skip_small=True)),
    ):
        try:
            sets[name] = make()
        except NoImageLargeEnough as err:
            print(err)
    return sets


def score_all(pairs: dict[str, TrainedPair], data: Path, done: list[dict]) -> list[dict]:
    """Rows of every (method, factor) not in ``done`` (rows of an earlier results.csv), plus those."""
    rows = [r for r in done if r["method"] in pairs]
    have = {(r["method"], r["scale"]) for r in rows}
    jobs = [(label, pair, s) for s in FACTORS for label, pair in pairs.items()
            if _reaches(pair, s) and (label, s) not in have]
    for label, pair, s in tqdm(jobs, desc="method x factor"):
        scaled = pair.at_scale(s)
        for set_name, dataset in test_sets(data, s).items():
            r = evaluate_set(scaled.downscaler, scaled.upscaler, dataset, s, set_name, label, progress=False)
            rows.append({"method": label, "set_name": set_name, "scale": s, "images": r.images,
                         "psnr_y": r.psnr_y, "ssim_y": r.ssim_y, "lr_psnr_y": r.lr_psnr_y})
    return rows


def _reaches(pair: TrainedPair, scale: int) -> bool:
    """Whether ``scale`` is the pair's own scale or a power of it (:func:`recursion_levels`)."""
    if scale == pair.scale:
        return True
    try:
        recursion_levels(scale, pair.scale)
    except ValueError:
        return False
    return True


def write_tables(rows: list[dict], out: Path) -> None:
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    labels = list(dict.fromkeys(r["method"] for r in rows))
    lines = []
    for set_name in dict.fromkeys(r["set_name"] for r in rows):
        lines += [f"**{set_name}**: PSNR-Y (dB) / SSIM-Y (LR vs bicubic LR, dB); images scored per factor", "",
                  "| factor | images | " + " | ".join(labels) + " |", "|---:|---:|" + "---:|" * len(labels)]
        for s in FACTORS:
            cell = {r["method"]: r for r in rows if r["set_name"] == set_name and r["scale"] == s}
            if not cell:
                continue
            images = next(iter(cell.values()))["images"]
            parts = []
            for label in labels:
                r = cell.get(label)
                if r is None:
                    parts.append("–")
                elif label == "Bicubic & Bicubic" or label.startswith("bicubic"):
                    parts.append(f"{r['psnr_y']:.2f} / {r['ssim_y']:.4f}")
                else:
                    parts.append(f"{r['psnr_y']:.2f} / {r['ssim_y']:.4f} ({r['lr_psnr_y']:.1f})")
            lines.append(f"| x{s} | {images} | " + " | ".join(parts) + " |")
        lines.append("")
    (out / "results.md").write_text("\n".join(lines))


def plot_factors(rows: list[dict], out: Path) -> None:
    sets = list(dict.fromkeys(r["set_name"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.2), squeeze=False)
    bicubic = {(r["set_name"], r["scale"]): r["psnr_y"] for r in rows if r["method"] == "Bicubic & Bicubic"}
    for ax, set_name in zip(axes[0], sets):
        for label in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["scale"], r["psnr_y"] - bicubic[(set_name, r["scale"])]) for r in rows
                         if r["method"] == label and r["set_name"] == set_name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_title(f"{set_name}: PSNR-Y gain over Bicubic & Bicubic")
        ax.set_xlabel("factor")
        ax.set_ylabel("dB")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "psnr_per_factor.png", dpi=110)


def plot_thumbnails(pairs: dict[str, TrainedPair], data: Path, out: Path, image: str = "monarch") -> None:
    """Rows: methods; columns: LR thumbnails (nearest, enlarged) and reconstructions at x8/16/32."""
    shown = [k for k in pairs if k in ("bicubic + EDSR-tiny x2, n times", "TAID x2 (λ=0.01), n times")]
    factors = (8, 16, 32)
    fig, axes = plt.subplots(len(shown), 2 * len(factors) + 1, figsize=(2.3 * (2 * len(factors) + 1),
                                                                         2.0 * len(shown)), squeeze=False)
    for row, label in enumerate(shown):
        for col, s in enumerate(factors):
            dataset = BenchmarkDataset(data / "Set14", s, name="Set14", cache=False)
            item = dataset[dataset.names.index(image)]
            hr = item["hr"].unsqueeze(0)
            scaled = pairs[label].at_scale(s)
            with torch.no_grad():
                res = rescale_and_score(scaled.downscaler, scaled.upscaler, hr, s, False)
            psnr = float(res.scores["psnr_y"])
            axes[row][2 * col].imshow(res.lr[0].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            axes[row][2 * col].set_title(f"LR x{s} ({res.lr.shape[-1]}x{res.lr.shape[-2]})", fontsize=8)
            axes[row][2 * col + 1].imshow(res.sr[0].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[row][2 * col + 1].set_title(f"SR x{s}: {psnr:.2f} dB", fontsize=8)
        axes[row][0].set_ylabel(label.replace(", n times", ""), fontsize=8)
        axes[row][-1].imshow(hr[0].permute(1, 2, 0).numpy())
        axes[row][-1].set_title("HR", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out / "thumbnails.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--runs", type=Path, default=Path("multirun/taid_extreme"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--fresh", action="store_true", help="score every method again (else results.csv rows are kept)")
    args = parser.parse_args()
    pairs = methods(args.runs)
    done = []
    if (args.out / "results.csv").is_file() and not args.fresh:  # methods scored before are kept
        with (args.out / "results.csv").open(newline="") as handle:
            done = [{**r, "scale": int(r["scale"]), "images": int(r["images"]),
                     **{k: float(r[k]) for k in ("psnr_y", "ssim_y", "lr_psnr_y")}} for r in csv.DictReader(handle)]
    rows = score_all(pairs, args.data, done)
    rows.sort(key=lambda r: (list(pairs).index(r["method"]), r["scale"], r["set_name"]))
    write_tables(rows, args.out)
    plot_factors(rows, args.out)
    plot_thumbnails(pairs, args.data, args.out)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
