"""torchmetrics accumulators of the SR protocol scores of :mod:`taid_car.scoring.metrics` (set means).

Kept apart so that ``import taid_car.scoring.metrics`` does not import torchmetrics; the classes are
re-exported there (``from taid_car.scoring.metrics import PSNRY`` imports this module on first use).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from taid_car.scoring.metrics import psnr_rgb, psnr_y, ssim_y

__all__ = ["PSNRRGB", "PSNRY", "SSIMY", "LRFidelity"]


class _PerImageMean(Metric):
    """Mean of a per-image score over every image seen (a set's average), DDP-reduced."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, crop_border: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if crop_border < 0:
            raise ValueError(f"crop_border must be >= 0, got {crop_border}")
        self.crop_border = int(crop_border)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def score(self, pred: torch.Tensor, target: torch.Tensor, is_gray) -> torch.Tensor:
        raise NotImplementedError

    def update(self, pred: torch.Tensor, target: torch.Tensor, is_gray=None) -> None:
        """Add a batch: ``pred``, ``target`` RGB (B,3,H,W) in [0,1]; ``is_gray`` (B,) or None."""
        scores = self.score(pred, target, is_gray).to(torch.float64)
        self.total += scores.sum().to(self.total.device)
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


class PSNRY(_PerImageMean):
    """Mean per-image Y PSNR (dB) of SR vs HR, standard SR protocol."""

    def score(self, pred, target, is_gray):
        return psnr_y(pred, target, self.crop_border, is_gray)


class SSIMY(_PerImageMean):
    """Mean per-image Y SSIM of SR vs HR, standard SR protocol."""

    def score(self, pred, target, is_gray):
        return ssim_y(pred, target, self.crop_border, is_gray)


class PSNRRGB(_PerImageMean):
    """Mean per-image PSNR (dB) over 8-bit RGB."""

    def score(self, pred, target, is_gray):
        return psnr_rgb(pred, target, self.crop_border)


class LRFidelity(PSNRY):
    """Mean per-image Y PSNR (dB) of a learned LR against the bicubic LR of the same HR.

    ``update(lr, bicubic_lr, is_gray)``: both (B,3,h,w) in [0,1]. No border crop by default.
    """
