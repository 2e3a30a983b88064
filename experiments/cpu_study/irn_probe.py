"""What limits IRN at the study's budget? Its SR with the z the inverse is given, on trained checkpoints.

    .venv/bin/python experiments/cpu_study/irn_probe.py multirun/cpu_study_irn --data ../shared/data

IRN's inverse maps the LR and a z ~ N(0, I) to the SR, so its error has two parts: what the LR
(8-bit, as tested) cannot hold, and what the drawn z puts in. For every finished ``model=irn`` run
below the given directories (the checkpoint each run was tested with), on the T91 hold-out (the
selection set), Set5 and Set14, PSNR-Y of the SR with:

* ``z ~ N(0, s^2 I)`` for the authors' ``gaussian_scale`` s in 1 (as trained and tested), 0.5, 0;
* ``z = forward z``: the network's own z of the HR (an oracle; only the LR's rounding is lost),
  the upper bound of any z a sampler could give;

and the standard deviation of the forward z (the inverse is trained on z of std s = 1; the
authors' z loss pushes the forward's towards 0). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from taid_car.data.datamodule import split_holdout
from taid_car.data.datasets import BenchmarkDataset
from taid_car.data.io import list_images
from taid_car.models.downscaler import crop_multiple
from taid_car.models.trained import load_pair
from taid_car.runs import find_run_dirs, tested_checkpoint
from taid_car.scoring.benchmark import evaluate_set
from taid_car.scoring.pipeline import downscale, score_sr

GAUSSIAN_SCALES = (1.0, 0.5, 0.0)


def probe_sets(data: Path, scale: int, multiple: int, holdout: int = 10) -> dict[str, BenchmarkDataset]:
    """T91 hold-out (the study's split), Set5 and Set14, HR cropped to ``multiple`` (the study
    crops every method to multiples of 8: ``data.modcrop``)."""
    _, held = split_holdout(list_images(data / "T91"), holdout)
    return {"T91_holdout": BenchmarkDataset.from_paths(held, scale, multiple, "T91_holdout", cache=False),
            "Set5": BenchmarkDataset(data / "Set5", scale, multiple, cache=False),
            "Set14": BenchmarkDataset(data / "Set14", scale, multiple, cache=False)}


@torch.no_grad()
def oracle_z(pair, dataset) -> tuple[float, float]:
    """(mean PSNR-Y of the SR from the 8-bit LR and the forward's own z, mean std of that z)."""
    net, psnrs, stds = pair.downscaler.net, [], []
    for index in range(len(dataset)):
        item = dataset[index]
        hr = item["hr"].unsqueeze(0)
        z = net(hr)[:, 3:]
        lr = downscale(pair.downscaler, hr).lr  # png: the 8-bit LR
        sr = net(torch.cat([lr, z], 1), rev=True)[:, :3]
        psnrs.append(score_sr(sr, hr, pair.scale, torch.tensor([bool(item["is_gray"])]))["psnr_y"].item())
        stds.append(z.std().item())
    return sum(psnrs) / len(psnrs), sum(stds) / len(stds)


def probe(run_dir: Path, ckpt: Path, pair, data: Path) -> list[str]:
    """Markdown rows for one run's tested checkpoint ``ckpt`` (loaded as ``pair``): per set,
    PSNR-Y at each gaussian_scale, with the oracle z, z's std."""
    rows = []
    for set_name, dataset in probe_sets(data, pair.scale, math.lcm(crop_multiple(pair.downscaler), 8)).items():
        cells = []
        for s in GAUSSIAN_SCALES:
            pair.upscaler.gaussian_scale = s
            result = evaluate_set(pair.downscaler, pair.upscaler, dataset, pair.scale, set_name, pair.method,
                                  progress=False)
            cells.append(f"{result.psnr_y:.2f}")
        oracle, z_std = oracle_z(pair, dataset)
        rows.append(f"| {run_dir.name} | {ckpt.name} | x{pair.scale} | {set_name} | {' | '.join(cells)} | "
                    f"{oracle:.2f} | {z_std:.3f} | {result.lr_psnr_y:.2f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, or folders holding them")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder with T91, Set5, Set14")
    args = parser.parse_args(argv)
    print("| run | checkpoint | scale | set | z ~ N(0, I) | z ~ N(0, 0.25 I) | z = 0 | z = forward z (oracle) "
          "| std of forward z | LR vs bicubic LR |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for folder in args.runs:
        for run_dir in find_run_dirs(folder):
            ckpt = tested_checkpoint(run_dir)
            pair = load_pair(ckpt)  # once per run
            if pair.config["model"]["name"] != "irn":
                continue
            for row in probe(run_dir, ckpt, pair, args.data):
                print(row, flush=True)


if __name__ == "__main__":
    main()
