"""An independent colour -> gray -> colour model at the colour study's budget: the study's anchor.

It shares no code with taid_car (torch, numpy and Pillow only), so it checks the suite's design,
training and scoring from outside. Same budget and protocol as ``experiment=color_study``: 1000
steps (``--steps``) of 16 random 32×32 T91 patches with flips/rotations, the 10 held-out T91 images
left out, Adam 5e-4 with cosine decay, loss L1(RGB) + λ·L1(8-bit gray, BT.601 plain gray), the gray
rounded to 8 bit; scored on Set5/Set14 as RGB PSNR of the 8-bit output with a 1-pixel border, and
gray fidelity (PSNR of the 8-bit gray vs the 8-bit plain gray). Final weights, no selection.

Networks (about 23k parameters each): 4 plain 3×3 convolutions × 32 with ReLU on 2×2
pixel-unshuffled input, pixel-shuffled back, residual over plain gray (encoder) or the gray
replicated (decoder). ``--quantizer clamp`` keeps the clamp's gradient and adds the out-of-range
penalty; ``through`` is straight-through for clamp and rounding alike.

    python experiments/taid_color/reference.py --data ../shared/data --lam 0.1 --steps 1000
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def load(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def by_number(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def quantize(x: torch.Tensor, rule: str) -> torch.Tensor:
    inner = x.clamp(0, 1) if rule == "clamp" else x
    return inner + (torch.round(x.clamp(0, 1) * 255) / 255 - inner).detach()


def stack(c_in: int, c_out: int) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
              nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, c_out, 3, padding=1)]
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


def on_blocks(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    x = F.pad(x, (0, w % 2, 0, h % 2), mode="reflect")
    return F.pixel_shuffle(net(F.pixel_unshuffle(x, 2)), 2)[..., :h, :w]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((torch.round(a.clamp(0, 1) * 255) - torch.round(b.clamp(0, 1) * 255)) ** 2).double().mean()
    return math.inf if mse == 0 else float(10 * torch.log10(255.0**2 / mse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--quantizer", choices=("clamp", "through"), default="clamp")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    files = sorted((args.data / "T91").glob("*.bmp"), key=by_number)
    held = {round(i * (len(files) - 1) / 9) for i in range(10)}
    train = [load(f) for i, f in enumerate(files) if i not in held]
    encoder, decoder = stack(12, 4), stack(4, 12)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps, eta_min=1e-6)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.steps):
        batch = []
        for _ in range(16):
            image = train[rng.integers(len(train))]
            top, left = rng.integers(image.shape[1] - 31), rng.integers(image.shape[2] - 31)
            patch = image[:, top:top + 32, left:left + 32]
            patch = torch.rot90(patch, int(rng.integers(4)), (1, 2))
            batch.append(patch.flip(2) if rng.integers(2) else patch)
        rgb = torch.stack(batch)
        plain = (rgb * LUMA).sum(1, keepdim=True)
        raw = plain + on_blocks(encoder, rgb - 0.5)
        gray = quantize(raw, args.quantizer)
        restored = gray.expand(-1, 3, -1, -1) + on_blocks(decoder, gray - 0.5)
        loss = F.l1_loss(restored, rgb) + args.lam * F.l1_loss(gray, torch.round(plain * 255) / 255)
        if args.quantizer == "clamp":
            loss = loss + (F.relu(raw - 1) + F.relu(-raw)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    print(f"λ={args.lam:g} steps={args.steps} quantizer={args.quantizer} "
          f"params={sum(p.numel() for p in encoder.parameters())}+{sum(p.numel() for p in decoder.parameters())}")
    with torch.no_grad():
        for name in ("Set5", "Set14"):
            rgb_scores, gray_scores = [], []
            for path in sorted((args.data / name).glob("*.png")):
                rgb = load(path)[None]
                plain = (rgb * LUMA).sum(1, keepdim=True)
                gray = quantize(plain + on_blocks(encoder, rgb - 0.5), "clamp")
                restored = gray.expand(-1, 3, -1, -1) + on_blocks(decoder, gray - 0.5)
                rgb_scores.append(psnr(restored[..., 1:-1, 1:-1], rgb[..., 1:-1, 1:-1]))
                gray_scores.append(psnr(gray, plain))
            finite = [s for s in gray_scores if math.isfinite(s)]
            print(f"{name}: RGB PSNR {np.mean(rgb_scores):.2f} dB, gray fidelity "
                  f"{np.mean(gray_scores) if len(finite) == len(gray_scores) else math.inf:.2f} dB")


if __name__ == "__main__":
    main()
