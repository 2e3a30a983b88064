"""8-bit quantisation of the LR image, with a gradient for end-to-end training.

The forward pass always rounds to the 256 levels an 8-bit PNG holds, so the upscaler never
sees values a saved LR file could not carry. Only the backward pass differs:

* ``ste``: straight-through (identity gradient), as IRN does;
* ``soft``: the gradient of soft-round (Agustsson & Theis, NeurIPS 2020),
  ``s(x) = floor(x) + 1/2 + tanh(a r) / (2 tanh(a/2))`` with ``r = x - floor(x) - 1/2``,
  on the 0..255 scale; ``a`` -> 0 approaches the identity, large ``a`` the hard round.
"""

from __future__ import annotations

import math

import torch

QUANTIZE_MODES = ("ste", "soft")


def soft_round(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Differentiable approximation of ``round`` (any range); ``alpha > 0`` sets its sharpness."""
    floor = torch.floor(x).detach()
    r = x - floor - 0.5
    return floor + 0.5 + torch.tanh(alpha * r) / (2 * math.tanh(alpha / 2))


def quantize_8bit(image: torch.Tensor, mode: str = "ste", alpha: float = 4.0) -> torch.Tensor:
    """Round a [0,1] image to 8 bit: forward ``round(clamp(x,0,1)*255)/255`` exactly.

    Args:
        image: any shape, float, nominal range [0, 1] (clamped).
        mode: backward rule, ``"ste"`` or ``"soft"`` (see module docstring).
        alpha: soft-round sharpness for ``mode="soft"``.
    """
    hard = torch.round(image.clamp(0, 1) * 255) / 255
    # The clamp is not differentiated (as in IRN): out-of-range values still get a gradient.
    if mode == "ste":
        surrogate = image
    elif mode == "soft":
        surrogate = soft_round(image * 255, alpha) / 255
    else:
        raise ValueError(f"quantize mode must be one of {QUANTIZE_MODES}, got {mode!r}")
    return surrogate + (hard - surrogate).detach()
