"""An independent SAIN training loop at the study's budget: anchor 1 for the suite's SAIN rows.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/jpeg_robustness/sain_anchor.py --data ../shared/data \
        --scale 2 --out experiments/jpeg_robustness/sain_anchor_x2.csv

Nothing of the suite's model, loss or training is used. The network, its initialisation, the
Gaussian-mixture latent, the five losses, the divide-by-4, the straight-through quantiser and the
gradient clipping 10 are the authors', as ``tests/sain_authors.py`` transcribes them (``define``,
``authors_training_step``: their per-image-sum losses, lambda_fit_forw = scale^2), at ``preset=tiny``'s
sizes (their depth, 5 / 3 blocks at x2 and 10 / 6 at x4, growth 7 / 5).

The two JPEGs at quality 75 (4:2:0):

* the real JPEG of the targets (l_forw_fit2, l_rel) and of the hold-out is theirs, ``RealComp``
  (Pillow; the suite's jpeg channel bit for bit, tests/test_sain_authors.py);
* the differentiable JPEG the LR goes through in training is the suite's
  (``taid_car.channel.diff_jpeg``: forward = Pillow's decode, the cubic rounding's gradient), not
  theirs: their DiffJPEG needs LR sides that are multiples of 16 and the study's LR patches are
  24 px; and it is the codec ``model=sain channel=jpeg`` trains through (``train_rule=diff``), so
  the anchor checks the model, losses and step, not two codecs.

Data and schedule are the study's (``experiment=cpu_study``): 16 random HR patches of 24·scale px
of T91 minus its 10-image hold-out with the authors' flips and 90-degree rotations
(``irn_anchor.patches``), their reference LR the MATLAB bicubic of the patch rounded to 8 bit
(their LR files), Adam 5e-4 (betas 0.9 / 0.999, eps 1e-8 and no weight decay on their scale: the
suite's adam.yaml, with eps per HR value as conf/model/sain.yaml) with the cosine schedule of 2000
steps to 1e-6, stepped every step. Only the image reader, the hold-out split, the MATLAB bicubic,
the differentiable JPEG and the PSNR-Y of the suite are used (each tested on its own).

Every 250 steps (and at the last) it writes the T91 hold-out PSNR-Y at JPEG quality 75: LR = the
clean LR rounded to 8 bit, through the real JPEG, z = ``gaussian_scale`` x a mixture draw (seeded 0
per image), HR cropped to multiples of 8, border = scale; to set beside the suite's
``val/T91_holdout/psnr_y`` of ``experiment=cpu_study model=sain channel=jpeg channel.quality=75``.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the authors' network and step, as the tests transcribe them
sys.path.insert(0, str(ROOT / "experiments" / "cpu_study"))  # the study's patches (irn_anchor.py)
from irn_anchor import patches

import sain_authors as sa
from taid_car.channel.diff_jpeg import diff_jpeg
from taid_car.data.datamodule import split_holdout
from taid_car.data.io import list_images, read_image
from taid_car.models.sain import SAIN_PRESETS
from taid_car.ops.imresize import bicubic_downscale
from taid_car.scoring.metrics import psnr_y

#: the study's schedule: steps of the cosine, learning rate, its floor, batch, LR patch side
SCHEDULE_STEPS, LR, ETA_MIN, BATCH, LR_PATCH = 2000, 5e-4, 1e-6, 16, 24
LOSSES = ("l_back_rec", "l_forw_fit1", "l_forw_fit2", "l_reg", "l_rel")


def bicubic_8bit(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Their reference LR: MATLAB bicubic, rounded to 8 bit as their LR files are."""
    return torch.round(bicubic_downscale(hr, scale).clamp(0, 1) * 255) / 255


@torch.no_grad()
def holdout_psnr(net, images: list[torch.Tensor], scale: int, realcomp, gaussian_scale: float = 1.0) -> float:
    """Mean PSNR-Y of the SR from the real-JPEG-coded 8-bit clean LR and z from the mixture
    (seeded 0 per image, the global RNG left as it was) over the hold-out."""
    quantization = sa.Quantization()
    scores = []
    for image in images:
        h, w = image.shape[-2:]
        hr = image[None, :, : h - h % 8, : w - w % 8]
        out, lr = net(hr)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            z = net.gmm.sample(tuple(out[:, 3:].shape))
        sr, _ = net(torch.cat([realcomp(quantization(lr)), gaussian_scale * z], 1), rev=True)
        scores.append(psnr_y(sr[:, :3], hr, scale).item())
    return sum(scores) / len(scores)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding T91/")
    parser.add_argument("--scale", type=int, default=2, choices=(2, 4))
    parser.add_argument("--steps", type=int, default=SCHEDULE_STEPS,
                        help=f"steps to run (the schedule is always {SCHEDULE_STEPS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality, training and hold-out (theirs: 75)")
    parser.add_argument("--gaussian-scale", type=float, default=1.0,
                        help="z = this x a mixture draw, training and hold-out (the authors' 1; 0: z = 0)")
    parser.add_argument("--out", type=Path, default=None, help="CSV of (step, hold-out PSNR-Y, the five losses)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    train_files, held_files = split_holdout(list_images(args.data / "T91"), 10)
    train = [read_image(p).tensor for p in train_files]
    held = [read_image(p).tensor for p in held_files]
    sizes = SAIN_PRESETS["tiny"][args.scale]
    net = sa.define(args.scale, sizes["e_blocks"], sizes["v_blocks"], gc=sizes["gc"])
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=LR, betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=SCHEDULE_STEPS, eta_min=ETA_MIN)
    realcomp = sa.RealComp(quality=args.quality)

    def diffcomp(lr: torch.Tensor) -> torch.Tensor:
        return diff_jpeg(lr, args.quality, "4:2:0")

    rows = [("step", "holdout_psnr_y", *LOSSES)]
    for step in range(1, args.steps + 1):
        hr = patches(train, BATCH, LR_PATCH * args.scale, rng)
        terms = sa.authors_training_step(net, optimizer, schedule, hr, bicubic_8bit(hr, args.scale), diffcomp,
                                         realcomp, float(args.scale**2), gaussian_scale=args.gaussian_scale)
        if step % 250 == 0 or step == args.steps:
            score = holdout_psnr(net, held, args.scale, realcomp, args.gaussian_scale)
            rows.append((step, f"{score:.2f}", *(f"{terms[k].item():.6g}" for k in LOSSES)))
            print(" ".join(f"{k}={v}" for k, v in zip(rows[0], rows[-1])), flush=True)
            if args.out:  # the curve so far, rewritten at each point: a stopped run keeps it
                with args.out.open("w", newline="") as handle:
                    csv.writer(handle).writerows(rows)


if __name__ == "__main__":
    main()
