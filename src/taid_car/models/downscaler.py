"""The contract every downscaler keeps (bicubic, CAR, TAID, and any added later).

* ``forward(hr) -> lr``: HR (B,3,H,W) in [0,1] -> LR (B,3,H/s,W/s), float, *not* quantised
  (the caller rounds it to the 8-bit grid).
* ``regularizers(hr, lr) -> dict[str, Tensor]``: the model's own training terms (scalars),
  named in :attr:`regularizer_names`. ``lr`` is the quantised LR the upscaler sees, ``hr`` the
  batch just passed to ``forward``. CAR returns its offset terms, TAID its bicubic guidance,
  bicubic none. The LightningModule only weights and sums them.
* ``quantizer``: the rule that rounds LRs to 8 bit (:class:`~taid_car.models.quantize.Quantizer`).
  The training module sets its own here, so a downscaler that rounds images inside (a recursion's
  intermediate levels) rounds them alike; ``unrounded_intermediates()`` returns those images of the
  last training forward before rounding (none by default), for the ``out_of_range`` penalty.
* ``channel``: the LR channel the pair is trained through (:mod:`taid_car.channel`). The
  training module sets the run's here, as it sets ``quantizer``, for a method whose own losses
  need the codec itself (a real codec's decode as a target: ``channel.code``); until set, the lossless
  png channel.
* ``size_multiple``: HR height and width must be multiples of this (CAR: its kernel net's
  stride; otherwise the scale). Data crops come from it, not from a config key.
* ``minimum_side()``: (the smallest HR side in px it takes, a multiple of the crop; why, or ""
  when that is just the crop multiple). CAR needs twice its kernel net's stride; a pair applied
  n times needs its unit's minimum at the last level. Commands check images against it before
  anything runs.
* ``inverse()``: the *tied* upscaler, an ``nn.Module`` LR -> SR that shares this downscaler's
  weights (an invertible network run backwards: IRN), or None, the default: no tied inverse, so
  the pair takes an upscaler of its own. :meth:`Downscaler.has_inverse` answers from the class,
  before anything is built. A method with one is paired with it unless the command line names
  another upscaler (:func:`taid_car.models.pair.pair_with_inverse`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from taid_car.models.quantize import Quantizer
from taid_car.scoring.tasks import RESIZE, Task

if TYPE_CHECKING:  # taid_car.channel imports models.quantize: imported when first needed, not here
    from taid_car.channel import LRChannel


class Downscaler(nn.Module):
    """Base class: an integer ``scale``, no regularisers, HR sides multiples of the scale."""

    #: names of the terms :meth:`regularizers` returns
    regularizer_names: tuple[str, ...] = ()
    #: what the pair is scored as (:mod:`taid_car.scoring.tasks`): ``RESIZE`` (LR vs bicubic LR,
    #: SR vs HR on Y) or ``COLORIZE`` (a gray LR vs plain luma, restored colour vs HR)
    task: Task = RESIZE
    #: channels of the LR it produces (3; 1 for a colour-to-gray encoder)
    out_channels: int = 3
    #: how LRs are rounded to 8 bit, inside the downscaler too (the training module sets its own)
    quantizer: Quantizer = Quantizer()

    #: the run's LR channel once the training module has set it (see :attr:`channel`)
    _channel: LRChannel | None = None

    def __init__(self, scale: int) -> None:
        super().__init__()
        if isinstance(scale, bool) or int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)

    @property
    def channel(self) -> LRChannel:
        """The LR channel the pair is trained through: the run's (set by the training module,
        built with the run's quantiser), else the lossless png channel."""
        if self._channel is None:
            from taid_car.channel import LOSSLESS

            return LOSSLESS
        return self._channel

    @channel.setter
    def channel(self, channel: LRChannel) -> None:
        self._channel = channel

    @property
    def size_multiple(self) -> int:
        """HR sides must be multiples of this many pixels."""
        return self.scale

    def minimum_side(self) -> tuple[int, str]:
        """(smallest HR side in px, why or ""): any multiple of the crop by default."""
        return crop_multiple(self), ""

    def forward(self, hr: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def regularizers(self, hr: torch.Tensor, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training terms of the last ``forward(hr)``, each a scalar; none by default."""
        return {}

    def inverse(self) -> nn.Module | None:
        """The tied upscaler (LR (B,C,h,w) -> SR (B,3,h·s,w·s), sharing this module's weights),
        or None: no tied inverse (the default)."""
        return None

    @classmethod
    def has_inverse(cls) -> bool:
        """Whether this class has a tied inverse (it overrides :meth:`inverse`)."""
        return cls.inverse is not Downscaler.inverse

    def unrounded_intermediates(self) -> list[torch.Tensor]:
        """Images the last training ``forward`` rounded to 8 bit inside, before rounding (e.g. a
        recursion's intermediate LRs); none by default. The output itself is not among them."""
        return []


def crop_multiple(downscaler: Downscaler, modcrop: int | None = None) -> int:
    """HR crop multiple for whole images: ``modcrop`` when set (e.g. one crop for every method of
    a study), else lcm(scale, ``downscaler.size_multiple``). Raises ValueError naming
    ``data.modcrop`` when it is not a multiple of what the downscaler needs."""
    need = math.lcm(downscaler.scale, downscaler.size_multiple)
    if modcrop is None:
        return need
    if int(modcrop) % need:
        raise ValueError(
            f"data.modcrop={modcrop} is not a multiple of {need}, the HR size multiple "
            f"{type(downscaler).__name__} needs at scale {downscaler.scale}"
        )
    return int(modcrop)
