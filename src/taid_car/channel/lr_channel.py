"""The LR channel: what happens to the LR between the downscaler and the upscaler, one object
owned by the pair (config group ``channel``).

Every channel first rounds the LR to the 8-bit grid with the run's
:class:`~taid_car.models.quantize.Quantizer` (its gradient rules), as a saved 8-bit image holds
it, and then stores it:

* ``png`` (the default): losslessly; the LR is the 8-bit LR.
* ``jpeg``: JPEG at ``quality`` (1..100) with a fixed, recorded chroma ``subsampling``. At
  evaluation it is Pillow's libjpeg (:mod:`taid_car.channel.codecs`). In training, ``train_rule``
  ``ste`` runs that real codec forward with an identity gradient (IRN's journal version), ``diff``
  a differentiable JPEG (:mod:`taid_car.channel.diff_jpeg`). A training ``quality`` may be a range
  ``(low, high)``, drawn per batch, for a platform whose quality is unknown.
* ``webp``: lossy WebP at ``quality`` (0..100), evaluation only.

:meth:`LRChannel.train` is the training forward (differentiable); :meth:`LRChannel.code` the
evaluation's real codec, which also gives the rate (bits of each encoded LR). Both take the
downscaler's unrounded LR, (B, C, h, w) float, C = 3 or 1 (a colorization's gray).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from taid_car.channel import codecs
from taid_car.errors import ConfigError
from taid_car.models.quantize import Quantizer

__all__ = [
    "CHANNELS",
    "TRAIN_RULES",
    "Coded",
    "JPEGChannel",
    "LRChannel",
    "PNGChannel",
    "WebPChannel",
    "build_channel",
]

TRAIN_RULES = ("ste", "diff")


@dataclass
class Coded:
    """An LR batch after the real codec: ``lr`` (B, C, h, w) float32 on the 8-bit grid, as the
    upscaler gets it, and ``bits`` (B,) float64, the size of each encoded file."""

    lr: torch.Tensor
    bits: torch.Tensor

    def bits_per_pixel(self) -> torch.Tensor:
        """(B,) float64: bits per LR pixel."""
        return self.bits / (self.lr.shape[-2] * self.lr.shape[-1])


@dataclass(frozen=True)
class LRChannel:
    """Base: the 8-bit rounding every channel starts with (``quantizer``)."""

    quantizer: Quantizer = field(default_factory=Quantizer)
    name = "channel"
    codec = "png"

    def round(self, lr: torch.Tensor) -> torch.Tensor:
        """The 8-bit LR (forward exact; the quantiser's gradient rules)."""
        return self.quantizer(lr)

    def train(self, lr: torch.Tensor) -> torch.Tensor:
        """Training forward: the LR the upscaler learns from, differentiable."""
        raise NotImplementedError

    @torch.no_grad()
    def code(self, lr: torch.Tensor) -> Coded:
        """Evaluation: the LR rounded to 8 bit and through the real codec, with its size."""
        return Coded(*codecs.CODECS[self.codec](self.round(lr).detach(), **self._codec_options()))

    def _codec_options(self) -> dict:
        return {}

    def record(self) -> dict:
        """What a results row records of the channel: ``channel``, ``quality``, ``subsampling``."""
        return {"channel": self.name, "quality": None, "subsampling": None}

    def at_quality(self, quality: int) -> LRChannel:
        """The same channel at another quality (a lossless one has none: itself)."""
        return self


@dataclass(frozen=True)
class PNGChannel(LRChannel):
    """Lossless: the LR is the 8-bit LR; the rate is its PNG's size."""

    name = "png"
    codec = "png"

    def train(self, lr: torch.Tensor) -> torch.Tensor:
        return self.round(lr)

    @torch.no_grad()
    def code(self, lr: torch.Tensor) -> Coded:
        rounded = self.round(lr).detach()
        _, bits = codecs.png_roundtrip(rounded)  # lossless: the decode is the input
        return Coded(rounded.float(), bits)


def _check_quality(quality, low: int, high: int, key: str) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not low <= quality <= high:
        raise ConfigError(f"{key}={quality!r}: a quality is an integer in {low}..{high}")
    return quality


@dataclass(frozen=True)
class JPEGChannel(LRChannel):
    """JPEG at ``quality`` (an int 1..100, or a training range ``(low, high)``), chroma
    ``subsampling``, training rule ``train_rule`` (``ste`` or ``diff``)."""

    quality: int | tuple[int, int] = 75
    subsampling: str = "4:2:0"
    train_rule: str = "ste"
    name = "jpeg"
    codec = "jpeg"

    def __post_init__(self) -> None:
        if isinstance(self.quality, (tuple, list)):
            if len(self.quality) != 2:
                raise ConfigError(f"channel.quality={list(self.quality)}: a range is [low, high]")
            low, high = (_check_quality(q, 1, 100, "channel.quality") for q in self.quality)
            if low > high:
                raise ConfigError(f"channel.quality={list(self.quality)}: a range is [low, high] with low <= high")
            object.__setattr__(self, "quality", (low, high))
        else:
            _check_quality(self.quality, 1, 100, "channel.quality")
        if self.subsampling not in codecs.SUBSAMPLINGS:
            raise ConfigError(f"channel.subsampling={self.subsampling!r}: one of {', '.join(codecs.SUBSAMPLINGS)}")
        if self.train_rule not in TRAIN_RULES:
            raise ConfigError(f"channel.train_rule={self.train_rule!r}: one of {', '.join(TRAIN_RULES)}")

    @property
    def is_range(self) -> bool:
        return isinstance(self.quality, tuple)

    def draw_quality(self) -> int:
        """The quality of this training batch: the quality, or one drawn uniformly from the range
        (Python's ``random``, seeded and resumed with the run)."""
        return random.randint(*self.quality) if self.is_range else self.quality

    def train(self, lr: torch.Tensor) -> torch.Tensor:
        rounded = self.round(lr)
        quality = self.draw_quality()
        if self.train_rule == "diff":
            from taid_car.channel.diff_jpeg import diff_jpeg

            return diff_jpeg(rounded, quality, self.subsampling)
        coded, _ = codecs.jpeg_roundtrip(rounded.detach(), quality, self.subsampling)
        return rounded + (coded.to(rounded.dtype) - rounded).detach()  # real JPEG forward, identity backward

    def _codec_options(self) -> dict:
        if self.is_range:
            raise ConfigError(f"channel.quality={list(self.quality)} is a training range: evaluation codes at one "
                              "quality (channel.test_qualities=[...] scores several)")
        return {"quality": self.quality, "subsampling": self.subsampling}

    def record(self) -> dict:
        quality = list(self.quality) if self.is_range else self.quality
        return {"channel": self.name, "quality": quality, "subsampling": self.subsampling}

    def at_quality(self, quality: int) -> JPEGChannel:
        return replace(self, quality=_check_quality(quality, 1, 100, "channel quality"))


@dataclass(frozen=True)
class WebPChannel(LRChannel):
    """Lossy WebP at ``quality`` (0..100): evaluation only."""

    quality: int = 75
    name = "webp"
    codec = "webp"

    def __post_init__(self) -> None:
        _check_quality(self.quality, 0, 100, "channel.quality")

    def train(self, lr: torch.Tensor) -> torch.Tensor:
        raise ConfigError("channel=webp is for evaluation only (no training rule): train through png or jpeg")

    def _codec_options(self) -> dict:
        return {"quality": self.quality}

    def record(self) -> dict:
        return {"channel": self.name, "quality": self.quality, "subsampling": None}

    def at_quality(self, quality: int) -> WebPChannel:
        return replace(self, quality=_check_quality(quality, 0, 100, "channel quality"))


#: channel name -> class
CHANNELS = {"png": PNGChannel, "jpeg": JPEGChannel, "webp": WebPChannel}


def build_channel(node: Mapping | None, quantizer: Quantizer | None = None) -> LRChannel:
    """The channel a ``channel`` config node describes (``name`` png | jpeg | webp, ``quality``,
    ``subsampling``, ``train_rule``; ``test_qualities`` is the scoring's, not the channel's);
    None or no node: ``png``. ``quantizer``: the run's 8-bit rounding rules."""
    node = dict(node or {})
    name = node.pop("name", "png")
    if name not in CHANNELS:
        raise ConfigError(f"channel={name!r}: one of {', '.join(CHANNELS)}")
    node.pop("test_qualities", None)
    node.pop("_target_", None)
    if isinstance(node.get("quality"), Sequence) and not isinstance(node.get("quality"), str):
        node["quality"] = tuple(node["quality"])
    allowed = {"png": set(), "jpeg": {"quality", "subsampling", "train_rule"}, "webp": {"quality"}}[name]
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise ConfigError(f"channel={name} takes no {', '.join('channel.' + k for k in unknown)}")
    return CHANNELS[name](quantizer=quantizer or Quantizer(), **node)
