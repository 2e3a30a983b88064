"""The one pipeline every entry point scores through (training's validation and test,
``evaluate``, ``rescale roundtrip``, ``crops``, the image-panel callback).

Per HR batch (B,3,H,W) in [0,1], H and W multiples of the downscaler's crop multiple, and an LR
channel (:mod:`taid_car.channel`; ``png``, the 8-bit rounding a saved PNG holds, by default):

* ``lr = channel.code(downscaler(hr)).lr`` (B,3,H/s,W/s): rounded to 8 bit and through the
  channel's real codec, as the stored file holds it;
* ``sr = upscaler(lr)`` (B,3,H,W), float, not clamped (the metrics clamp and round);
* the Bicubic & Bicubic reference of the same HR through the *same* channel: ``bicubic_lr``
  (MATLAB imresize, 8 bit, then the channel) and ``bicubic_sr``;
* per-image scores (:func:`score`): Y PSNR/SSIM and RGB PSNR of SR vs HR with ``scale`` border
  pixels removed, LR fidelity (Y PSNR of the stored LR vs the clean 8-bit bicubic LR, no border;
  ``inf`` for bicubic itself through png), the rate ``bpp`` (bits of the encoded LR per LR pixel)
  and, with the reference, the Bicubic & Bicubic Y PSNR/SSIM and rate ``bicubic_bpp``.

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

from taid_car.channel import LOSSLESS, Coded, LRChannel
from taid_car.ops.imresize import bicubic_upscale
from taid_car.scoring.metrics import psnr_y, score_pair, score_pairs, ssim_rgb, ssim_y
from taid_car.scoring.tasks import COLORIZE, RESIZE, task_of


@dataclass
class Rescaled:
    """One batch through the pipeline: images (B,3,·,·) and per-image scores (B,) float64.
    ``lr`` and ``bicubic_lr`` are the LRs the upscalers got (through the channel); without the
    reference (and for colorization) ``bicubic_lr`` is the clean fidelity target."""

    lr: torch.Tensor
    sr: torch.Tensor
    bicubic_lr: torch.Tensor
    bicubic_sr: torch.Tensor | None
    scores: dict[str, torch.Tensor]


def _channel(channel: LRChannel | None) -> LRChannel:
    return LOSSLESS if channel is None else channel


def downscale(downscaler: nn.Module, hr: torch.Tensor, channel: LRChannel | None = None) -> Coded:
    """HR (B,3,H,W) in [0,1] -> the LR (B,C,H/s,W/s) as the channel stores it (8 bit, then its
    codec; png by default) with its bits: what ``rescale downscale`` writes and the upscaler gets."""
    return _channel(channel).code(downscaler(hr))


def rescale(downscaler: nn.Module, upscaler: nn.Module, hr: torch.Tensor,
            channel: LRChannel | None = None) -> tuple[Coded, torch.Tensor]:
    """HR (B,3,H,W) in [0,1] -> (the stored LR and its bits (:func:`downscale`), SR (B,3,H,W))."""
    coded = downscale(downscaler, hr, channel)
    return coded, upscaler(coded.lr)


def bicubic_lr_of(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-bicubic LR of HR (B,3,H,W) on the 8-bit grid (B,3,H/s,W/s): the fidelity target."""
    return RESIZE.reference_lr(hr, scale)


def bicubic_reference(hr: torch.Tensor, scale: int, channel: LRChannel | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bicubic & Bicubic of HR (B,3,H,W): (bicubic LR on the 8-bit grid through ``channel``,
    bicubic SR (B,3,H,W))."""
    bicubic_lr = _channel(channel).code(bicubic_lr_of(hr, scale)).lr
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
    channel: LRChannel | None = None,
) -> Rescaled:
    """HR (B,3,H,W) in [0,1] through downscaler -> ``channel`` (png: 8 bit) -> upscaler, with the
    bicubic LR (always: LR fidelity needs it) and, with ``reference``, Bicubic & Bicubic through
    the same channel, all scored. A ``colorize`` downscaler is scored as the module docstring says
    (``reference`` unused)."""
    return rescale_and_score_channels(downscaler, upscaler, hr, scale, is_gray, [_channel(channel)], reference)[0]


@torch.no_grad()
def rescale_and_score_channels(
    downscaler: nn.Module,
    upscaler: nn.Module,
    hr: torch.Tensor,
    scale: int,
    is_gray,
    channels: list[LRChannel],
    reference: bool = True,
) -> list[Rescaled]:
    """:func:`rescale_and_score` through each of ``channels`` (e.g. JPEG at several qualities),
    one :class:`Rescaled` each, in order; the downscaler runs once."""
    unrounded = downscaler(hr)
    task = task_of(downscaler)
    target = task.reference_lr(hr, scale)  # the clean 8-bit fidelity target
    out = []
    for channel in channels:
        coded = channel.code(unrounded)
        sr = upscaler(coded.lr)
        if task is COLORIZE:
            scores = score_colorized(hr, coded.lr, sr, target, scale, is_gray)
            out.append(Rescaled(coded.lr, sr, target, None, {**scores, "bpp": coded.bits_per_pixel()}))
            continue
        bicubic = channel.code(target) if reference else None
        bicubic_sr = bicubic_upscale(bicubic.lr, scale) if bicubic is not None else None
        scores = score(hr, coded.lr, sr, target, scale, is_gray, bicubic_sr)
        scores["bpp"] = coded.bits_per_pixel()
        if bicubic is not None:
            scores["bicubic_bpp"] = bicubic.bits_per_pixel()
        out.append(Rescaled(coded.lr, sr, target if bicubic is None else bicubic.lr, bicubic_sr, scores))
    return out


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
