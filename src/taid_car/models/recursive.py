"""Extreme factors by recursion: a ×s pair applied n times gives ×sⁿ (TAD reaches ×128 as ×2⁷).

* Downscaling applies the ×s downscaler n times. Every intermediate LR is rounded to the 8-bit
  grid, as a saved PNG would hold it, by the run's quantiser (``Downscaler.quantizer``: the
  clamp's own gradient, straight-through for the rounding when trained end-to-end); the last one
  is left to the caller, like any downscaler's output. The intermediate LRs are internal: only
  the last, the LR that is stored, goes through the pair's LR channel (:mod:`taid_car.channel`:
  JPEG, say), in training and at evaluation alike.
* Upscaling applies the ×s upscaler n times; the intermediate SR images are clamped to [0, 1]
  (an image's range), not rounded.
* A fixed bicubic downscaler or upscaler is not recursed: the Bicubic LR (or SR) at ×sⁿ is
  MATLAB ``imresize`` at the full factor, the LR every benchmark uses. So "bicubic + a ×2
  upscaler applied n times" sees the standard ×2ⁿ bicubic LR.

:class:`Recursion` is the loop itself (one shared network or one per level); TAID's own
``recursive=true`` mode trains it end-to-end, and :func:`at_scale` applies any trained pair
recursively at test time (``evaluate scales=[...]``, ``rescale --scale``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from taid_car.data.io import smallest_multiple_at_least
from taid_car.errors import ConfigError
from taid_car.models.downscaler import Downscaler, crop_multiple
from taid_car.models.quantize import Quantizer


def recursion_levels(scale: int, unit: int) -> int:
    """n with ``unit ** n == scale`` (n >= 1); ConfigError naming both otherwise."""
    if unit < 2 or scale < unit:
        raise ConfigError(f"x{scale} is not reachable by applying a x{unit} model recursively")
    levels = round(math.log(scale, unit))
    if unit**levels != scale:
        raise ConfigError(
            f"x{scale} is not a power of x{unit}: a x{unit} pair applied n times reaches "
            f"{', '.join(f'x{unit ** n}' for n in range(1, 8))}"
        )
    return levels


#: an intermediate LR as the next level sees it: on the 8-bit grid (the default quantiser)
between_levels_quantized = Quantizer()


def between_levels_clamped(x: torch.Tensor) -> torch.Tensor:
    """An intermediate SR as the next level sees it: clamped to [0, 1]."""
    return x.clamp(0, 1)


class Recursion(nn.Module):
    """``nets`` applied ``levels`` times in sequence: level i uses ``nets[min(i, len - 1)]`` (one
    shared network, or one per level); ``between`` maps each intermediate output (not the last).

    With ``record=True`` the output of every level of the last forward with gradients enabled
    (intermediate ones as the next level saw them) is kept in :attr:`outputs`, for per-level
    regularisers, and the intermediate ones before ``between`` in :attr:`unmapped`; the caller
    clears them. Evaluation (no grad) keeps nothing.
    """

    def __init__(
        self,
        nets: Sequence[nn.Module],
        levels: int,
        between: Callable[[torch.Tensor], torch.Tensor],
        record: bool = False,
    ) -> None:
        super().__init__()
        if levels < 1 or not nets or len(nets) not in (1, levels):
            raise ValueError(f"Recursion needs 1 or {levels} networks for {levels} levels, got {len(nets)}")
        self.levels = int(levels)
        self.nets = nn.ModuleList(nets)
        self.between = between
        self.record = record
        self.outputs: list[torch.Tensor] = []
        self.unmapped: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.outputs, self.unmapped = [], []
        keep = self.record and torch.is_grad_enabled()
        for level in range(self.levels):
            x = self.nets[min(level, len(self.nets) - 1)](x)
            if level < self.levels - 1:
                if keep:
                    self.unmapped.append(x)
                x = self.between(x)
            if keep:
                self.outputs.append(x)
        return x


class RecursiveDownscaler(Downscaler):
    """A trained ×s :class:`Downscaler` applied ``levels`` times at test time:
    HR (B,3,H,W) -> LR (B,C,H/sⁿ,W/sⁿ), float (the caller rounds the last level).

    HR sides must be multiples of ``size_multiple``: what the unit needs at every level. It has
    no regularisers of its own: training a recursion end-to-end is TAID's ``recursive=true``.
    """

    def __init__(self, unit: Downscaler, levels: int) -> None:
        super().__init__(unit.scale**levels)
        self.task = unit.task
        self.out_channels = unit.out_channels
        self.net = Recursion([unit], levels, between_levels_quantized)

    @property
    def unit(self) -> Downscaler:
        return self.net.nets[0]

    @property
    def levels(self) -> int:
        return self.net.levels

    @property
    def size_multiple(self) -> int:
        # level i sees HR / s^i, which must be a multiple of the unit's crop multiple
        return crop_multiple(self.unit) * self.unit.scale ** (self.levels - 1)

    def minimum_side(self) -> tuple[int, str]:
        """The unit's minimum at the last level, which sees HR / s^(levels-1)."""
        unit, levels = self.unit, self.levels
        unit_need, why = unit.minimum_side()
        need = smallest_multiple_at_least(unit_need * unit.scale ** (levels - 1), crop_multiple(self))
        if not why or need <= crop_multiple(self):
            return need, ""
        return need, (f"the x{unit.scale} pair applied {levels} times needs HR sides of at least {need} px: "
                      f"its last level sees HR/{unit.scale ** (levels - 1)}, where {why}")

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        return self.net(hr)


def recursive_upscaler(unit: nn.Module, levels: int) -> nn.Module:
    """A ×s upscaler applied ``levels`` times (intermediate SR clamped to [0, 1])."""
    return Recursion([unit], levels, between_levels_clamped)


def recursive_pair(downscaler: Downscaler, upscaler: nn.Module, scale: int) -> tuple[Downscaler, nn.Module]:
    """(downscaler, upscaler) at ``scale``, a power of the pair's own scale, by recursion.

    Bicubic parts are rebuilt at the full factor instead (see the module docstring); the pair
    itself is returned at its own scale.
    """
    from taid_car.models.bicubic import BicubicDownscaler, BicubicUpscaler

    unit = downscaler.scale
    if scale == unit:
        return downscaler, upscaler
    levels = recursion_levels(scale, unit)
    down = BicubicDownscaler(scale) if type(downscaler) is BicubicDownscaler else RecursiveDownscaler(downscaler, levels)
    up = BicubicUpscaler(scale) if isinstance(upscaler, BicubicUpscaler) else recursive_upscaler(upscaler, levels)
    return down, up


def recursion_label(method: str, unit: int, levels: int) -> str:
    """Table label of a pair applied ``levels`` times, e.g. ``taid & taid_tiny (x2 applied 4 times)``."""
    return method if levels == 1 else f"{method} (x{unit} applied {levels} times)"
