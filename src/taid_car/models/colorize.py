"""TAD's colorization, "downscaling in the channel dimension" (Kim et al., ECCV 2018, Sec. 5).

The same downscaler/upscaler contract, 3 -> 1 -> 3 channels at scale 1 (``task = COLORIZE``):

* :class:`ColorToGray` (encoder, the learned "downscaler"): RGB (B,3,H,W) in [0,1] -> gray
  (B,1,H,W), a residual CNN over the plain gray image, guided towards it by
  ``guidance`` = L1(gray, plain gray) with weight λ (``model.loss_weights.guidance``). The
  pipeline rounds the gray image to the 8-bit grid, as a saved 1-channel PNG holds it.
* :class:`PlainGray` (the task's "bicubic"): the fixed BT.601 luma, no parameters.
* :class:`GrayToColor` (decoder, the "upscaler"): gray (B,1,H,W) -> RGB (B,3,H,W), a residual
  CNN over the gray image replicated to three channels.

``block=b`` (both networks) makes them position-aware: they work on b×b pixel blocks
(pixel-unshuffle in, pixel-shuffle out), so the encoder can write chroma as a fine pattern within
each block and the decoder read it back; with ``block=1`` (stride-1 convolutions, every pixel
alike) a flat coloured area can only become a flat gray. Images whose sides are not multiples of
b are reflection-padded to them and cropped back.

Plain gray is ITU-R BT.601 luma without offset, ``0.299 R + 0.587 G + 0.114 B`` on [0,1] (what
MATLAB ``rgb2gray`` and Pillow's ``convert("L")`` compute; equal to
:func:`taid_car.scoring.metrics.rgb_to_gray` on 8-bit values), not the range-compressed Y of
``rgb2ycbcr`` (16..235), which is not a gray image a viewer shows as such.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from taid_car.models.downscaler import Downscaler
from taid_car.models.edsr import MeanShift, ResBlock, conv3x3
from taid_car.models.taid import resolve_preset
from taid_car.scoring.tasks import COLORIZE

#: ITU-R BT.601 luma weights of R, G, B
BT601 = (0.299, 0.587, 0.114)
GRAY_MEAN = sum(w * m for w, m in zip(BT601, (0.4488, 0.4371, 0.4040)))  # DIV2K mean, as gray


def plain_gray(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB (B,3,H,W) in [0,1] -> (B,1,H,W) in [0,1] (float, not rounded)."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"plain_gray expects an RGB batch (B,3,H,W), got shape {tuple(rgb.shape)}")
    weights = torch.tensor(BT601, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


class _Body(nn.Module):
    """conv3x3 in->F, x + [ResBlock(F) x n, conv3x3], conv3x3 F->out. (B,in,H,W) -> (B,out,H,W)."""

    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.head = conv3x3(in_ch, n_feats)
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_blocks)], conv3x3(n_feats, n_feats)
        )
        self.tail = conv3x3(n_feats, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return self.tail(x + self.body(x))


def _blocked(net: nn.Module, x: torch.Tensor, block: int) -> torch.Tensor:
    """``net`` applied to the b×b pixel blocks of (B,C,H,W) (pixel-unshuffled to (B,C·b²,H/b,W/b),
    shuffled back to (B,C',H,W)); sides that are not multiples of b are reflection-padded first."""
    if block == 1:
        return net(x)
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % block, -width % block
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    y = F.pixel_shuffle(net(F.pixel_unshuffle(x, block)), block)
    return y[..., :height, :width]


def _check_block(block: int) -> int:
    if isinstance(block, bool) or int(block) != block or block < 1:
        from taid_car.errors import ConfigError

        raise ConfigError(f"block={block!r}: the pixel-block side must be a positive integer (1: per pixel, 2: 2x2)")
    return int(block)


class PlainGray(Downscaler):
    """The fixed baseline of colorization: RGB (B,3,H,W) -> BT.601 gray (B,1,H,W); no parameters."""

    task = COLORIZE
    out_channels = 1

    def __init__(self, scale: int = 1) -> None:
        _check_scale(scale)
        super().__init__(1)

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        return plain_gray(hr)


class ColorToGray(Downscaler):
    """Learned colour-to-gray encoder: RGB (B,3,H,W) in [0,1] -> gray (B,1,H,W) (not quantised).

    ``gray = plain_gray(rgb) + net(rgb - mean)``, the net's last layer zero at initialisation, so
    training starts from plain gray (the baseline's LR) exactly; the
    regulariser ``guidance`` is L1(gray, plain gray) of the quantised gray the decoder saw.

    Args:
        scale: must be 1 (the channel dimension is what shrinks).
        preset: ``tiny`` (4 blocks x 32) or ``base`` (16 x 64), as TAID's.
        block: pixel-block side the network works on (1: per pixel; 2: 2x2 blocks, see the module).
        **overrides: ``n_blocks``, ``n_feats``, ``res_scale``.
    """

    task = COLORIZE
    out_channels = 1
    regularizer_names = ("guidance",)

    def __init__(self, scale: int = 1, preset: str = "tiny", block: int = 2, **overrides: Any) -> None:
        _check_scale(scale)
        super().__init__(1)
        self.block = _check_block(block)
        self.sub_mean = MeanShift(1.0, sign=-1)
        self.net = _Body(3 * self.block**2, self.block**2, **resolve_preset(preset, overrides))
        # starts as plain gray exactly (the baseline), and learns what to change from there
        nn.init.zeros_(self.net.tail.weight)
        nn.init.zeros_(self.net.tail.bias)

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        return plain_gray(hr) + _blocked(self.net, self.sub_mean(hr), self.block)

    def regularizers(self, hr: torch.Tensor, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """``guidance``: mean L1 between the quantised gray ``lr`` and the plain gray of ``hr``."""
        with torch.no_grad():
            target = plain_gray(hr)
        return {"guidance": F.l1_loss(lr, target)}


class GrayToColor(nn.Module):
    """Colour-restoring decoder: gray (B,1,H,W) in [0,1] -> RGB (B,3,H,W) (not clamped).

    ``rgb = gray (replicated) + net(gray - mean gray)``: at initialisation close to the gray
    image shown in colour. Same arguments as :class:`ColorToGray`.
    """

    def __init__(self, scale: int = 1, preset: str = "tiny", block: int = 2, **overrides: Any) -> None:
        super().__init__()
        _check_scale(scale)
        self.scale = 1
        self.block = _check_block(block)
        self.net = _Body(self.block**2, 3 * self.block**2, **resolve_preset(preset, overrides))

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        if gray.ndim != 4 or gray.shape[1] != 1:
            raise ValueError(
                f"GrayToColor expects a gray batch (B,1,H,W), got shape {tuple(gray.shape)}"
            )
        return gray.expand(-1, 3, -1, -1) + _blocked(self.net, gray - GRAY_MEAN, self.block)


def _check_scale(scale: int) -> None:
    if scale != 1:
        from taid_car.errors import ConfigError

        raise ConfigError(
            f"colorization maps 3 channels to 1 at the same size: scale must be 1, got scale={scale}"
        )
