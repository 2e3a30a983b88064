"""TAID / TAD-TAU (Kim et al., ECCV 2018): a CNN encoder is the downscaler, a CNN decoder the upscaler.

Encoder (one ×s network, :class:`TAIDEncoder`)::

    MeanShift -> conv3x3 3->F (HR) -> per factor p of s: PixelUnshuffle(p) + conv1x1 p²F->F, ReLU
    -> x + [ResBlock(F) x n, conv3x3] -> conv3x3 F->3 -> + base

``base`` is the global skip, chosen by ``skip``: ``"bicubic"`` (default; MATLAB-bicubic LR of the
input, so the net learns a residual from the bicubic image that the guidance loss pulls it
towards), ``"area"`` (s×s box average) or ``"none"`` (plain; the DIV2K mean is added back).

Decoder (one ×s network) is :class:`taid_car.models.edsr.EDSR` (pixel-shuffle upsampling).

Factors s: powers of 2 and 3 (the factors of EDSR's upsampler: ×2^n as n ×2 stages).
``recursive=True`` instead applies a ×2 encoder log2(s) times (and a ×2 decoder as often), the
way TAD reaches ×128, trained end-to-end; s must be a power of 2. ``share_weights=True``
(default) uses one ×2 pair for every level, ``False`` one pair per level. Each intermediate LR is
rounded to the 8-bit grid (straight-through gradient), each intermediate SR clamped to [0, 1]
(:mod:`taid_car.models.recursive`), and every level's LR is guided towards the bicubic LR of the
HR at that level's factor. A trained ×2 pair also runs at ×2ⁿ at test time without retraining:
:func:`taid_car.models.recursive.recursive_pair`.
Inputs and outputs are RGB in [0,1] (LR/SR not clamped or quantised here).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from taid_car.errors import ConfigError
from taid_car.models.downscaler import Downscaler
from taid_car.models.edsr import EDSR, MeanShift, ResBlock, conv3x3, upsample_factors
from taid_car.models.recursive import Recursion, between_levels_clamped
from taid_car.models.regularizers import taid_guidance_loss
from taid_car.ops.imresize import bicubic_downscale

#: Sizes for both halves. ``tiny`` trains on a CPU; ``base`` is EDSR-baseline sized.
TAID_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_blocks": 4, "n_feats": 32, "res_scale": 1.0},
    "base": {"n_blocks": 16, "n_feats": 64, "res_scale": 1.0},
}

SKIPS = ("bicubic", "area", "none")


def _levels(scale: int, recursive: bool) -> tuple[int, int]:
    """(per-network scale, number of applications) after validating ``scale``."""
    upsample_factors(scale)  # raises ValueError for unsupported scales
    if not recursive:
        return scale, 1
    if scale & (scale - 1):
        raise ConfigError(f"TAID recursive mode needs a power-of-2 scale, got {scale}")
    return 2, scale.bit_length() - 1


def resolve_preset(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if preset not in TAID_PRESETS:
        raise ConfigError(f"unknown TAID preset {preset!r}; choose one of {sorted(TAID_PRESETS)}")
    unknown = set(overrides) - set(TAID_PRESETS[preset])
    if unknown:
        raise ConfigError(
            f"unknown TAID argument(s) {sorted(unknown)}; allowed: {sorted(TAID_PRESETS[preset])}"
        )
    return {**TAID_PRESETS[preset], **overrides}


class TAIDEncoder(nn.Module):
    """One ×s encoder: HR (B,3,H,W) in [0,1] -> LR (B,3,H/s,W/s); H, W multiples of s."""

    def __init__(
        self,
        scale: int,
        n_blocks: int = 4,
        n_feats: int = 32,
        res_scale: float = 1.0,
        skip: str = "bicubic",
    ) -> None:
        super().__init__()
        if skip not in SKIPS:
            raise ConfigError(f"TAID skip must be one of {SKIPS}, got {skip!r}")
        self.scale = scale
        self.skip = skip
        self.sub_mean = MeanShift(1.0, sign=-1)
        self.add_mean = MeanShift(1.0, sign=1)
        self.head = conv3x3(3, n_feats)
        down: list[nn.Module] = []
        for p in upsample_factors(scale):
            down += [nn.PixelUnshuffle(p), nn.Conv2d(p * p * n_feats, n_feats, 1), nn.ReLU()]
        self.down = nn.Sequential(*down)
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_blocks)], conv3x3(n_feats, n_feats)
        )
        self.tail = conv3x3(n_feats, 3)

    def _base(self, hr: torch.Tensor) -> torch.Tensor:
        if self.skip == "bicubic":
            return bicubic_downscale(hr, self.scale)
        if self.skip == "area":
            return F.avg_pool2d(hr, self.scale)
        return self.add_mean(torch.zeros_like(hr[..., :: self.scale, :: self.scale]))

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        if hr.ndim != 4 or hr.shape[1] != 3:
            raise ValueError(
                f"TAID encoder expects an RGB batch (B,3,H,W), got shape {tuple(hr.shape)}"
            )
        H, W = hr.shape[-2:]
        if H % self.scale or W % self.scale:
            raise ValueError(
                f"TAID ×{self.scale} encoder needs HR height and width that are multiples of "
                f"{self.scale}, got shape {tuple(hr.shape)}"
            )
        x = self.down(self.head(self.sub_mean(hr)))
        x = x + self.body(x)
        return self.tail(x) + self._base(hr)


class TAIDDownscaler(Downscaler):
    """TAID downscaler: HR (B,3,H,W) in [0,1] -> LR (B,3,H/s,W/s) (not quantised).

    Its regulariser is the paper's guidance towards bicubic LR, ``guidance`` =
    L1(LR, bicubic(HR)) with LR the quantised image the decoder sees; in recursive mode the mean
    over levels of L1(LR_i, bicubic(HR, 2^i)), intermediate LRs on the 8-bit grid.

    Args:
        scale: downscaling factor (power of 2 or 3; power of 2 when ``recursive``).
        preset: sizes from :data:`TAID_PRESETS` (``tiny`` or ``base``).
        recursive: apply a ×2 encoder log2(s) times instead of one ×s network.
        share_weights: in recursive mode, one ×2 encoder for all levels (else one per level).
        skip: global skip of each encoder, ``"bicubic"``, ``"area"`` or ``"none"``.
        **overrides: ``n_blocks``, ``n_feats``, ``res_scale``.
    """

    regularizer_names = ("guidance",)

    def __init__(
        self,
        scale: int,
        preset: str = "tiny",
        recursive: bool = False,
        share_weights: bool = True,
        skip: str = "bicubic",
        **overrides: Any,
    ) -> None:
        super().__init__(scale)
        cfg = resolve_preset(preset, overrides)
        step, levels = _levels(scale, recursive)
        self.recursive = recursive
        nets = [TAIDEncoder(step, skip=skip, **cfg) for _ in range(1 if share_weights else levels)]
        self.net = Recursion(nets, levels, self._round_level, record=recursive)

    def _round_level(self, lr: torch.Tensor) -> torch.Tensor:
        return self.quantizer(lr)

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        H, W = hr.shape[-2:]
        if H % self.scale or W % self.scale:
            raise ValueError(
                f"TAID ×{self.scale} downscaler needs HR height and width that are multiples of "
                f"{self.scale}, got shape {tuple(hr.shape)}"
            )
        return self.net(hr)

    def unrounded_intermediates(self) -> list[torch.Tensor]:
        """Recursive mode: the intermediate LRs of the last training forward, before rounding."""
        return list(self.net.unmapped)

    def regularizers(self, hr: torch.Tensor, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """``guidance``: L1 between ``lr`` (quantised) and the MATLAB-bicubic LR of ``hr``; in
        recursive mode averaged over the levels of the last forward, level i against bicubic(HR, 2^i)."""
        outputs, self.net.outputs = self.net.outputs, []
        self.net.unmapped = []
        if not self.recursive or not outputs:
            return {"guidance": taid_guidance_loss(lr, hr, self.scale)}
        outputs[-1] = lr
        terms = [taid_guidance_loss(out, hr, 2 ** (i + 1)) for i, out in enumerate(outputs)]
        return {"guidance": sum(terms) / len(terms)}


class TAIDUpscaler(nn.Module):
    """TAID upscaler (decoder): LR (B,3,h,w) in [0,1] -> SR (B,3,h*s,w*s); EDSR-style.

    Same arguments as :class:`TAIDDownscaler` except ``skip`` (the decoder is plain EDSR).
    """

    def __init__(
        self,
        scale: int,
        preset: str = "tiny",
        recursive: bool = False,
        share_weights: bool = True,
        **overrides: Any,
    ) -> None:
        super().__init__()
        cfg = resolve_preset(preset, overrides)
        step, levels = _levels(scale, recursive)
        self.scale, self.recursive = scale, recursive
        nets = [EDSR(step, **cfg) for _ in range(1 if share_weights else levels)]
        self.net = Recursion(nets, levels, between_levels_clamped)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.net(lr)
