"""Image files in and out, with validation.

Every image comes out as RGB, float32, values in [0, 1], shape (3, H, W), whatever the file
held: grayscale is replicated to three channels (``is_gray`` records it, because the SR protocol
scores a gray image on its own values), alpha is dropped with a warning (not composited),
palette and CMYK images are converted to RGB, and 16-bit files are divided by 65535 with their
full precision (Pillow alone silently keeps only the high byte of 16-bit colour PNG/TIFF).
An EXIF orientation is applied, so pixels come out upright as image viewers show them (as
``PIL.ImageOps.exif_transpose`` turns them; MATLAB ``imread`` would not), :func:`probe_size`
reports that upright size, and the first such file of a process is named in one logged notice.
Benchmark PNGs carry no EXIF: their pixels are read as stored.

Anything wrong with a file or a folder raises :class:`ImageError` (a ``ValueError``) whose
message names the file and the reason; a dangling symlink or a symlink loop is such a file
(:func:`list_images` lists it, so that it is reported, never silently left out).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
import warnings
from io import BytesIO
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from taid_car.atomic_write import write_atomically

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageError",
    "LoadedImage",
    "MissingFolderError",
    "RawImage",
    "check_min_size",
    "list_images",
    "load_image",
    "modcrop",
    "probe_size",
    "read_image",
    "read_image_raw",
    "save_image",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File name endings :func:`list_images` accepts (compared case-insensitively)."""


class ImageError(ValueError):
    """A file or folder that cannot serve as an image source; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class MissingFolderError(ImageError, FileNotFoundError):
    """An image folder that does not exist or is not a folder (also a ``FileNotFoundError``)."""


class RawImage(NamedTuple):
    """Decoded pixels before conversion to float.

    ``array``: (H, W, 3) uint8, uint16 or float32, RGB; ``max_value``: the value meaning white
    (255, 65535 or 1.0); ``is_gray``: the source had a single luminance channel.
    """

    array: np.ndarray
    max_value: float
    is_gray: bool
    path: Path

    def to_tensor(self) -> torch.Tensor:
        """(3, H, W) float32 in [0, 1]."""
        return _array_to_tensor(self.array, self.max_value)


class LoadedImage(NamedTuple):
    """``tensor``: (3, H, W) float32 in [0, 1], RGB; ``is_gray``: the source was one channel."""

    tensor: torch.Tensor
    is_gray: bool
    path: Path


def _extensions_text() -> str:
    return " ".join(IMAGE_EXTENSIONS)


def list_images(folder: str | Path) -> list[Path]:
    """Image entries directly inside ``folder`` (by extension, case-insensitive), sorted by name.

    Every entry with an image extension that is not a folder is listed, readable or not: a
    dangling symlink (e.g. to unmounted storage), a symlink loop or a special file is left for
    the reader to report by name (:func:`probe_size`, :func:`read_image_raw`), never silently
    dropped. Hidden files (names starting with ``.``, e.g. macOS ``._x.png`` debris) are skipped;
    no recursion. Raises :class:`MissingFolderError` for a missing folder or a non-folder, and
    :class:`ImageError` when it holds no image files.
    """
    folder = Path(folder)
    if not folder.exists():
        raise MissingFolderError(
            folder, f"image folder does not exist (expected files ending in {_extensions_text()})"
        )
    if not folder.is_dir():
        raise MissingFolderError(folder, "is not a folder; expected a folder of images")
    files = sorted(
        (
            p
            for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and not p.is_dir()
        ),
        key=lambda p: p.name,
    )
    if not files:
        others = sorted(p.name for p in folder.iterdir())[:5]
        seen = (
            f"; it holds: {', '.join(others)}{' ...' if len(others) == 5 else ''}" if others else ""
        )
        raise ImageError(
            folder, f"no image files (accepted extensions: {_extensions_text()}){seen}"
        )
    return files


def _check_image_file(path: Path) -> None:
    """Raise :class:`ImageError` unless ``path`` is (or links to) a regular file, naming what it
    is instead: missing, a dangling symlink (and its target), a symlink loop, a folder, or a
    special file (a FIFO would block the reader)."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageError(path, "symlink loop (the link leads back to itself)") from None
        if path.is_symlink():
            raise ImageError(
                path, f"dangling symlink to {os.readlink(path)}, which does not exist (unmounted storage?)"
            ) from None
        if isinstance(e, FileNotFoundError):
            raise ImageError(path, "file does not exist") from None
        raise ImageError(path, f"cannot be read ({type(e).__name__}: {e})") from e
    if stat.S_ISDIR(mode):
        raise ImageError(path, "is a folder, not an image file")
    if not stat.S_ISREG(mode):
        raise ImageError(path, "is not a regular file (a FIFO, socket or device), not an image file")


