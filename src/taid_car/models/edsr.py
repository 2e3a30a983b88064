"""EDSR upscaler (Lim et al., CVPRW 2017), state-dict compatible with CAR's released ``usn.pth``.

Layout and parameter names follow the CAR authors' copy of EDSR (``sunwj/CAR``:
``EDSR/edsr.py``, ``EDSR/common.py``) so their checkpoints load key for key::

    sub_mean.{weight,bias}                 MeanShift (fixed, 1x1 conv 3->3)
    head.0.{weight,bias}                   conv3x3 3->F
    body.{i}.body.{0,2}.{weight,bias}      ResBlock i: conv3x3, ReLU, conv3x3 (x res_scale, + x)
    body.{n_blocks}.{weight,bias}          conv3x3 F->F (then + head output)
    tail.0.{2j}.{weight,bias}              upsampler stage j: conv3x3 F->p²F, PixelShuffle(p)
    tail.1.{weight,bias}                   conv3x3 F->3
    add_mean.{weight,bias}                 MeanShift (fixed)

Input range. The public interface is always a [0,1] RGB tensor. Internally the image is
multiplied by ``rgb_range`` before ``sub_mean`` and the output divided by it afterwards.
CAR's ``usn.pth`` was trained with ``rgb_range=1`` (the authors call ``MeanShift(1)`` and feed
``lr / 255``), so it works with the default. The original EDSR releases (``edsr_x2-*.pt`` …)
use ``rgb_range=255``: build those with ``rgb_range=255`` — same [0,1] interface.
:func:`taid_car.models.checkpoints.load_authors_checkpoint` refuses a checkpoint whose stored
``sub_mean`` bias says it was trained for another ``rgb_range``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from taid_car.errors import ConfigError

#: DIV2K RGB mean on [0,1] (the value EDSR and CAR use).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

#: EDSR sizes. ``paper`` is EDSR proper (and CAR's upscaler ``usn``); ``baseline`` is
#: EDSR-baseline; ``tiny`` trains on two CPU cores in minutes. An EDSR of another method's size
#: is ``tiny``'s shape with the width :func:`size_matched_width` gives (``upscaler=edsr_size_of``,
#: ``model.baseline_upscaler=size_matched``).
EDSR_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_blocks": 4, "n_feats": 32, "res_scale": 1.0},
    "baseline": {"n_blocks": 16, "n_feats": 64, "res_scale": 1.0},
    "paper": {"n_blocks": 32, "n_feats": 256, "res_scale": 0.1},
}

EDSR_SCALES = (2, 3, 4, 8)


class MeanShift(nn.Module):
    """Fixed per-channel shift ``y = x + sign * rgb_range * mean`` as a 1x1 conv.

    Holds ``weight`` (3,3,1,1) and ``bias`` (3,) as buffers, not parameters: they are in the
    state dict under the authors' names (their version is a frozen ``nn.Conv2d``) but never
    reach an optimiser.
    """

    def __init__(
        self,
        rgb_range: float = 1.0,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
        sign: int = -1,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", torch.eye(3).view(3, 3, 1, 1))
        self.register_buffer("bias", sign * rgb_range * torch.tensor(rgb_mean))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


def conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    """3x3 conv with zero padding 1 (EDSR's ``default_conv``)."""
    return nn.Conv2d(in_ch, out_ch, 3, padding=1)


class ResBlock(nn.Module):
    """``x + res_scale * conv(relu(conv(x)))``; keys ``body.0``, ``body.2``. (B,F,h,w) -> same."""

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(n_feats, n_feats), nn.ReLU(), conv3x3(n_feats, n_feats))
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


