"""Datasets of HR images: whole benchmark images for evaluation, random patches for training.

Only HR images are ever read: the LR image is always produced by the downscaler under test.
Items are dicts ``{"hr": (3, H, W) float32 RGB in [0, 1], "name": file stem, "is_gray": bool}``.
Benchmark images differ in size, so batch them one at a time (``batch_size=1``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import (
    ImageError,
    RawImage,
    check_min_size,
    list_images,
    probe_size,
    read_image_raw,
    smallest_multiple_at_least,
)

__all__ = [
    "HR_SUBFOLDERS",
    "SSIM_WINDOW",
    "BenchmarkDataset",
    "InMemoryImage",
    "TrainPatchDataset",
    "benchmark_min_size",
    "dihedral",
    "resolve_hr_folder",
]

HR_SUBFOLDERS: tuple[str, ...] = ("HR", "original", "GTmod12", "DIV2K_valid_HR", "DIV2K_train_HR")
"""Sub-folders :func:`resolve_hr_folder` looks in, in this order, when a set folder holds no images:
``HR`` (EDSR ``benchmark.tar``: ``Set5/HR/``), ``original`` and ``GTmod12`` (BasicSR:
``Set5/original/``, ``Set5/GTmod12/``, the latter already cropped to a multiple of 12),
and DIV2K (``DIV2K/DIV2K_valid_HR/`` before ``DIV2K/DIV2K_train_HR/``)."""

SSIM_WINDOW = 11
"""Side of the SSIM Gaussian window: the scored region must be at least this big."""


class InMemoryImage(NamedTuple):
    """An already decoded image: ``tensor`` (3, H, W) float32 RGB in [0, 1]."""

    name: str
    tensor: torch.Tensor
    is_gray: bool


def resolve_hr_folder(root: str | Path) -> Path:
    """The folder holding the HR images of a set rooted at ``root`` (see :data:`HR_SUBFOLDERS`).

    ``root`` itself if it holds image files, else the first of :data:`HR_SUBFOLDERS` that does.
    Raises :class:`~taid_car.data.io.ImageError` (``MissingFolderError`` for a missing root)
    naming the folder and the layouts tried.
    """
    root = Path(root)
    try:
        list_images(root)
        return root
    except ImageError as err:
        if not root.is_dir():
            raise
        for sub in HR_SUBFOLDERS:
            if (root / sub).is_dir():
                try:
                    list_images(root / sub)
                    return root / sub
                except ImageError:
                    continue
        raise ImageError(
            root,
            f"{err.reason}; also found no images in any of the sub-folders "
            f"{', '.join(s + '/' for s in HR_SUBFOLDERS)} (the HR layouts understood)",
        ) from None


def _set_name(root: Path, folder: Path) -> str:
    return (
        folder.parent.name if folder.name in ("HR", "original", "GTmod12") else root.resolve().name
    )


def benchmark_min_size(scale: int, multiple: int) -> int:
    """Smallest HR side (px) a benchmark image may have at this ``scale`` and modcrop ``multiple``.

    The SR protocol crops ``scale`` pixels from every border and SSIM needs an 11×11 window in
    what remains, so the cropped side must reach 2·scale + 11, rounded up to the multiple.
    """
    return smallest_multiple_at_least(2 * scale + SSIM_WINDOW, multiple)


class NoImageLargeEnough(ValueError):
    """Every image of a benchmark set is too small for the factor (``skip_small`` mode)."""


def _probe_all(paths: Sequence[Path], name: str) -> list[tuple[int, int]]:
    """(H, W) of every file of the benchmark set ``name`` (headers only); raises one
    :class:`ImageError` naming every file that cannot be read (a missing or dangling link, a
    symlink loop, a broken header) with its reason: a set scored in part compares with nothing."""
    sizes, unreadable = [], []
    for p in paths:
        try:
            sizes.append(probe_size(p))
        except ImageError as err:
            unreadable.append(err)
    if unreadable:
        folders = {err.path.parent for err in unreadable}
        where = folders.pop() if len(folders) == 1 else Path(name)
        listed = "; ".join(
            f"{err.path.name if err.path.parent == where else err.path} ({err.reason})" for err in unreadable
        )
        raise ImageError(
            where,
            f"{len(unreadable)} of the {len(paths)} image(s) of the set {name} cannot be read: {listed}. "
            "A validation or test set is never scored in part (data.on_error applies to training "
            "images only): restore or remove these files",
        )
    return sizes


class BenchmarkDataset(Dataset):
    """Whole HR images of a benchmark set (Set5, Set14, B100, Urban100, DIV2K valid, ...).

    ``root``: the set folder (layouts: :func:`resolve_hr_folder`). Each ``hr`` is cropped at the
    bottom/right to a multiple of ``modcrop_multiple`` (default: ``scale``; use 8 or 12 where a
    model needs it). Every image's size is checked at construction (headers only); pixels are
    decoded on access. ``cache=True`` (the default) keeps each decoded image, cropped, at its
    stored bit depth (uint8: 3 bytes per pixel), for sets read again and again (validation
    during training); ``cache=False`` keeps nothing, so a single pass over the set (evaluation)
    holds one image at a time, however many the set has.

    Files that cannot be read (a dangling symlink, a symlink loop, a broken header) raise one
    :class:`ImageError` naming every one of them, whatever ``skip_small`` says.
    An image smaller than :func:`benchmark_min_size` is an error naming it; with
    ``skip_small=True`` (extreme factors: ×128 needs HR sides of 384 px) it is left out instead,
    listed in :attr:`skipped` and in one warning, and a set left with no image raises
    :class:`NoImageLargeEnough`. ``minimum``: (side in px, why) a model needs of every HR image
    (``Downscaler.minimum_side()``), checked the same way when it is larger.
    """

    def __init__(
        self,
        root: str | Path,
        scale: int,
        modcrop_multiple: int | None = None,
        name: str | None = None,
        *,
        cache: bool = True,
        skip_small: bool = False,
        minimum: tuple[int, str] = (0, ""),
    ) -> None:
        root = Path(root)
        folder = resolve_hr_folder(root)
        self.root = folder
        self._setup(
            list_images(folder), scale, modcrop_multiple, name or _set_name(root, folder), cache, skip_small, minimum
        )

    @classmethod
    def from_paths(
        cls, paths: Sequence[Path], scale: int, modcrop_multiple: int | None = None, name: str = "images",
        *, cache: bool = True, skip_small: bool = False, minimum: tuple[int, str] = (0, ""),
    ) -> BenchmarkDataset:
        """A benchmark set made of given image files (e.g. images held out of a training folder)."""
        paths = [Path(p) for p in paths]
        if not paths:
            raise ValueError(f"benchmark set {name!r} needs at least one image file")
        dataset = cls.__new__(cls)
        dataset.root = paths[0].parent
        dataset._setup(paths, scale, modcrop_multiple, name, cache, skip_small, minimum)
        return dataset

    def _setup(
        self,
        paths: Sequence[Path],
        scale: int,
        modcrop_multiple: int | None,
        name: str,
        cache: bool,
        skip_small: bool = False,
        minimum: tuple[int, str] = (0, ""),
    ) -> None:
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)
        self.multiple = int(modcrop_multiple or scale)
        if self.multiple % self.scale:
            raise ValueError(
                f"modcrop_multiple ({self.multiple}) must be a multiple of scale ({self.scale})"
            )
        self.name = name
        self.paths = list(paths)
        self.cache = cache
        self._cache: dict[int, RawImage] = {}  # index -> modcropped pixels (cache=True only)
        need = benchmark_min_size(self.scale, self.multiple)
        what = (f"evaluation at scale {self.scale} (crop to a multiple of {self.multiple}, "
                f"{self.scale}-pixel border, {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window)")
        if minimum[0] > need:  # the model takes larger images than the protocol
            need, what = int(minimum[0]), minimum[1]
        sizes = _probe_all(self.paths, name)  # an unreadable file raises, whatever skip_small says
        kept, self.skipped = [], []
        for p, size in zip(self.paths, sizes, strict=True):
            if skip_small and min(size) < need:
                self.skipped.append((p, size))
                continue
            check_min_size(size, need, need, p, what)
            kept.append(p)
        self.paths = kept
        if self.skipped:
            sizes = ", ".join(f"{p.stem} ({h}x{w})" for p, (h, w) in self.skipped)
            message = (f"{name} at x{self.scale}: {len(self.skipped)} of {len(self.skipped) + len(kept)} "
                       f"image(s) smaller than the {need}x{need} px HR (a {need // self.scale}-pixel LR) {what} needs")
            if not kept:
                raise NoImageLargeEnough(f"{message}: every image, set skipped ({sizes})")
            warnings.warn(f"{message}, skipped: {sizes}", stacklevel=2)

    @property
    def names(self) -> list[str]:
        """File stems, in item order."""
        return [p.stem for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def _pixels(self, index: int) -> RawImage:
        """Decoded pixels of image ``index``, cropped to the multiple (from the cache if kept)."""
        raw = self._cache.get(index)
        if raw is None:
            raw = read_image_raw(self.paths[index])
            h, w = raw.array.shape[:2]
            m = self.multiple
            if h < m or w < m:
                raise ImageError(
                    self.paths[index], f"image of {h}x{w} (HxW) is smaller than the modcrop multiple {m}"
                )
            raw = raw._replace(array=raw.array[: h - h % m, : w - w % m])
            if self.cache:  # a compact copy, not a view holding the uncropped decode
                raw = raw._replace(array=np.ascontiguousarray(raw.array))
                self._cache[index] = raw
        return raw

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        raw = self._pixels(index)
        # a fresh float32 tensor every time: callers may modify it without touching the cache
        return {"hr": raw.to_tensor(), "name": self.paths[index].stem, "is_gray": raw.is_gray}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, images={len(self)}, scale={self.scale}, "
            f"modcrop_multiple={self.multiple}, root={str(getattr(self, 'root', ''))!r})"
        )


class _Source(NamedTuple):
    name: str
    path: Path | None
    is_gray: bool
    size: tuple[int, int]


#: what training does with an image it cannot read (benchmark sets always raise: a partial set
#: gives numbers that compare with nothing)
ON_ERROR = ("raise", "skip")


class TrainPatchDataset(Dataset):
    """Random square HR patches for training.

    ``source``: a folder of images, a list of image files, or a list of :class:`InMemoryImage`
    (e.g. :func:`~taid_car.data.sample.sample_split`). ``patch_size``: HR side in pixels, a
    multiple of ``scale``. ``augment``: one of the 8 flips/90° rotations, uniformly. Length is
    ``repeats × number of images``; item ``i`` is a patch of image ``i % number of images``.

    Every image is checked at construction (too small → ImageError naming file and sizes, or,
    with ``skip_small=True``, left out with one warning listing them, as T91 needs). A file that
    cannot be read raises :class:`ImageError` naming it (``on_error="raise"``, the default) or,
    with ``on_error="skip"``, is left out: every image is then decoded once here, and one warning
    lists the skipped files with their reasons and count (an error if none is left). With
    ``cache=True`` all images are decoded then and kept at their stored bit depth (uint8: 3 bytes
    per pixel), so nothing is decoded, and nothing can fail, during an epoch. Crops and
    augmentations draw from the seed of an ``(index, seed)`` key (training:
    :class:`~taid_car.data.sampling.PatchSampler`), or from torch's global RNG for a plain index.

    Items: ``{"hr": (3, P, P) float32 RGB in [0, 1], "name": str, "is_gray": bool}``.
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path] | Sequence[InMemoryImage],
        patch_size: int,
        scale: int,
        *,
        augment: bool = True,
        repeats: int = 1,
        cache: bool = True,
        skip_small: bool = False,
        on_error: str = "raise",
    ) -> None:
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if on_error not in ON_ERROR:
            from taid_car.errors import ConfigError

            raise ConfigError(f"data.on_error={on_error!r}: must be one of {', '.join(ON_ERROR)}")
        if int(patch_size) != patch_size or patch_size < 1 or patch_size % scale:
            raise ValueError(
                f"patch_size ({patch_size}) must be a positive multiple of scale ({scale})"
            )
        if int(repeats) != repeats or repeats < 1:
            raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
        self.patch_size, self.scale = int(patch_size), int(scale)
        self.augment, self.repeats, self.cache = augment, int(repeats), cache
        what = f"patch {self.patch_size} at scale {self.scale}"

        self._sources: list[_Source] = []
        self._pixels: list[RawImage | None] = []
        items = list_images(source) if isinstance(source, (str, Path)) else list(source)
        if not items:
            raise ValueError("TrainPatchDataset needs at least one image")
        skipped: list[str] = []
        unreadable: list[str] = []
        for item in items:
            if isinstance(item, InMemoryImage):
                t = item.tensor
                if t.dim() != 3 or t.shape[0] != 3:
                    raise ValueError(
                        f"{item.name}: expected a (3, H, W) tensor, got {tuple(t.shape)}"
                    )
                check_min_size(t, self.patch_size, self.patch_size, item.name, what)
                arr = t.detach().float().cpu().permute(1, 2, 0).contiguous().numpy()
                raw = RawImage(arr, 1.0, item.is_gray, Path(item.name))
                self._sources.append(_Source(item.name, None, item.is_gray, tuple(t.shape[-2:])))
                self._pixels.append(raw)
                continue
            path = Path(item)
            try:
                size = probe_size(path)
            except ImageError as err:
                if on_error == "raise":
                    raise
                unreadable.append(f"{path.name} ({err.reason})")
                continue
            try:
                check_min_size(size, self.patch_size, self.patch_size, path, what)
            except ImageError as err:
                if not skip_small and on_error == "raise":
                    raise
                skipped.append(err.reason.split(",")[0].replace("image is ", f"{path.name} "))
                continue
            try:  # decoded once now: with on_error=skip a file that fails later is found here
                raw = read_image_raw(path) if cache or on_error == "skip" else None
            except ImageError as err:
                if on_error == "raise":
                    raise
                unreadable.append(f"{path.name} ({err.reason})")
                continue
            raw = raw if cache else None
            self._sources.append(
                _Source(path.stem, path, bool(raw.is_gray) if raw else False, size)
            )
            self._pixels.append(raw)
        if skipped:
            warnings.warn(
                f"skipped {len(skipped)} image(s) smaller than {self.patch_size}x"
                f"{self.patch_size} (needed for {what}): {'; '.join(skipped)}",
                stacklevel=2,
            )
        if unreadable:
            warnings.warn(
                f"data.on_error=skip: skipped {len(unreadable)} of {len(items)} training image(s) "
                f"that cannot be read: {'; '.join(unreadable)}",
                stacklevel=2,
            )
        if not self._sources:
            where = source if isinstance(source, (str, Path)) else "training images"
            if unreadable and not skipped:
                raise ImageError(where, f"no training image left: all {len(items)} cannot be read "
                                        f"({'; '.join(unreadable)}); fix or remove them, or train on other images")
            raise ImageError(where, f"every image is smaller than the {self.patch_size}x{self.patch_size} "
                                    f"needed for {what}"
                                    + (f", or cannot be read ({'; '.join(unreadable)})" if unreadable else ""))

    @property
    def names(self) -> list[str]:
        return [s.name for s in self._sources]

    @property
    def num_images(self) -> int:
        return len(self._sources)

    def __len__(self) -> int:
        return self.num_images * self.repeats

    def _raw(self, i: int) -> RawImage:
        raw = self._pixels[i]
        if raw is None:
            src = self._sources[i]
            raw = read_image_raw(src.path)
            check_min_size(
                raw.array.shape[:2],
                self.patch_size,
                self.patch_size,
                src.path,
                f"patch {self.patch_size} at scale {self.scale}",
            )
        return raw

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Item ``key``: an index (crop and augmentation from torch's global RNG) or an
        ``(index, sample seed)`` pair from :class:`~taid_car.data.sampling.PatchSampler` (drawn
        from a generator seeded with it: the same patch whenever the pair is asked for)."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        i = index % self.num_images
        raw = self._raw(i)
        h, w = raw.array.shape[:2]
        p = self.patch_size
        top = int(torch.randint(0, h - p + 1, (), generator=generator).item())
        left = int(torch.randint(0, w - p + 1, (), generator=generator).item())
        crop = np.ascontiguousarray(raw.array[top : top + p, left : left + p])
        hr = torch.from_numpy(crop.astype(np.float32, copy=False)).permute(2, 0, 1)
        if raw.max_value != 1.0:
            hr = hr / float(raw.max_value)
        if self.augment:
            hr = dihedral(hr, int(torch.randint(0, 8, (), generator=generator).item()))
        return {"hr": hr.contiguous(), "name": self._sources[i].name, "is_gray": raw.is_gray}


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/rotations of a (..., H, W) tensor: k in 0..7 (0 = identity)."""
    if k & 4:
        x = x.transpose(-2, -1)
    if k & 2:
        x = x.flip(-2)
    if k & 1:
        x = x.flip(-1)
    return x
