"""Diagnostics on the study's trained checkpoints: is something broken, or is it the budget?

    .venv/bin/python experiments/cpu_study/diagnose.py multirun/cpu_study --data ../shared/data

For every finished CAR or TAID run found below the given directories (the checkpoint each run
was tested with), on Set5 and on a fixed batch of 8 random 96x96 T91 patches (seed 0):

1. quantisation: Set5 PSNR-Y with the LR rounded to 8 bit (as tested) and without rounding;
2. resampler gradients (CAR): the gradient of <LR, R> (R fixed random) for every downscaler
   parameter from the numba backend (float64 and float32) against the pure-torch float64
   reference (relative L2 error), and the reference's directional derivative against a central
   finite difference in float64 (no 8-bit rounding here: its straight-through gradient is not a
   derivative of the rounded forward by design);
3. kernels (CAR): share of kernel taps whose raw weight is clamped (below 1e-6 or above 1, so no
   gradient flows to them), effective support 1 / sum(k^2) in taps, mean |offset| in LR pixels;
4. loss terms: each weighted term's value and the L2 norm of its gradient on the downscaler
   (is the regulariser or guidance term steering the downscaler rather than the SR loss?).

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import torch

from taid_car.data.io import list_images, modcrop, read_image
from taid_car.models.quantize import quantize_8bit
from taid_car.models.trained import load_trained_pair
from taid_car.run import build_rescaler
from taid_car.runs import find_run_dirs, tested_checkpoint
from taid_car.scoring.metrics import psnr_y


def t91_batch(root: Path, count: int = 8, size: int = 96, seed: int = 0) -> torch.Tensor:
    """(count,3,size,size) random crops of random T91 images (fixed seed)."""
    gen = torch.Generator().manual_seed(seed)
    files = list_images(root / "T91")
    crops = []
    while len(crops) < count:
        image = read_image(files[int(torch.randint(len(files), (1,), generator=gen))]).tensor
        H, W = image.shape[-2:]
        if min(H, W) < size:
            continue
        top = int(torch.randint(H - size + 1, (1,), generator=gen))
        left = int(torch.randint(W - size + 1, (1,), generator=gen))
        crops.append(image[:, top:top + size, left:left + size])
    return torch.stack(crops)


def rescaler_from(ckpt: Path):
    """The run's Rescaler (losses and weights as trained) with the checkpoint's weights."""
    from omegaconf import OmegaConf

    downscaler, upscaler, config = load_trained_pair(ckpt)
    rescaler = build_rescaler(OmegaConf.create(config))
    rescaler.downscaler.load_state_dict(downscaler.state_dict())
    rescaler.upscaler.load_state_dict(upscaler.state_dict())
    return rescaler.eval(), config


@torch.no_grad()
def quantisation_effect(rescaler, root: Path, scale: int, multiple: int) -> tuple[float, float]:
    """Set5 mean PSNR-Y (dB) with and without rounding the LR to 8 bit."""
    rounded, raw = [], []
    for file in list_images(root / "Set5"):
        loaded = read_image(file)
        hr = modcrop(loaded.tensor, math.lcm(scale, multiple))[None]
        gray = torch.tensor([loaded.is_gray])
        lr = rescaler.downscaler(hr)
        for target, lr_used in ((rounded, quantize_8bit(lr)), (raw, lr)):
            sr = rescaler.upscaler(lr_used).clamp(0, 1)
            target.append(float(psnr_y(sr, hr, crop_border=scale, is_gray=gray)))
    return sum(rounded) / len(rounded), sum(raw) / len(raw)


def downscaler_grads(rescaler, hr: torch.Tensor, term: str) -> list[torch.Tensor]:
    rescaler.zero_grad(set_to_none=True)
    terms = rescaler.compute_losses(hr)
    (rescaler.loss_weights[term] * terms[term]).backward()
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for p in rescaler.downscaler.parameters()]


def norm(tensors) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def projected_grads(down, hr: torch.Tensor, probe: torch.Tensor, backend: str) -> list[torch.Tensor]:
    """Gradient of <down(hr), probe> for every downscaler parameter (no rounding, no upscaler)."""
    down.backend = backend
    down.zero_grad(set_to_none=True)
    (down(hr) * probe).sum().backward()
    return [p.grad.detach().double().clone() for p in down.parameters()]


def resampler_gradient_check(rescaler, hr: torch.Tensor) -> tuple[float, float, float]:
    """Relative L2 errors of the CAR downscaler's parameter gradients, on the trained weights:
    (numba fp64 vs torch fp64, numba fp32 vs torch fp64, torch fp64 directional derivative vs a
    central finite difference). The loss is <LR, R> for a fixed random R, so the check isolates
    kernel net + resampler from the 8-bit rounding's straight-through gradient."""
    down = copy.deepcopy(rescaler.downscaler).double()
    hr64 = hr.double()
    probe = torch.randn(down(hr64).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = projected_grads(down, hr64, probe, "torch")
    numba64 = projected_grads(down, hr64, probe, "cpu")
    down32 = copy.deepcopy(rescaler.downscaler).float()
    numba32 = projected_grads(down32, hr, probe.float(), "cpu")

    def relative(grads) -> float:
        return norm([a - b for a, b in zip(grads, exact)]) / norm(exact)

    params = list(down.parameters())
    direction = [torch.randn_like(p) for p in params]
    analytic = sum(float((g * d).sum()) for g, d in zip(exact, direction))
    eps = 1e-6
    down.backend = "torch"
    with torch.no_grad():
        values = []
        for sign in (1, -1):
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
            values.append(float((down(hr64) * probe).sum()))
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
    numeric = (values[0] - values[1]) / (2 * eps)
    return relative(numba64), relative(numba32), abs(analytic - numeric) / max(abs(numeric), 1e-12)


@torch.no_grad()
def kernel_statistics(rescaler, hr: torch.Tensor) -> tuple[float, float, int, float, float]:
    """(share of raw kernel weights clamped at 1e-6, share clamped at 1, taps k², mean effective
    support 1/sum(k²) in taps, mean offset length in LR px)."""
    net = rescaler.downscaler.kernel_net
    raw = {}
    hook = net.kernels_weight.register_forward_hook(lambda m, i, o: raw.setdefault("w", o))
    kernels, offsets_h, offsets_v = net(hr)
    hook.remove()
    low, high = float((raw["w"] < 1e-6).float().mean()), float((raw["w"] > 1.0).float().mean())
    support = float((1.0 / kernels.pow(2).sum(1)).mean())
    offset = float(torch.sqrt(offsets_h.pow(2) + offsets_v.pow(2)).mean())
    return low, high, kernels.shape[1], support, offset


def term_table(rescaler, hr: torch.Tensor) -> list[tuple[str, float, float]]:
    with torch.no_grad():
        terms = rescaler.compute_losses(hr)
    rows = []
    for name, value in terms.items():
        if name == "loss":
            continue
        weight = rescaler.loss_weights[name]
        rows.append((name, weight * float(value), norm(downscaler_grads(rescaler, hr, name))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    root = Path(args.data)
    torch.manual_seed(0)
    batches: dict[int, torch.Tensor] = {}
    quant, grads, kernels, terms = [], [], [], []
    run_dirs = [d for path in args.runs for d in find_run_dirs(Path(path))]
    for run_dir in run_dirs:
        try:
            ckpt = tested_checkpoint(run_dir)
        except FileNotFoundError:
            continue
        rescaler, config = rescaler_from(ckpt)
        if config["model"]["name"] == "bicubic":
            continue
        scale, multiple = int(config["scale"]), rescaler.downscaler.size_multiple
        hr = batches.setdefault(scale, t91_batch(root, size=math.lcm(96, scale, 8)))
        label = f"{rescaler.method} x{scale} ({run_dir.name}, {ckpt.stem})"
        rounded, raw = quantisation_effect(rescaler, root, scale, multiple)
        quant.append(f"| {label} | {rounded:.2f} | {raw:.2f} | {raw - rounded:+.2f} |")
        for name, value, gnorm in term_table(rescaler, hr):
            terms.append(f"| {label} | {name} | {value:.4g} | {gnorm:.3g} |")
        if hasattr(rescaler.downscaler, "kernel_net"):
            grads.append("| {} | {:.1e} | {:.1e} | {:.1e} |".format(label, *resampler_gradient_check(rescaler, hr[:2])))
            low, high, taps, support, offset = kernel_statistics(rescaler, hr)
            kernels.append(f"| {label} | {100 * low:.1f}% | {100 * high:.1f}% | {support:.1f} of {taps} | {offset:.3f} |")
    print("| run | Set5 PSNR-Y, LR rounded (dB) | LR not rounded (dB) | difference |\n|---|---:|---:|---:|")
    print("\n".join(quant))
    print("\n| run | loss term | weighted value | grad norm on downscaler |\n|---|---|---:|---:|")
    print("\n".join(terms))
    if grads:
        print("\n| run | numba fp64 vs torch fp64 | numba fp32 vs torch fp64 | torch fp64 vs finite difference |")
        print("|---|---:|---:|---:|")
        print("\n".join(grads))
        print("\n| run | raw weights < 1e-6 | raw weights > 1 | effective support (taps) | mean offset (LR px) |")
        print("|---|---:|---:|---:|---:|")
        print("\n".join(kernels))


if __name__ == "__main__":
    main()
