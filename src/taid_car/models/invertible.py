"""Building blocks of invertible rescaling networks, shared by IRN (:mod:`taid_car.models.irn`)
and the methods built from its parts (SAIN).

Written from the IRN authors' code (pkuxmq/Invertible-Image-Rescaling, ``Inv_arch.py`` and
``Subnet_constructor.py``), with their module and parameter names, so a network assembled from
these blocks keeps the authors' state-dict keys (``haar_weights``; ``F``, ``G``, ``H`` and
``conv1``..``conv5`` inside each coupling block):

* :class:`HaarDownsampling`: the 2×2 Haar transform per channel, (B,C,H,W) -> (B,4C,H/2,W/2),
  channels ordered [all low-pass, all horizontal, all vertical, all diagonal] (each /4 on the
  forward); exactly invertible (``rev=True``). Its fixed weights are a buffer ``haar_weights``.
* :class:`InvBlockExp`: an affine coupling block on a split (x1: ``split`` channels, the LR part;
  x2: the rest). Forward ``y1 = x1 + F(x2)``, ``s = clamp·(2σ(H(y1)) − 1)``,
  ``y2 = x2·exp(s) + G(y1)``; the inverse undoes it exactly. ``clamp`` = 1. (SAIN's
  "vanilla" block is the same block.)
* :class:`DenseBlock`: the subnets F, G, H: five 3×3 convolutions with dense connections,
  growth ``gc`` = 32, LeakyReLU 0.2; Xavier-normal init ×0.1, the last convolution zero.

Also the two helpers such a method's losses and sizes need: :func:`haar_stages` (a power-of-two
scale as its number of Haar steps) and :func:`per_hr_value` (the authors' per-image sums on the
scale of the suite's mean L1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from taid_car.errors import ConfigError


def _haar_filters(channels: int) -> torch.Tensor:
    """(4C,1,2,2): low-pass, horizontal, vertical and diagonal 2×2 Haar filters, per channel."""
    w = torch.ones(4, 1, 2, 2)
    w[1, 0, 0, 1] = w[1, 0, 1, 1] = -1
    w[2, 0, 1, 0] = w[2, 0, 1, 1] = -1
    w[3, 0, 1, 0] = w[3, 0, 0, 1] = -1
    return torch.cat([w] * channels, 0)


class HaarDownsampling(nn.Module):
    """(B,C,H,W) <-> (B,4C,H/2,W/2), the orthogonal-up-to-scale 2×2 Haar transform."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("haar_weights", _haar_filters(channels))

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        b, _, h, w = x.shape
        if not rev:
            out = F.conv2d(x, self.haar_weights, stride=2, groups=self.channels) / 4.0
            out = out.reshape(b, self.channels, 4, h // 2, w // 2).transpose(1, 2)
            return out.reshape(b, self.channels * 4, h // 2, w // 2)
        out = x.reshape(b, 4, self.channels, h, w).transpose(1, 2).reshape(b, self.channels * 4, h, w)
        return F.conv_transpose2d(out, self.haar_weights, stride=2, groups=self.channels)


class DenseBlock(nn.Module):
    """The coupling blocks' subnet: (B,in,H,W) -> (B,out,H,W), five densely connected 3×3 convolutions."""

    def __init__(self, channel_in: int, channel_out: int, gc: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channel_in, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(channel_in + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(channel_in + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(channel_in + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(channel_in + 4 * gc, channel_out, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            nn.init.xavier_normal_(conv.weight)
            conv.weight.data *= 0.1
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv5.weight)
        nn.init.zeros_(self.conv5.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        return self.conv5(torch.cat((x, x1, x2, x3, x4), 1))


class InvBlockExp(nn.Module):
    """Affine coupling on (x1: ``split`` channels | x2: the rest), exactly invertible."""

    def __init__(self, channels: int, split: int, gc: int = 32, clamp: float = 1.0) -> None:
        super().__init__()
        self.split_len1, self.split_len2 = split, channels - split
        self.clamp = clamp
        self.F = DenseBlock(self.split_len2, self.split_len1, gc)
        self.G = DenseBlock(self.split_len1, self.split_len2, gc)
        self.H = DenseBlock(self.split_len1, self.split_len2, gc)

    def _scale(self, y1: torch.Tensor) -> torch.Tensor:
        return self.clamp * (torch.sigmoid(self.H(y1)) * 2 - 1)

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        x1, x2 = x[:, : self.split_len1], x[:, self.split_len1 :]
        if not rev:
            y1 = x1 + self.F(x2)
            y2 = x2 * torch.exp(self._scale(y1)) + self.G(y1)
        else:
            y2 = (x2 - self.G(x1)) / torch.exp(self._scale(x1))
            y1 = x1 - self.F(y2)
        return torch.cat((y1, y2), 1)


def haar_stages(scale: int, method: str) -> int:
    """log2(scale) for a power-of-two ``scale`` >= 2 (one Haar step per ×2); a
    :class:`ConfigError` (a ValueError) naming ``scale`` and ``method`` otherwise."""
    stages = round(math.log2(scale)) if scale >= 2 else 0
    if stages < 1 or 2**stages != scale:
        raise ConfigError(f"scale={scale}: {method} works at powers of two (x2, x4, x8), e.g. scale=4")
    return stages


def per_hr_value(per_image_sum: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Per-image sums (B,), averaged over the batch, divided by the HR values per image (3·H·W
    of ``hr`` (B,3,H,W)): the scale of the Rescaler's mean L1, so the authors' loss weights
    carry over unchanged."""
    return per_image_sum.mean() / hr[0].numel()
