"""The real codecs an LR goes through at evaluation, in ``rescale`` and in the tests: Pillow's
libjpeg, libwebp and zlib PNG, each at one fixed, recorded setting.

Every function takes a batch of images on the 8-bit grid, (B, C, h, w) float in [0, 1] with
C = 3 (RGB) or 1 (gray), and returns ``(decoded, bits)``: the decoded images, (B, C, h, w) float32
on the 8-bit grid (on the input's device), and the size of each encoded file in bits, (B,)
float64. Bits per pixel are ``bits / (h * w)`` (per LR pixel).

An RGB image whose three channels are equal (a gray source's LR) is stored as a one-channel
gray file, as ``rescale`` writes gray images: libjpeg codes R = G = B as Y = R with constant
chroma, so the decode is the same as the RGB file's, and the rate leaves out chroma the image
does not have.

JPEG is written baseline (not progressive), without optimised Huffman tables, with the standard
(IJG) quantisation tables scaled to ``quality`` and the chroma subsampling given (``4:2:0``,
Pillow's and libjpeg's default for colour, ``4:2:2`` or ``4:4:4``; a gray image has none).
WebP is lossy at ``quality`` (libwebp's default method 4). PNG is lossless (zlib level 6).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

__all__ = ["CODECS", "SUBSAMPLINGS", "decode", "encode", "jpeg_roundtrip", "png_roundtrip", "webp_roundtrip"]

#: chroma subsampling name -> Pillow's ``subsampling`` argument
SUBSAMPLINGS = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def _to_pil(image: torch.Tensor) -> Image.Image:
    """(C, h, w) float on the 8-bit grid -> an 8-bit RGB or L image (values rounded, as saved).
    Three equal channels (a gray image) make an L image, as the suite saves gray images."""
    array = torch.round(image.detach().float().clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
    if array.shape[0] == 3 and (array[0] == array[1]).all() and (array[1] == array[2]).all():
        array = array[:1]
    if array.shape[0] == 1:
        return Image.fromarray(array[0], mode="L")
    if array.shape[0] == 3:
        return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), mode="RGB")
    raise ValueError(f"a codec takes 1 or 3 channels, got an image of shape {tuple(image.shape)}")


def _from_pil(img: Image.Image, channels: int) -> torch.Tensor:
    array = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).float() / 255
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1)


def _check_quality(quality: int, low: int, high: int, codec: str) -> int:
    if isinstance(quality, bool) or int(quality) != quality or not low <= quality <= high:
        raise ValueError(f"{codec} quality must be an integer in {low}..{high}, got {quality!r}")
    return int(quality)


def encode(image: torch.Tensor, codec: str, quality: int | None = None, subsampling: str = "4:2:0") -> bytes:
    """The file one image (C, h, w) on the 8-bit grid is stored as: ``codec`` png, jpeg or webp."""
    img = _to_pil(image)
    buffer = io.BytesIO()
    if codec == "png":
        img.save(buffer, format="PNG", compress_level=6)
    elif codec == "jpeg":
        if subsampling not in SUBSAMPLINGS:
            raise ValueError(f"JPEG chroma subsampling must be one of {', '.join(SUBSAMPLINGS)}, got {subsampling!r}")
        options = {} if img.mode == "L" else {"subsampling": SUBSAMPLINGS[subsampling]}
        img.save(buffer, format="JPEG", quality=_check_quality(quality, 1, 100, "JPEG"),
                 optimize=False, progressive=False, **options)
    elif codec == "webp":
        img.save(buffer, format="WEBP", quality=_check_quality(quality, 0, 100, "WebP"), method=4)
    else:
        raise ValueError(f"unknown codec {codec!r}; one of {', '.join(CODECS)}")
    return buffer.getvalue()


def decode(data: bytes, channels: int) -> torch.Tensor:
    """(channels, h, w) float32 on the 8-bit grid from an encoded file's bytes."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return _from_pil(img, channels)


def _roundtrip(codec: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    def roundtrip(images: torch.Tensor, quality: int | None = None,
                  subsampling: str = "4:2:0") -> tuple[torch.Tensor, torch.Tensor]:
        if images.dim() != 4:
            raise ValueError(f"a codec takes a batch (B, C, h, w), got shape {tuple(images.shape)}")
        decoded, bits = [], []
        for image in images:
            data = encode(image, codec, quality, subsampling)
            decoded.append(decode(data, image.shape[0]))
            bits.append(8.0 * len(data))
        return (torch.stack(decoded).to(images.device),
                torch.tensor(bits, dtype=torch.float64, device=images.device))

    roundtrip.__name__ = f"{codec}_roundtrip"
    roundtrip.__doc__ = f"{codec.upper()} each image of the batch: (decoded (B,C,h,w) float32, bits (B,) float64)."
    return roundtrip


png_roundtrip = _roundtrip("png")
jpeg_roundtrip = _roundtrip("jpeg")
webp_roundtrip = _roundtrip("webp")

#: codec name -> its round trip
CODECS = {"png": png_roundtrip, "jpeg": jpeg_roundtrip, "webp": webp_roundtrip}
