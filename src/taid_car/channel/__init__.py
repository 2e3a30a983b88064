"""The LR channel (what happens to the LR between downscaler and upscaler) and the real codecs."""

from taid_car.channel.lr_channel import (
    CHANNELS,
    LOSSLESS,
    TRAIN_RULES,
    Coded,
    JPEGChannel,
    LRChannel,
    PNGChannel,
    WebPChannel,
    build_channel,
    channel_label,
    check_run_channel,
    scoring_channels,
)

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
