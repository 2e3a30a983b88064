"""The LR channel (what happens to the LR between downscaler and upscaler) and the real codecs."""

from taid_car.channel.lr_channel import (
    CHANNELS,
    TRAIN_RULES,
    Coded,
    JPEGChannel,
    LRChannel,
    PNGChannel,
    WebPChannel,
    build_channel,
)

__all__ = ["CHANNELS", "TRAIN_RULES", "Coded", "JPEGChannel", "LRChannel", "PNGChannel", "WebPChannel",
           "build_channel"]