def upsample_factors(scale: int) -> list[int]:
    """Pixel-shuffle stages of EDSR's upsampler: ×2^n as n ×2 stages, ×3 as one stage."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise ConfigError(f"EDSR scale must be an int in {EDSR_SCALES}, got {scale!r}")
    if scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    if scale == 3:
        return [3]
    raise ConfigError(
        f"EDSR supports scales that are powers of 2 or 3 (e.g. {EDSR_SCALES}), got {scale}"
    )


class Upsampler(nn.Sequential):
    """conv3x3 F->p²F + PixelShuffle(p) per stage. (B,F,h,w) -> (B,F,h*s,w*s)."""

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        for p in upsample_factors(scale):
            layers += [conv3x3(n_feats, p * p * n_feats), nn.PixelShuffle(p)]
        super().__init__(*layers)


class EDSR(nn.Module):
    """EDSR upscaler: LR (B,3,h,w) in [0,1] -> SR (B,3,h*s,w*s), roughly [0,1] (not clamped).

    Args:
        scale: upscaling factor, a power of 2 or 3.
        n_blocks: residual blocks in the body.
        n_feats: feature width F.
        res_scale: multiplier of each residual branch (0.1 for the 32x256 model).
        rgb_range: pixel range the weights expect internally (1 for CAR's ``usn.pth``,
            255 for the original EDSR releases); the interface stays [0,1] either way.
    """

    def __init__(
        self,
        scale: int,
        n_blocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_range: float = 1.0,
    ) -> None:
        super().__init__()
        if n_blocks < 0 or n_feats < 1:
            raise ValueError(
                f"EDSR needs n_blocks >= 0 and n_feats >= 1, got {n_blocks}, {n_feats}"
            )
        self.scale = scale
        self.rgb_range = float(rgb_range)
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_blocks)], conv3x3(n_feats, n_feats)
        )
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, 3))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"EDSR expects an RGB batch (B,3,h,w), got shape {tuple(lr.shape)}")
        x = self.head(self.sub_mean(lr * self.rgb_range))
        x = x + self.body(x)
        return self.add_mean(self.tail(x)) / self.rgb_range


def build_edsr(preset: str, scale: int, **overrides: Any) -> EDSR:
    """EDSR from a named preset (``tiny``, ``baseline``, ``paper``) with keyword overrides."""
    if preset not in EDSR_PRESETS:
        raise ValueError(f"unknown EDSR preset {preset!r}; choose one of {sorted(EDSR_PRESETS)}")
    return EDSR(scale=scale, **{**EDSR_PRESETS[preset], **overrides})


def edsr_parameter_count(scale: int, n_feats: int, n_blocks: int) -> int:
    """Trainable parameters of ``EDSR(scale, n_blocks, n_feats)`` (the mean shifts are buffers):
    head 3->F, ``n_blocks`` residual blocks of two F->F convolutions, the body's last F->F, one
    F->p²F convolution per pixel-shuffle stage p, the tail F->3; every convolution 3×3 with bias."""
    conv = lambda c_in, c_out: 9 * c_in * c_out + c_out
    f = int(n_feats)
    upsampling = sum(conv(f, p * p * f) for p in upsample_factors(scale))
    return conv(3, f) + 2 * n_blocks * conv(f, f) + conv(f, f) + upsampling + conv(f, 3)


def size_matched_width(parameters: int, scale: int, n_blocks: int = EDSR_PRESETS["tiny"]["n_blocks"]) -> int:
    """The feature count F >= 1 of an EDSR with ``n_blocks`` blocks (EDSR-tiny's 4) at ``scale``
    whose parameter count is the closest to ``parameters`` (the smaller F on a tie): the upscaler
    of a size-matched baseline, bicubic + an upscaler as large as the method's own pair."""
    if parameters < 1:
        raise ConfigError(f"a size-matched EDSR needs a parameter count >= 1 to match, got {parameters}")
    width = 1
    while edsr_parameter_count(scale, width, n_blocks) < parameters:
        width += 1
    below = edsr_parameter_count(scale, width - 1, n_blocks) if width > 1 else None
    if below is not None and parameters - below <= edsr_parameter_count(scale, width, n_blocks) - parameters:
        return width - 1
    return width