def probe_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file from its header, without decoding the pixels; upright, i.e.
    swapped when the EXIF orientation turns the image by 90 degrees (as :func:`read_image_raw`)."""
    path = Path(path)
    _check_image_file(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if _exif_orientation(im, path) in _QUARTER_TURNS and im.format not in _UPRIGHT_SIZE:
                h, w = w, h
    except Exception as e:
        raise ImageError(path, f"not a readable image ({type(e).__name__}: {e})") from e
    return h, w


def read_image_raw(path: str | Path) -> RawImage:
    """Decode ``path`` to RGB pixels at their stored bit depth (see :class:`RawImage`), upright
    by its EXIF orientation."""
    path = Path(path)
    _check_image_file(path)
    try:
        with Image.open(path) as im:
            orientation = _exif_orientation(im, path)  # from the header, before the pixels load
            if orientation == 1 or im.format != "TIFF":
                return _decode_upright(im, path, orientation)
            # Pillow's TIFF reader turns the pixels itself, but scrambles a memory-mapped
            # (uncompressed, one strip) gray one (Pillow 13): decode a copy in memory instead
            with Image.open(BytesIO(path.read_bytes())) as in_memory:
                return _decode_upright(in_memory, path, orientation)
    except ImageError:
        raise
    except Exception as e:
        raise ImageError(path, f"not a readable image ({type(e).__name__}: {e})") from e


def read_image(path: str | Path) -> LoadedImage:
    """Read an image file as a (3, H, W) float32 RGB tensor in [0, 1] plus its ``is_gray`` flag."""
    raw = read_image_raw(path)
    return LoadedImage(raw.to_tensor(), raw.is_gray, raw.path)


def load_image(path: str | Path) -> torch.Tensor:
    """Just the (3, H, W) float32 RGB tensor in [0, 1] of :func:`read_image`."""
    return read_image(path).tensor


# --------------------------------------------------------------------------- decoding

log = logging.getLogger(__name__)

_ORIENTATION = 0x0112
"""The EXIF tag of the orientation: 1 upright as stored, 2..8 flips and turns."""

_QUARTER_TURNS = (5, 6, 7, 8)
"""EXIF orientations that swap height and width."""

_UPRIGHT_SIZE = ("TIFF",)
"""Formats whose Pillow reader gives the upright size at open (and turns the pixels at load)."""

_exif_noticed = False  # the once-per-process notice of an applied EXIF orientation was given


def _exif_orientation(im: Image.Image, path: Path) -> int:
    """The EXIF orientation (1..8; 1: upright as stored) from the file's header, read as
    ``PIL.ImageOps.exif_transpose`` reads it; a PNG's from an ``eXIf`` chunk before the pixels,
    where the PNG specification puts it (looking after them would decode the image). The first
    file of a process turned by it is named in one logged notice."""
    global _exif_noticed
    orientation = _header_exif(im).get(_ORIENTATION, 1)
    if orientation not in range(2, 9):
        return 1
    if not _exif_noticed:
        _exif_noticed = True
        log.warning(
            "%s: EXIF orientation %d applied: its pixels are read turned upright, as image viewers "
            "show them (said once: other files with an EXIF orientation are turned without notice)",
            path, orientation,
        )
    return int(orientation)


def _decode_upright(im: Image.Image, path: Path, orientation: int) -> RawImage:
    """:func:`_decode`, turned by the EXIF ``orientation`` unless Pillow turned it while decoding
    (then it removed the tag, as ``exif_transpose`` does: its TIFF reader does so, the others not)."""
    raw = _decode(im, path)
    return raw if _ORIENTATION not in _header_exif(im) else _upright(raw, orientation)


def _header_exif(im: Image.Image) -> Image.Exif:
    """``im``'s EXIF (cached by Pillow), without decoding: ``PngImageFile.getexif`` decodes the
    pixels to look for an ``eXIf`` after them, so a PNG's is the header's (``Image.getexif``)."""
    return Image.Image.getexif(im) if im.format == "PNG" else im.getexif()


def _upright(raw: RawImage, orientation: int) -> RawImage:
    """``raw`` turned by an EXIF ``orientation`` as ``PIL.ImageOps.exif_transpose`` turns it."""
    a = raw.array  # (H, W, C)
    turned = {
        1: lambda: a,
        2: lambda: a[:, ::-1],  # FLIP_LEFT_RIGHT
        3: lambda: a[::-1, ::-1],  # ROTATE_180
        4: lambda: a[::-1],  # FLIP_TOP_BOTTOM
        5: lambda: a.transpose(1, 0, 2),  # TRANSPOSE
        6: lambda: np.rot90(a, -1),  # ROTATE_270 (90 degrees clockwise)
        7: lambda: a.transpose(1, 0, 2)[::-1, ::-1],  # TRANSVERSE
        8: lambda: np.rot90(a, 1),  # ROTATE_90 (90 degrees counter-clockwise)
    }[orientation]()
    return raw if turned is a else raw._replace(array=np.ascontiguousarray(turned))


def _array_to_tensor(array: np.ndarray, max_value: float) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32, copy=False))
    if max_value != 1.0:
        t = t / float(max_value)
    return t.permute(2, 0, 1).contiguous()


def _warn_alpha(path: Path) -> None:
    warnings.warn(f"{path}: alpha channel dropped (not composited)", stacklevel=4)


def _gray3(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[:, :, None], 3, axis=2)


def _decode(im: Image.Image, path: Path) -> RawImage:
    if getattr(im, "n_frames", 1) > 1:
        warnings.warn(f"{path}: has {im.n_frames} frames; using the first", stacklevel=3)
    rawmode = im.tile[0][3] if im.tile else None
    rawmode = rawmode[0] if isinstance(rawmode, tuple) else rawmode
    mode = im.mode

    # 16-bit colour: Pillow keeps only the high byte of each sample; recover the full value.
    if mode in ("RGB", "RGBA") and _is_16bit_colour(im, rawmode):
        arr = _decode_16bit_colour(im, path, rawmode)
        if arr.shape[2] == 2:  # gray + alpha
            _warn_alpha(path)
            return RawImage(_gray3(arr[:, :, 0]), 65535.0, True, path)
        if arr.shape[2] == 4:
            _warn_alpha(path)
        return RawImage(np.ascontiguousarray(arr[:, :, :3]), 65535.0, False, path)

    im.load()
    if mode == "1":
        return RawImage(_gray3(np.asarray(im.convert("L"))), 255.0, True, path)
    if mode == "L":
        return RawImage(_gray3(np.asarray(im)), 255.0, True, path)
    if mode in ("LA", "La"):
        _warn_alpha(path)
        return RawImage(_gray3(np.asarray(im.convert("LA"))[:, :, 0]), 255.0, True, path)
    if mode.startswith("I;16"):
        a = np.asarray(im).astype(np.uint16)  # I;16B etc. come back byte-swapped as needed
        return RawImage(_gray3(a), 65535.0, True, path)
    if mode == "I":
        return _decode_int32(im, path)
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ImageError(
                path,
                f"32-bit float pixels outside [0, 1] (range {a.min():g}..{a.max():g}); "
                "save it as 8- or 16-bit",
            )
        return RawImage(_gray3(a), 1.0, True, path)
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        rgb = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
        if has_alpha:
            _warn_alpha(path)
            rgb = rgb[:, :, :3]
        is_gray = bool(
            (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all()
        )
        return RawImage(np.ascontiguousarray(rgb), 255.0, is_gray, path)
    if mode in ("RGBA", "RGBa"):
        _warn_alpha(path)
        return RawImage(
            np.ascontiguousarray(np.asarray(im.convert("RGBA"))[:, :, :3]), 255.0, False, path
        )
    if mode == "RGB":
        return RawImage(np.asarray(im).copy(), 255.0, False, path)
    # CMYK, YCbCr, RGBX, LAB, HSV ...: Pillow's own conversion (CMYK without colour management).
    try:
        rgb = im.convert("RGB")
    except ValueError as e:
        raise ImageError(path, f"unsupported image mode {mode!r} ({e})") from e
    return RawImage(np.asarray(rgb).copy(), 255.0, False, path)


def _is_16bit_colour(im: Image.Image, rawmode: object) -> bool:
    if im.format == "PNG":
        return isinstance(rawmode, str) and rawmode.endswith(";16B")
    if im.format == "TIFF":
        bps = im.tag_v2.get(258, (8,))
        return max(bps if isinstance(bps, tuple) else (bps,)) > 8
    return False  # e.g. 16-bpp BMP is 5-6-5 bits per channel, which Pillow expands exactly


def _decode_16bit_colour(im: Image.Image, path: Path, rawmode: str) -> np.ndarray:
    """(H, W, C) uint16 from a 16-bit-per-sample colour PNG or TIFF."""
    if im.format == "TIFF":
        import tifffile  # a dependency of scikit-image

        a = np.asarray(tifffile.imread(path, key=0))
        if a.dtype != np.uint16 or a.ndim != 3 or a.shape[2] not in (2, 3, 4):
            raise ImageError(path, f"unsupported 16-bit TIFF layout (array {a.shape}, {a.dtype})")
        return a
    if im.format != "PNG":
        raise ImageError(path, f"unsupported 16-bit {im.format} colour image")
    # PNG stores big-endian samples. Decoding with the little-endian raw mode makes Pillow's
    # "take the high byte" unpacker return the low bytes instead (unfiltering is byte-wise and
    # identical for both), so two decodes give the full 16 bits.
    if rawmode in ("RGB;16B", "RGBA;16B"):
        hi = np.asarray(im).astype(np.uint16)
        lo = _decode_with_rawmode(path, rawmode.replace(";16B", ";16L"))
        return (hi << 8) | lo.astype(np.uint16)
    if rawmode == "LA;16B":
        # 4 bytes per pixel, read as 8-bit RGBA: (L hi, L lo, A hi, A lo).
        b = _decode_with_rawmode(path, "RGBA").astype(np.uint16)
        return np.stack([(b[..., 0] << 8) | b[..., 1], (b[..., 2] << 8) | b[..., 3]], axis=2)
    raise ImageError(path, f"unsupported 16-bit PNG layout (raw mode {rawmode})")


def _decode_with_rawmode(path: Path, rawmode: str) -> np.ndarray:
    with Image.open(path) as im:
        first = im.tile[0]  # (codec, extents, offset, args); a NamedTuple in Pillow >= 11
        im.tile = [(first[0], first[1], first[2], rawmode), *im.tile[1:]]
        im.load()
        return np.asarray(im)


def _decode_int32(im: Image.Image, path: Path) -> RawImage:
    """Mode ``I`` (32-bit int container): 16-bit PNG in older Pillow, or 16/32-bit TIFF."""
    a = np.asarray(im)
    bits = 16
    if im.format == "TIFF":
        bps = im.tag_v2.get(258, (16,))
        bits = int(bps[0] if isinstance(bps, tuple) else bps)
    if bits > 16:
        raise ImageError(path, f"unsupported {bits}-bit integer pixels; save it as 8- or 16-bit")
    if a.min() < 0 or a.max() > 65535:
        raise ImageError(path, f"integer pixels outside 0..65535 (range {a.min()}..{a.max()})")
    return RawImage(_gray3(a.astype(np.uint16)), float(2**bits - 1), True, path)


# --------------------------------------------------------------------------- writing


def png_text(path: str | Path) -> dict[str, str]:
    """The text chunks of a PNG file ({} for other formats or on any read problem)."""
    try:
        with Image.open(path) as img:
            return dict(getattr(img, "text", {}) or {})
    except (OSError, ValueError):
        return {}


def save_image(
    tensor: torch.Tensor, path: str | Path, *, overwrite: bool = False, text: dict[str, str] | None = None
) -> Path:
    """Write a [0, 1] image to an 8-bit PNG; returns the path. ``text``: PNG text chunks
    (e.g. the scale an LR file was made at, read back by :func:`png_text`).

    ``tensor``: (3, H, W) RGB or (1, H, W) / (H, W) gray, any float dtype/device; values are
    clamped to [0, 1] and rounded half up to 0..255 (as MATLAB ``im2uint8``). Parent folders are
    created. Written by :func:`taid_car.atomic_write.write_atomically`: the file appears whole or
    not at all, and an existing name (a file, a hard link, a symlink) is replaced, never written
    through; without ``overwrite=True`` a taken name raises ``FileExistsError`` naming it.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: save_image writes PNG only; use a .png file name")
    t = torch.as_tensor(tensor).detach()
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(
            f"{path}: expected a (3, H, W), (1, H, W) or (H, W) tensor, got {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        raise ValueError(f"{path}: image holds NaN or infinite values")
    u8 = torch.floor(t.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu()
    a = u8.permute(1, 2, 0).numpy()
    img = (
        Image.fromarray(a[:, :, 0], mode="L") if a.shape[2] == 1 else Image.fromarray(a, mode="RGB")
    )
    info = None
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, str(value))
    return write_atomically(path, lambda f: img.save(f, format="PNG", pnginfo=info), overwrite=overwrite)


# --------------------------------------------------------------------------- geometry


def check_min_size(
    image: torch.Tensor | tuple[int, int],
    min_h: int,
    min_w: int,
    path: str | Path,
    what: str,
) -> None:
    """Raise :class:`ImageError` unless ``image`` ((..., H, W) tensor or (H, W)) is ≥ min_h × min_w.

    ``what`` finishes the sentence "smaller than the 24x24 needed for ...", e.g.
    ``"patch 96 at scale 4"``. Sizes are written height x width.
    """
    h, w = (
        (int(image.shape[-2]), int(image.shape[-1])) if isinstance(image, torch.Tensor) else image
    )
    if h < min_h or w < min_w:
        raise ImageError(
            path,
            f"image is {h}x{w} (HxW), smaller than the {min_h}x{min_w} needed for {what}",
        )


def modcrop(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Crop (..., H, W) to H, W rounded down to ``multiple``, keeping the top-left (a view)."""
    if int(multiple) != multiple or multiple < 1:
        raise ValueError(f"modcrop multiple must be a positive integer, got {multiple!r}")
    h, w = image.shape[-2:]
    hh, ww = h - h % multiple, w - w % multiple
    if hh == 0 or ww == 0:
        raise ValueError(f"image of {h}x{w} (HxW) is smaller than the modcrop multiple {multiple}")
    return image[..., :hh, :ww]


def smallest_multiple_at_least(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is ≥ ``value``."""
    return int(math.ceil(value / multiple) * multiple)
