"""The one pipeline every entry point scores through (training's validation and test,
``evaluate``, ``rescale roundtrip``, ``crops``, the image-panel callback).

Per HR batch (B,3,H,W) in [0,1], H and W multiples of the downscaler's crop multiple:

* ``lr = quantize_8bit(downscaler(hr))`` (B,3,H/s,W/s), on the 8-bit grid as a PNG holds it;
* ``sr = upscaler(lr)`` (B,3,H,W), float, not clamped (the metrics clamp and round);
* the Bicubic & Bicubic reference of the same HR: ``bicubic_lr`` (MATLAB imresize, 8 bit) and
  ``bicubic_sr``;
* per-image scores (:func:`score`): Y PSNR/SSIM and RGB PSNR of SR vs HR with ``scale`` border
  pixels removed, LR fidelity (Y PSNR of LR vs bicubic LR, no border; ``inf`` for bicubic
  itself) and, with the reference, the Bicubic & Bicubic Y PSNR/SSIM.

The downscaler's ``task`` (:mod:`taid_car.scoring.tasks`) says what a pair is scored as.
``RESIZE`` is the above. ``COLORIZE`` (TAD's colour -> gray -> colour, scale 1) has a 1-channel
LR, the learned gray image; its reference LR is the plain BT.601 gray on the 8-bit grid
(:func:`taid_car.models.colorize.plain_gray`) and its scores (``COLORIZE.scores``) are RGB
PSNR/SSIM of the restored colour image vs HR (the headline), Y PSNR/SSIM, and the gray fidelity
``lr_psnr_y`` / ``lr_ssim_y`` (PSNR / SSIM of the learned gray vs plain gray, no border: SSIM sees
the fine pattern a position-aware encoder writes that PSNR averages away); it has no fixed reference pair (the
baseline is the same decoder trained on plain gray, a run of its own), so ``bicubic_sr`` is None.

No Lightning, no W&B: importing this is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from taid_car.models.quantize import quantize_8bit
from taid_car.ops.imresize import bicubic_upscale
from taid_car.scoring.metrics import psnr_y, score_pair, score_pairs, ssim_rgb, ssim_y
from taid_car.scoring.tasks import COLORIZE, RESIZE, task_of


@dataclass
class Rescaled:
    """One batch through the pipeline: images (B,3,·,·) and per-image scores (B,) float64."""

    lr: torch.Tensor
    sr: torch.Tensor
    bicubic_lr: torch.Tensor
    bicubic_sr: torch.Tensor | None
    scores: dict[str, torch.Tensor]


def downscale_8bit(downscaler: nn.Module, hr: torch.Tensor) -> torch.Tensor:
    """HR (B,3,H,W) in [0,1] -> LR (B,3,H/s,W/s) on the 8-bit grid, as a saved PNG holds it."""
    return quantize_8bit(downscaler(hr))


def rescale(downscaler: nn.Module, upscaler: nn.Module, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HR (B,3,H,W) in [0,1] -> (LR on the 8-bit grid (B,3,H/s,W/s), SR (B,3,H,W))."""
    lr = downscale_8bit(downscaler, hr)
    return lr, upscaler(lr)


def bicubic_lr_of(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-bicubic LR of HR (B,3,H,W) on the 8-bit grid (B,3,H/s,W/s): the fidelity target."""
    return RESIZE.reference_lr(hr, scale)


def bicubic_reference(hr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bicubic & Bicubic of HR (B,3,H,W): (bicubic LR on the 8-bit grid, bicubic SR (B,3,H,W))."""
    bicubic_lr = bicubic_lr_of(hr, scale)
    return bicubic_lr, bicubic_upscale(bicubic_lr, scale)


def score_sr(sr: torch.Tensor, hr: torch.Tensor, scale: int, is_gray: torch.Tensor, prefix: str = "") -> dict:
    """``{prefix}psnr_y``, ``{prefix}ssim_y`` (and ``psnr_rgb`` without a prefix) of SR vs HR, (B,)."""
    scores = score_pair(sr, hr, scale, is_gray)
    if prefix:
        return {f"{prefix}psnr_y": scores["psnr_y"], f"{prefix}ssim_y": scores["ssim_y"]}
    return scores


def score(hr, lr, sr, bicubic_lr, scale: int, is_gray, bicubic_sr=None) -> dict[str, torch.Tensor]:
    """Per-image scores (B,) float64 of a rescaled batch: ``RESIZE.scores``, and
    ``RESIZE.reference_scores`` when ``bicubic_sr`` is given. ``is_gray``: (B,) bool (or one bool)."""
    gray = _gray(is_gray, hr)
    rows = score_pairs([sr] if bicubic_sr is None else [sr, bicubic_sr], hr, scale, gray)  # HR's work once
    scores = dict(rows[0])
    scores["lr_psnr_y"] = psnr_y(lr, bicubic_lr, 0, gray)
    if bicubic_sr is not None:
        scores["bicubic_psnr_y"], scores["bicubic_ssim_y"] = rows[1]["psnr_y"], rows[1]["ssim_y"]
    return scores


@torch.no_grad()
def rescale_and_score(
    downscaler: nn.Module,
    upscaler: nn.Module,
    hr: torch.Tensor,
    scale: int,
    is_gray,
    reference: bool = True,
) -> Rescaled:
    """HR (B,3,H,W) in [0,1] through downscaler -> 8 bit -> upscaler, with the bicubic LR
    (always: LR fidelity needs it) and, with ``reference``, Bicubic & Bicubic, all scored.
    A ``colorize`` downscaler is scored as the module docstring says (``reference`` unused)."""
    lr, sr = rescale(downscaler, upscaler, hr)
    if task_of(downscaler) is COLORIZE:
        gray_lr = COLORIZE.reference_lr(hr, scale)
        return Rescaled(lr, sr, gray_lr, None, score_colorized(hr, lr, sr, gray_lr, scale, is_gray))
    bicubic_lr = bicubic_lr_of(hr, scale)
    bicubic_sr = bicubic_upscale(bicubic_lr, scale) if reference else None
    return Rescaled(lr, sr, bicubic_lr, bicubic_sr, score(hr, lr, sr, bicubic_lr, scale, is_gray, bicubic_sr))


def score_colorized(hr, lr, sr, gray_lr, scale: int, is_gray) -> dict[str, torch.Tensor]:
    """Per-image scores (B,) float64 of a colorization pass: the ``colorize`` names of
    ``COLORIZE.scores``; ``lr`` and ``gray_lr`` are (B,1,H,W) on the 8-bit grid."""
    gray = _gray(is_gray, hr)
    scores = dict(score_pair(sr, hr, scale, gray))
    scores["ssim_rgb"] = ssim_rgb(sr, hr, scale)
    as_rgb = [t.expand(-1, 3, -1, -1) for t in (lr, gray_lr)]
    scores["lr_psnr_y"] = psnr_y(*as_rgb, 0, True)  # gray values, no luma conversion
    scores["lr_ssim_y"] = ssim_y(*as_rgb, 0, True)
    return scores


def _gray(is_gray, hr: torch.Tensor) -> torch.Tensor:
    mask = torch.as_tensor(is_gray, dtype=torch.bool).reshape(-1).to(hr.device)
    return mask.expand(hr.shape[0]) if mask.numel() == 1 else mask
