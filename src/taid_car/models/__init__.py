"""Downscalers, upscalers and their losses (the LightningModule is in :mod:`.rescaler`)."""

from taid_car.models.bicubic import BicubicDownscaler, BicubicUpscaler
from taid_car.models.car import CARDownscaler, KernelGenerationNet
from taid_car.models.checkpoints import load_authors_checkpoint
from taid_car.models.downscaler import Downscaler
from taid_car.models.edsr import EDSR, EDSR_PRESETS, build_edsr
from taid_car.models.quantize import quantize_8bit
from taid_car.models.taid import TAIDDownscaler, TAIDUpscaler

__all__ = [
    "EDSR",
    "EDSR_PRESETS",
    "BicubicDownscaler",
    "BicubicUpscaler",
    "CARDownscaler",
    "Downscaler",
    "KernelGenerationNet",
    "TAIDDownscaler",
    "TAIDUpscaler",
    "build_edsr",
    "load_authors_checkpoint",
    "quantize_8bit",
]
