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
evaluation's real codec, which also gives the rate (bits of each encoded LR);
:meth:`LRChannel.encode` the files themselves (what ``rescale downscale`` writes). All take the
downscaler's unrounded LR, (B, C, h, w) float, C = 3 or 1 (a colorization's gray).

Where it is used (one channel per pair, every site): the training forward and losses
(``Rescaler``), validation and test, ``evaluate``, ``rescale`` and the Bicubic & Bicubic
reference LR (the same channel), all through :mod:`taid_car.scoring.pipeline`. A recursion's
intermediate LRs are internal: rounded to 8 bit only; the stored LR, the last one, goes through
the channel. Validation and the run's own test row use :meth:`LRChannel.evaluation` (a training
range is evaluated at its middle); :func:`scoring_channels` adds ``test_qualities``.
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
    "LOSSLESS",
    "TRAIN_RULES",
    "Coded",
    "JPEGChannel",
    "LRChannel",
    "PNGChannel",
    "WebPChannel",
    "build_channel",
    "channel_label",
    "check_run_channel",
    "scoring_channels",
]

TRAIN_RULES = ("ste", "diff")


@dataclass
class Coded:
    """An LR batch after the real codec: ``lr`` (B, C, h, w) on the 8-bit grid in the input's
    dtype, as the upscaler gets it, and ``bits`` (B,) float64, the size of each encoded file."""

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
    #: whether it has a training rule (webp: evaluation only)
    trainable = True
    #: the file extension of what it stores (``rescale downscale``)
    suffix = ".png"

    def round(self, lr: torch.Tensor) -> torch.Tensor:
        """The 8-bit LR (forward exact; the quantiser's gradient rules)."""
        return self.quantizer(lr)

    def train(self, lr: torch.Tensor) -> torch.Tensor:
        """Training forward: the LR the upscaler learns from, differentiable."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, lr: torch.Tensor) -> list[bytes]:
        """The file each LR of the batch is stored as: rounded to 8 bit, then encoded."""
        return [codecs.encode(image, self.codec, **self._codec_options()) for image in self.round(lr).detach()]

    @torch.no_grad()
    def code(self, lr: torch.Tensor) -> Coded:
        """Evaluation: the LR rounded to 8 bit and through the real codec (in the LR's dtype), with
        its size."""
        rounded = self.round(lr).detach()
        decoded, bits = codecs.CODECS[self.codec](rounded, **self._codec_options())
        return Coded(decoded.to(rounded.dtype), bits)

    def _codec_options(self) -> dict:
        return {}

    def record(self) -> dict:
        """What a results row records of the channel: ``channel``, ``quality``, ``subsampling``."""
        return {"channel": self.name, "quality": None, "subsampling": None}

    @property
    def label(self) -> str:
        """Short name for tables and logs: ``png``, ``jpeg q75 4:2:0``, ``webp q80``."""
        return channel_label(self.record())

    def at_quality(self, quality: int) -> LRChannel:
        """The same channel at another quality (a lossless one has none: itself)."""
        return self

    def evaluation(self) -> LRChannel:
        """The channel validation and the run's own test row code through: itself (a JPEG
        training range: its middle quality)."""
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
        rounded = self.round(lr).detach()  # lossless: the decode is the input
        bits = [8.0 * len(codecs.encode(image, "png")) for image in rounded]
        return Coded(rounded, torch.tensor(bits, dtype=torch.float64, device=rounded.device))


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
    train_rule: str = "diff"
    name = "jpeg"
    codec = "jpeg"
    suffix = ".jpg"

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

    def evaluation(self) -> JPEGChannel:
        """Itself; a training range ``(low, high)``: at its middle, ``(low + high) // 2``."""
        return self.at_quality(sum(self.quality) // 2) if self.is_range else self


@dataclass(frozen=True)
class WebPChannel(LRChannel):
    """Lossy WebP at ``quality`` (0..100): evaluation only."""

    quality: int = 75
    name = "webp"
    codec = "webp"
    trainable = False
    suffix = ".webp"

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

#: the default channel: the 8-bit rounding a saved PNG holds (the default quantiser's rules); also
#: what the fidelity targets (bicubic LR, plain gray) are rounded by
LOSSLESS = PNGChannel()


def channel_label(record: Mapping) -> str:
    """``png``, ``jpeg q75 4:2:0``, ``webp q80`` from a results row's (or :meth:`LRChannel.record`'s)
    ``channel``, ``quality`` and ``subsampling``; rows written before the channel was recorded: png."""
    parts = [str(record.get("channel") or "png")]
    quality = record.get("quality")
    if quality is not None:
        parts.append(f"q{quality[0]}-{quality[1]}" if isinstance(quality, (list, tuple)) else f"q{quality}")
    if record.get("subsampling"):
        parts.append(str(record["subsampling"]))
    return " ".join(parts)


def build_channel(node: Mapping | None, quantizer: Quantizer | None = None) -> LRChannel:
    """The channel a ``channel`` config node describes (``name`` png | jpeg | webp, ``quality``,
    ``subsampling``, ``train_rule``; ``test_qualities`` is the scoring's, not the channel's);
    None or no node: ``png``. A key the channel does not take may be null (png.yaml lists
    ``quality: null``), never set. ``quantizer``: the run's 8-bit rounding rules."""
    node = dict(node or {})
    name = node.pop("name", "png")
    if name not in CHANNELS:
        raise ConfigError(f"channel={name!r}: one of {', '.join(CHANNELS)}")
    node.pop("test_qualities", None)
    node.pop("_target_", None)
    if isinstance(node.get("quality"), Sequence) and not isinstance(node.get("quality"), str):
        node["quality"] = tuple(node["quality"])
    allowed = {"png": set(), "jpeg": {"quality", "subsampling", "train_rule"}, "webp": {"quality"}}[name]
    node = {key: value for key, value in node.items() if key in allowed or value is not None}  # null: not set
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise ConfigError(f"channel={name} takes no {', '.join('channel.' + k for k in unknown)}")
    return CHANNELS[name](quantizer=quantizer or Quantizer(), **node)


def _test_qualities(node: Mapping) -> list[int]:
    """``channel.test_qualities`` as a list of ints (empty when null); ConfigError naming it."""
    qualities = node.get("test_qualities")
    if qualities is None:
        return []
    if isinstance(qualities, (str, bytes)) or not isinstance(qualities, Sequence) or not qualities:
        raise ConfigError(f"channel.test_qualities={qualities!r}: a list of qualities, e.g. "
                          "'channel.test_qualities=[30,50,70,80,90]', or null")
    low, high = (0, 100) if node.get("name") == "webp" else (1, 100)
    for quality in qualities:
        if isinstance(quality, bool) or not isinstance(quality, int) or not low <= quality <= high:
            raise ConfigError(f"channel.test_qualities={list(qualities)}: {quality!r} is not a quality "
                              f"(an integer in {low}..{high})")
    return list(qualities)


def scoring_channels(node: Mapping | None, quantizer: Quantizer | None = None, own: bool = True) -> list[LRChannel]:
    """The channels a test or evaluation scores through, in order, each once: the channel's
    :meth:`~LRChannel.evaluation` (with ``own``, or when ``test_qualities`` is null), then the
    channel at each of ``test_qualities``: the channel's own codec, JPEG (4:2:0) for ``png`` (a
    clean-trained pair tested under JPEG)."""
    node = dict(node or {})
    channel = build_channel(node, quantizer)
    qualities = _test_qualities(node)
    if isinstance(channel, PNGChannel):
        extra = [JPEGChannel(quantizer=channel.quantizer, quality=q) for q in qualities]
    else:
        extra = [channel.at_quality(q) for q in qualities]
    chosen = [channel.evaluation()] if own or not extra else []
    for candidate in extra:
        if candidate not in chosen:
            chosen.append(candidate)
    return chosen


def check_run_channel(node: Mapping | None) -> LRChannel:
    """The training channel of a run, checked at start (before anything is built): its keys,
    ``test_qualities``, a training rule it has (``webp`` has none) and, for ``train_rule=diff``,
    the differentiable JPEG importable. ConfigError naming the key otherwise."""
    channel = build_channel(node)
    scoring_channels(node)
    if not channel.trainable:
        raise ConfigError(f"channel={channel.name} is for evaluation only (no training rule): train through "
                          "channel=png or channel=jpeg, and score under webp with taid_car.evaluate")
    if getattr(channel, "train_rule", None) == "diff":
        try:
            from taid_car.channel import diff_jpeg  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"channel.train_rule=diff: the differentiable JPEG cannot be imported ({err}); "
                              "use channel.train_rule=ste") from err
    return channel
