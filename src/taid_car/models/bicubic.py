"""Fixed MATLAB-bicubic downscaler and upscaler (the baseline both papers beat)."""

from __future__ import annotations

import torch
from torch import nn

from taid_car.models.downscaler import Downscaler
from taid_car.ops.imresize import bicubic_downscale, bicubic_upscale


class BicubicDownscaler(Downscaler):
    """HR (B,C,H,W) in [0,1] -> LR (B,C,H/s,W/s) by MATLAB ``imresize`` (no parameters, no
    regularisers, HR sides multiples of the scale)."""

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        return bicubic_downscale(hr, self.scale)


class BicubicUpscaler(nn.Module):
    """LR (B,C,h,w) -> SR (B,C,h*s,w*s) by MATLAB ``imresize`` (no parameters)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = int(scale)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return bicubic_upscale(lr, self.scale)
