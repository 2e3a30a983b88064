"""8-bit quantisation of the LR image, with a gradient for end-to-end training."""

from __future__ import annotations

import torch


def quantize_8bit(image: torch.Tensor) -> torch.Tensor:
    """Round a [0,1] image to the 256 levels an 8-bit PNG holds; straight-through gradient.

    Forward: ``round(clamp(x, 0, 1) * 255) / 255`` (exactly what saving and reloading a PNG
    gives). Backward: identity (the gradient of ``x`` passes unchanged, as in IRN).
    """
    quantized = torch.round(image.clamp(0, 1) * 255) / 255
    return image + (quantized - image).detach()
