"""8-bit quantisation of the LR image, with a gradient for end-to-end training.

The forward pass always rounds to the 256 levels an 8-bit PNG holds, ``round(clamp(x,0,1)·255)/255``,
so the upscaler never sees values a saved LR file could not carry. Only the backward pass differs.

The clamp keeps its own gradient: an input outside [0, 1] gets none through the quantiser, since
moving it a little changes nothing the upscaler sees. The rounding alone is replaced by

* ``ste``: straight-through (identity gradient), as IRN does;
* ``soft``: the gradient of soft-round (Agustsson & Theis, NeurIPS 2020),
  ``s(x) = floor(x) + 1/2 + tanh(a r) / (2 tanh(a/2))`` with ``r = x - floor(x) - 1/2``,
  on the 0..255 scale; ``a`` -> 0 approaches the identity, large ``a`` the hard round.

Pair it with :func:`out_of_range_penalty` (loss term ``out_of_range``), which pulls values that
left [0, 1] back. ``through_clamp=True`` is the suite's rule before that: the clamp was not
differentiated either, so out-of-range values got gradients as if they were inside and could
drift (the colour λ=0.001 and ×4 recursion runs of ``experiments/taid_color``/``taid_extreme``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from taid_car.errors import ConfigError

QUANTIZE_MODES = ("ste", "soft")


def soft_round(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Differentiable approximation of ``round`` (any range); ``alpha > 0`` sets its sharpness."""
    floor = torch.floor(x).detach()
    r = x - floor - 0.5
    return floor + 0.5 + torch.tanh(alpha * r) / (2 * math.tanh(alpha / 2))


def quantize_8bit(
    image: torch.Tensor, mode: str = "ste", alpha: float = 4.0, through_clamp: bool = False
) -> torch.Tensor:
    """Round a [0,1] image to 8 bit: forward ``round(clamp(x,0,1)*255)/255`` exactly.

    Args:
        image: any shape, float, nominal range [0, 1] (clamped).
        mode: backward rule of the rounding, ``"ste"`` or ``"soft"`` (see module docstring).
        alpha: soft-round sharpness for ``mode="soft"``.
        through_clamp: also pass the gradient straight through the clamp (the old rule: inputs
            outside [0, 1] get a gradient as if inside). Default: the clamp's own gradient, 0 there.
    """
    if mode not in QUANTIZE_MODES:
        raise ConfigError(f"model.quantize={mode!r}: must be one of {', '.join(QUANTIZE_MODES)}")
    clamped = image.clamp(0, 1)
    hard = torch.round(clamped * 255) / 255
    inner = image if through_clamp else clamped
    surrogate = inner if mode == "ste" else soft_round(inner * 255, alpha) / 255
    return surrogate + (hard - surrogate).detach()


@dataclass(frozen=True)
class Quantizer:
    """:func:`quantize_8bit` with its settings fixed: one per run, also used between the levels
    of a recursion. ``Quantizer()(x)`` is the default rule."""

    mode: str = "ste"
    through_clamp: bool = False
    alpha: float = 4.0

    def __post_init__(self) -> None:
        quantize_8bit(torch.zeros(1), self.mode)  # a bad mode fails when configured, not mid-run

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return quantize_8bit(image, self.mode, self.alpha, self.through_clamp)


def out_of_range_penalty(images: Iterable[torch.Tensor]) -> torch.Tensor:
    """Loss term ``out_of_range``: mean of ``relu(x - 1) + relu(-x)`` over the unrounded images
    about to be quantised (each image's mean, averaged over images). 0 when all lie in [0, 1];
    its gradient is ±1/N per value outside, 0 inside."""
    terms = [(F.relu(x - 1) + F.relu(-x)).mean() for x in images]
    if not terms:
        raise ValueError("out_of_range_penalty needs at least one image")
    return sum(terms) / len(terms)
