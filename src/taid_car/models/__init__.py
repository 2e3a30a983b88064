"""Downscalers, upscalers and the pieces that join them."""

from taid_car.models.bicubic import BicubicDownscaler, BicubicUpscaler
from taid_car.models.quantize import quantize_8bit

__all__ = ["BicubicDownscaler", "BicubicUpscaler", "quantize_8bit"]
