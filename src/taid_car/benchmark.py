"""Score a downscaler/upscaler pair on a benchmark set under the standard SR protocol.

Pipeline per HR image (RGB, [0,1], cropped to a multiple of the scale):
``LR = quantize_8bit(downscaler(HR))``, ``SR = upscaler(LR)``; SR is scored against HR
(Y PSNR/SSIM with ``scale`` pixels cropped, RGB PSNR), and LR against the MATLAB-bicubic
LR of the same HR (LR fidelity). The "Bicubic & Bicubic" reference is scored beside it.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from taid_car.imresize import bicubic_downscale, bicubic_upscale
from taid_car.metrics import psnr_rgb, psnr_y, ssim_y
from taid_car.models.quantize import quantize_8bit
from taid_car.results import SetResult


def rescale(downscaler: nn.Module, upscaler: nn.Module, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HR (B,3,H,W) in [0,1] -> (LR quantised to 8 bit (B,3,H/s,W/s), SR (B,3,H,W))."""
    lr = quantize_8bit(downscaler(hr))
    return lr, upscaler(lr)


@torch.no_grad()
def evaluate_set(
    downscaler: nn.Module,
    upscaler: nn.Module,
    dataset,
    scale: int,
    set_name: str,
    method: str,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> SetResult:
    """Score one set. ``dataset`` yields dicts with ``hr`` (3,H,W), ``name`` and ``is_gray``."""
    crop = scale
    per_image = []
    downscaler.eval().to(device)
    upscaler.eval().to(device)
    items = tqdm(range(len(dataset)), desc=f"{method} {set_name} x{scale}", disable=not progress, leave=False)
    for index in items:
        item = dataset[index]
        hr = item["hr"].unsqueeze(0).to(device)
        gray = torch.tensor([bool(item["is_gray"])])
        lr, sr = rescale(downscaler, upscaler, hr)
        bicubic_lr = quantize_8bit(bicubic_downscale(hr, scale))
        bicubic_sr = bicubic_upscale(bicubic_lr, scale)
        per_image.append(
            {
                "name": item["name"],
                "is_gray": bool(item["is_gray"]),
                "psnr_y": psnr_y(sr, hr, crop, gray).item(),
                "ssim_y": ssim_y(sr, hr, crop, gray).item(),
                "psnr_rgb": psnr_rgb(sr, hr, crop).item(),
                "lr_psnr_y": psnr_y(lr, bicubic_lr, 0, gray).item(),
                "bicubic_psnr_y": psnr_y(bicubic_sr, hr, crop, gray).item(),
                "bicubic_ssim_y": ssim_y(bicubic_sr, hr, crop, gray).item(),
            }
        )
    if not per_image:
        raise ValueError(f"benchmark set {set_name!r} has no images")
    keys = [k for k in per_image[0] if k not in ("name", "is_gray")]
    scores = {k: sum(row[k] for row in per_image) / len(per_image) for k in keys}
    return SetResult(method=method, set_name=set_name, scale=scale, images=len(dataset), per_image=per_image, **scores)
