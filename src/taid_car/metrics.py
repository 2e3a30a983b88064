"""Super-resolution metrics under the standard protocol (Y channel, 8 bit, border crop).

Conventions, shared by every function here:

* images are RGB tensors ``(B, 3, H, W)`` (or ``(3, H, W)``), float, range [0, 1];
* they are first quantised as an 8-bit PNG would hold them: ``round(clamp(x, 0, 1) * 255)``;
* luminance is MATLAB's ``rgb2ycbcr`` on uint8 input, which returns uint8:
  ``Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255)`` with R, G, B in 0..255;
* a *grayscale* HR image (e.g. Set14 ``bridge``) is scored on its own gray values, as MATLAB
  scripts do for single-channel files, not on the range-compressed Y of a replicated image
  (that would shift PSNR by about 1.3 dB). The SR's gray value is
  ``round((65.481 R + 128.553 G + 24.966 B) / 219)``, which is exact for replicated channels;
* ``crop_border`` pixels (the scale, by convention) are removed from every side;
* PSNR uses peak 255; SSIM (Wang et al. 2004) an 11x11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, data range 255, averaged over the valid (unpadded) region;
* scores are per image, and a set's score is the mean over its images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric

Y_WEIGHTS = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr, for RGB in [0, 1]


def _as_batch(image: torch.Tensor, name: str) -> torch.Tensor:
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"{name}: expected RGB (B,3,H,W) or (3,H,W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"{name}: expected a float image in [0,1], got dtype {image.dtype}")
    return image


def quantize_uint8(image: torch.Tensor) -> torch.Tensor:
    """[0,1] float -> integer-valued float64 in 0..255, as an 8-bit file would store it."""
    return (image.detach().to(torch.float64).clamp(0, 1) * 255).round()


def _weighted_rgb(rgb255: torch.Tensor) -> torch.Tensor:
    r, g, b = rgb255.unbind(dim=1)
    return (Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b).unsqueeze(1)


def rgb_to_y(rgb255: torch.Tensor) -> torch.Tensor:
    """MATLAB ``rgb2ycbcr`` luma of 0..255 RGB (B,3,H,W) -> (B,1,H,W) integers in 16..235."""
    return (16 + _weighted_rgb(rgb255) / 255).round()


def rgb_to_gray(rgb255: torch.Tensor) -> torch.Tensor:
    """Luma without offset/range compression -> (B,1,H,W) integers in 0..255 (exact on gray)."""
    return (_weighted_rgb(rgb255) / 219).round()


def detect_gray(hr: torch.Tensor) -> torch.Tensor:
    """(B,) bool: True where all three channels of the image are identical."""
    hr = _as_batch(hr, "detect_gray")
    return (hr[:, 0] == hr[:, 1]).flatten(1).all(1) & (hr[:, 1] == hr[:, 2]).flatten(1).all(1)


def _gray_mask(hr: torch.Tensor, is_gray: torch.Tensor | bool | list | None) -> torch.Tensor:
    if is_gray is None:
        return detect_gray(hr)
    mask = torch.as_tensor(is_gray, dtype=torch.bool, device=hr.device).reshape(-1)
    if mask.numel() == 1:
        mask = mask.expand(hr.shape[0])
    if mask.numel() != hr.shape[0]:
        raise ValueError(f"is_gray has {mask.numel()} entries for a batch of {hr.shape[0]}")
    return mask


def scoring_channel(image: torch.Tensor, is_gray: torch.Tensor) -> torch.Tensor:
    """8-bit luminance to score on: Y for colour images, gray value for gray ones. (B,1,H,W)."""
    rgb255 = quantize_uint8(image)
    mask = is_gray.view(-1, 1, 1, 1).to(rgb255.device)
    return torch.where(mask, rgb_to_gray(rgb255), rgb_to_y(rgb255))


def _crop(image: torch.Tensor, border: int) -> torch.Tensor:
    if border == 0:
        return image
    height, width = image.shape[-2:]
    if height <= 2 * border or width <= 2 * border:
        raise ValueError(f"cannot crop {border} px from each side of a {height}x{width} image")
    return image[..., border:-border, border:-border]


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = _as_batch(pred, "pred"), _as_batch(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return pred, target


def _scoring_pair(pred, target, crop_border: int, is_gray) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked pair -> cropped 8-bit luminance (B,1,h,w) of each, as the protocol scores them."""
    pred, target = _check_pair(pred, target)
    gray = _gray_mask(target, is_gray)
    return (_crop(scoring_channel(pred, gray), crop_border),
            _crop(scoring_channel(target, gray), crop_border))


def psnr_from_mse(mse: torch.Tensor, peak: float = 255.0) -> torch.Tensor:
    """PSNR in dB for a mean squared error on a 0..peak scale (inf where mse == 0)."""
    return 10 * torch.log10(peak**2 / mse)


def psnr_y(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0, is_gray=None
) -> torch.Tensor:
    """Per-image Y-channel PSNR in dB, (B,). Inputs RGB in [0,1]; see module docstring."""
    p, t = _scoring_pair(pred, target, crop_border, is_gray)
    return psnr_from_mse((p - t).pow(2).flatten(1).mean(1))


def psnr_rgb(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """Per-image PSNR in dB over all three 8-bit RGB channels, (B,)."""
    pred, target = _check_pair(pred, target)
    p = _crop(quantize_uint8(pred), crop_border)
    t = _crop(quantize_uint8(target), crop_border)
    return psnr_from_mse((p - t).pow(2).flatten(1).mean(1))


def ssim_y(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0, is_gray=None
) -> torch.Tensor:
    """Per-image Y-channel SSIM, (B,), in [-1, 1]; Gaussian 11x11, sigma 1.5, valid region."""
    p, t = _scoring_pair(pred, target, crop_border, is_gray)
    if min(p.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {tuple(p.shape[-2:])}")
    return ssim(p, t)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian; its outer product is MATLAB ``fspecial('gaussian', size, sigma)``."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 255.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of single-channel (B,1,H,W) images, (B,).

    Statistics use a separable Gaussian window over the valid region only (no padding),
    exactly like the reference ``ssim_index.m``; computed in float64.
    """
    g = gaussian_window(window, sigma).to(pred.device)
    batch = pred.shape[0]
    stack = torch.cat([pred, target, pred * pred, target * target, pred * target], 0).double()
    stack = F.conv2d(stack, g.view(1, 1, -1, 1))
    stack = F.conv2d(stack, g.view(1, 1, 1, -1))
    mu_p, mu_t, e_pp, e_tt, e_pt = stack.split(batch, 0)
    var_p, var_t, cov = e_pp - mu_p**2, e_tt - mu_t**2, e_pt - mu_p * mu_t
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
        (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    )
    return ssim_map.flatten(1).mean(1)


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
