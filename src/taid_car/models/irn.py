"""IRN's invertible network (Xiao et al., "Invertible Image Rescaling", ECCV 2020).

The authors' design (pkuxmq/Invertible-Image-Rescaling, ``codes/models/modules/Inv_arch.py`` and
``Subnet_constructor.py``), written here from their description and code, with their module and
parameter names, so their released checkpoints load strictly
(:func:`~taid_car.models.checkpoints.load_authors_checkpoint`). Its
building blocks (Haar transform, affine coupling blocks, dense subnets) are the shared ones of
:mod:`taid_car.models.invertible`:

* :class:`InvRescaleNet`: log2(s) stages of [Haar, ``blocks`` coupling blocks]; forward
  HR (B,3,H,W) -> (B,3·s²,H/s,W/s), channels [LR (3) | z (3s²−3)]; ``rev=True`` maps
  [LR | z] back to HR.

Shapes: H and W multiples of s. Values: HR in [0,1]; the LR part is not clamped or rounded here.

:class:`IRNDownscaler` (``model=irn``) is the network's forward pass as a downscaler, with the
authors' losses as its regularisers; its ``inverse()``, :class:`IRNUpscaler`, is the tied
upscaler (``upscaler=irn_inverse``: one network, shared weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from taid_car.errors import ConfigError
from taid_car.models.downscaler import Downscaler
from taid_car.models.invertible import HaarDownsampling, InvBlockExp, haar_stages, per_hr_value
from taid_car.ops.imresize import bicubic_downscale

#: coupling blocks per ×2 stage and growth channels: the authors' (8, 32) and a CPU-sized one that
#: keeps their depth and narrows the subnets. Depth is what lets the inverse ignore z ~ N(0, I):
#: each block scales the z part by at most e^clamp = e, so 2 blocks per stage (growth 16, tried
#: first) left z's noise in the SR (x2 T91 hold-out 18.8 dB after 2000 steps, below bicubic).
IRN_PRESETS: dict[str, dict] = {
    "paper": {"blocks": 8, "gc": 32},
    "tiny": {"blocks": 8, "gc": 8},
}


class InvRescaleNet(nn.Module):
    """IRN's network at ×2^``stages``: ``operations`` = per stage [Haar, ``blocks`` × coupling].

    Args:
        stages: log2 of the scale (1: ×2, 2: ×4, 3: ×8).
        blocks: coupling blocks per stage (an int, or one per stage: the authors' ``block_num``).
        gc: growth channels of the dense subnets.
        channels: image channels (3), also the LR part's channels.
    """

    def __init__(self, stages: int, blocks: int | Sequence[int] = 8, gc: int = 32, channels: int = 3) -> None:
        super().__init__()
        per_stage = [int(blocks)] * stages if isinstance(blocks, int) else [int(b) for b in blocks]
        if len(per_stage) != stages or stages < 1:
            raise ValueError(f"InvRescaleNet: {stages} stage(s) need {stages} block counts, got {per_stage}")
        operations: list[nn.Module] = []
        current = channels
        for count in per_stage:
            operations.append(HaarDownsampling(current))
            current *= 4
            operations += [InvBlockExp(current, channels, gc) for _ in range(count)]
        self.operations = nn.ModuleList(operations)
        self.scale, self.channels = 2**stages, channels

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        """``rev=False``: HR (B,3,H,W) -> (B,3s²,H/s,W/s) [LR | z]; ``rev=True``: the inverse."""
        ops = reversed(self.operations) if rev else self.operations
        for op in ops:
            x = op(x, rev)
        return x


def stages_of(scale: int) -> int:
    """log2(scale) for a power-of-two ``scale`` >= 2; a :class:`ConfigError` (a ValueError)
    naming ``scale`` otherwise."""
    return haar_stages(scale, "IRN")


class IRNDownscaler(Downscaler):
    """IRN's forward pass as a downscaler: HR (B,3,H,W) in [0,1] -> LR (B,3,H/s,W/s) (the first 3
    channels of :class:`InvRescaleNet`; not rounded here). Its :meth:`inverse` is the tied
    upscaler (``upscaler=irn_inverse``).

    Regularisers, the authors' losses on the scale of the Rescaler's mean L1 (their per-image sums
    divided by 3·H·W; their weights, scale² and 1, then apply unchanged):

    * ``guidance``: Σ (LR − bicubic LR)² of the *unrounded* LR (their ``l_forw_fit``, L2);
    * ``z_distribution``: Σ z² (their ``l_forw_ce``: z pushed towards N(0, I)).

    Args:
        scale: 2, 4 or 8.
        preset: ``tiny`` (8 blocks per ×2 stage, growth 8) or ``paper`` (8, 32).
        blocks, gc: override the preset's coupling blocks per stage and growth channels.
        gaussian_scale: standard deviation of the z the inverse draws (the authors'
            ``gaussian_scale``, 1 in their training and test; 0 gives z = 0).
    """

    regularizer_names = ("guidance", "z_distribution")

    def __init__(self, scale: int, preset: str = "tiny", blocks: int | Sequence[int] | None = None,
                 gc: int | None = None, gaussian_scale: float = 1.0) -> None:
        super().__init__(scale)
        if not gaussian_scale >= 0:
            raise ConfigError(f"IRN gaussian_scale={gaussian_scale!r}: the std of z, >= 0")
        self.gaussian_scale = float(gaussian_scale)
        if preset not in IRN_PRESETS:
            raise ConfigError(f"IRN preset={preset!r}: one of {', '.join(IRN_PRESETS)}")
        sizes = IRN_PRESETS[preset]
        self.net = InvRescaleNet(stages_of(scale), sizes["blocks"] if blocks is None else blocks,
                                 sizes["gc"] if gc is None else int(gc))
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        height, width = hr.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"IRN x{self.scale} needs HR sides that are multiples of {self.scale}, "
                             f"got shape {tuple(hr.shape)}")
        out = self.net(hr)
        lr, z = out[:, :3], out[:, 3:]
        self._last = (lr, z) if torch.is_grad_enabled() else None
        return lr

    def regularizers(self, hr: torch.Tensor, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """``guidance`` and ``z_distribution`` of the last training forward (see the class)."""
        if self._last is None:
            raise RuntimeError("IRNDownscaler.regularizers needs a forward with gradients first")
        raw, z = self._last
        self._last = None
        with torch.no_grad():
            target = bicubic_downscale(hr, self.scale)
        return {"guidance": per_hr_value(((raw - target) ** 2).sum(dim=(1, 2, 3)), hr),
                "z_distribution": per_hr_value((z**2).sum(dim=(1, 2, 3)), hr)}

    def inverse(self) -> IRNUpscaler:
        """The tied upscaler: this network run backwards (it shares every weight)."""
        return IRNUpscaler(self)


class IRNUpscaler(nn.Module):
    """IRN's inverse pass: LR (B,3,h,w) -> SR (B,3,h·s,w·s), with z ~ N(0, I) drawn for the
    high-frequency part (times ``gaussian_scale``), as the authors do. Training draws z from the global generator (a
    resumed run draws what the run left alone would); evaluation (``eval()``) draws it from a
    generator seeded 0 for every call, so a score does not change between two runs of the same
    checkpoint."""

    def __init__(self, downscaler: IRNDownscaler) -> None:
        super().__init__()
        self.downscaler = downscaler  # a submodule: the same weights, not a copy
        self.scale = downscaler.scale
        self.gaussian_scale = downscaler.gaussian_scale

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        b, c, h, w = lr.shape
        shape = (b, c * (self.scale**2 - 1), h, w)
        if self.training:
            z = torch.randn(shape, device=lr.device, dtype=lr.dtype)
        else:
            gen = torch.Generator(device=lr.device).manual_seed(0)
            z = torch.randn(shape, generator=gen, device=lr.device, dtype=lr.dtype)
        return self.downscaler.net(torch.cat([lr, self.gaussian_scale * z], 1), rev=True)[:, :3]
