"""An independent IRN training loop at the study's budget: the anchor for the suite's IRN rows.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/cpu_study/irn_anchor.py --data ../shared/data \
        --scale 4 --steps 500 --out experiments/cpu_study/irn_anchor_x4.csv

Nothing of the suite's model, loss, training or data pipeline is used: the network is the
transcription of the authors' code in ``tests/irn_authors.py`` (8 blocks per stage, growth 8, as
``preset=tiny``) with their initialisation, and one step is the authors' ``IRN_model.optimize_parameters`` written out:
their per-image-sum losses (L2 of the LR to bicubic x scale^2: 4 at x2, 16 at x4, Charbonnier-L1 of the SR x1, sum z^2
x1, each averaged over the batch), their straight-through 8-bit quantisation of the LR, z ~ N(0, I),
and their gradient clipping 10 on that scale. Data and schedule are the study's: 16 random 96x96
HR patches (x4; 48x48 at x2) of the 81 T91 training images, with the authors' flips and 90-degree
rotations, Adam 5e-4 with the cosine schedule of 2000 steps. Only the image reader, the MATLAB
bicubic and the PSNR-Y of the suite are used (each tested against MATLAB/published values).

Every 250 steps it prints and writes the T91 hold-out PSNR-Y (z ~ N(0, I) seeded 0, LR on the
8-bit grid, HR cropped to multiples of 8, border = scale), to set beside the suite's
``val/T91_holdout/psnr_y`` of ``experiment=cpu_study model=irn upscaler=irn_inverse``.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the authors' network, as the tests transcribe it
import irn_authors
from taid_car.data.datamodule import split_holdout
from taid_car.data.io import list_images, read_image
from taid_car.ops.imresize import bicubic_downscale
from taid_car.scoring.metrics import psnr_y


def quantize(x: torch.Tensor) -> torch.Tensor:
    """The authors' Quantization: round(clamp(x, 0, 1) * 255) / 255 forward, identity backward."""
    return x + (torch.round(x.clamp(0, 1) * 255) / 255 - x).detach()


def authors_init(net: torch.nn.Module) -> torch.nn.Module:
    """The authors' DenseBlock init: conv1-4 Xavier-normal x0.1, conv5 zero, biases zero."""
    for block in (m for m in net.modules() if isinstance(m, irn_authors.DenseBlock)):
        for conv in (block.conv1, block.conv2, block.conv3, block.conv4, block.conv5):
            torch.nn.init.xavier_normal_(conv.weight)
            conv.weight.data *= 0.0 if conv is block.conv5 else 0.1
            torch.nn.init.zeros_(conv.bias)
    return net


def patches(images: list[torch.Tensor], count: int, size: int, rng: random.Random) -> torch.Tensor:
    """(count,3,size,size): random crops with the authors' augmentation (h/v flips, 90-degree rotation)."""
    out = []
    while len(out) < count:
        image = rng.choice(images)
        h, w = image.shape[-2:]
        if min(h, w) < size:
            continue
        top, left = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
        crop = image[:, top:top + size, left:left + size]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        if rng.random() < 0.5:
            crop = crop.flip(-2)
        if rng.random() < 0.5:
            crop = crop.transpose(-1, -2)
        out.append(crop)
    return torch.stack(out)


def authors_step(net, hr: torch.Tensor, scale: int, gaussian_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """The authors' three losses on one batch (their per-image sums, mean over the batch); the
    inverse gets z ~ N(0, gaussian_scale^2 I) (their train option ``gaussian_scale``)."""
    out = net(hr)
    lr, z = out[:, :3], out[:, 3:]
    fit = scale**2 * torch.mean(torch.sum((lr - bicubic_downscale(hr, scale)) ** 2, (1, 2, 3)))
    ce = torch.sum(z.reshape(hr.shape[0], -1) ** 2) / hr.shape[0]
    sr = net(torch.cat([quantize(lr), gaussian_scale * torch.randn_like(z)], 1), rev=True)[:, :3]
    rec = torch.mean(torch.sum(torch.sqrt((sr - hr) ** 2 + 1e-6), (1, 2, 3)))
    return {"fit": fit, "ce": ce, "rec": rec}


@torch.no_grad()
def holdout_psnr(net, images: list[torch.Tensor], scale: int, gaussian_scale: float = 1.0) -> float:
    """Mean PSNR-Y of the SR from the 8-bit LR and z ~ N(0, gaussian_scale^2 I) (seeded 0) over the hold-out."""
    scores = []
    for image in images:
        h, w = image.shape[-2:]
        hr = image[None, :, : h - h % 8, : w - w % 8]
        out = net(hr)
        z = torch.randn(out[:, 3:].shape, generator=torch.Generator().manual_seed(0))
        sr = net(torch.cat([quantize(out[:, :3]), gaussian_scale * z], 1), rev=True)[:, :3]
        scores.append(psnr_y(sr, hr, scale).item())
    return sum(scores) / len(scores)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--scale", type=int, default=4, choices=(2, 4))
    parser.add_argument("--steps", type=int, default=2000, help="steps to run (the schedule is always 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gaussian-scale", type=float, default=1.0,
                        help="std of the z the inverse gets, training and hold-out (the authors' 1; 0: z = 0)")
    parser.add_argument("--out", type=Path, default=None, help="CSV of (step, hold-out PSNR-Y, losses)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    train_files, held_files = split_holdout(list_images(args.data / "T91"), 10)
    train = [read_image(p).tensor for p in train_files]
    held = [read_image(p).tensor for p in held_files]
    stages = int(math.log2(args.scale))
    net = authors_init(irn_authors.InvRescaleNet(3, 3, irn_authors.subnet(8), [8] * stages, stages))
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2000, eta_min=1e-6)
    rows = [("step", "holdout_psnr_y", "fit", "ce", "rec")]
    for step in range(1, args.steps + 1):
        losses = authors_step(net, patches(train, 16, 24 * args.scale, rng), args.scale, args.gaussian_scale)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10)
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == args.steps:
            net.eval()
            score = holdout_psnr(net, held, args.scale, args.gaussian_scale)
            net.train()
            rows.append((step, f"{score:.2f}", *(f"{v.item():.4g}" for v in losses.values())))
            print(" ".join(f"{k}={v}" for k, v in zip(rows[0], rows[-1])), flush=True)
    if args.out:
        with args.out.open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)


if __name__ == "__main__":
    main()
