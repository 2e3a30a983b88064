"""The embedded sample set: public images that ship inside the scikit-image wheel.

Needs no download: the files are read straight from ``skimage/data/`` (never through
``skimage.data.<name>()``, which may fetch from the network for some names). The split is a
fixed list of names, disjoint by construction (checked at import):

=====  ==========================================================================================
split  images (H x W; gray = one luminance channel)
=====  ==========================================================================================
train  hubble_deep_field 872x1000, retina 1411x1411, motorcycle_left 500x741,
       motorcycle_right 500x741, immunohistochemistry 512x512, moon 512x512 gray,
       brick 512x512 gray, grass 512x512 gray, gravel 512x512 gray
val    rocket 427x640, coins 303x384 gray
test   astronaut 512x512, coffee 400x600, chelsea 300x451, camera 512x512 gray
=====  ==========================================================================================

``motorcycle_left``/``right`` are a stereo pair, so both sit in ``train``. Left out: synthetic or
tiny images (colorwheel, chessboard, phantom, logo, horse, microaneurysms), text pages and the
motion-blurred clock. ``test`` includes a gray image, as Set14 does (``bridge``).
"""

from __future__ import annotations

from pathlib import Path

from .datasets import BenchmarkDataset, InMemoryImage
from .io import ImageError, read_image

__all__ = [
    "SAMPLE_FILES",
    "SAMPLE_SPLITS",
    "SampleDataset",
    "sample_dir",
    "sample_paths",
    "sample_split",
]

SAMPLE_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "moon": "moon.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
}
"""Sample name → file name inside ``skimage/data/``."""

SAMPLE_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "hubble_deep_field",
        "retina",
        "motorcycle_left",
        "motorcycle_right",
        "immunohistochemistry",
        "moon",
        "brick",
        "grass",
        "gravel",
    ),
    "val": ("rocket", "coins"),
    "test": ("astronaut", "coffee", "chelsea", "camera"),
}
"""Fixed, disjoint train / val / test name lists."""

_ALIASES = {"validation": "val", "valid": "val"}

_all = [n for names in SAMPLE_SPLITS.values() for n in names]
assert len(_all) == len(set(_all)) == len(SAMPLE_FILES), (
    "sample splits must be disjoint and complete"
)


def sample_dir() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image wheel."""
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


def _split(split: str) -> tuple[str, ...]:
    key = _ALIASES.get(split, split)
    if key not in SAMPLE_SPLITS:
        raise ValueError(
            f"unknown sample split {split!r}; choose one of {', '.join(SAMPLE_SPLITS)}"
        )
    return SAMPLE_SPLITS[key]


def sample_paths(split: str) -> list[Path]:
    """Image files of one split (``train``, ``val``/``validation``, ``test``), in list order."""
    folder = sample_dir()
    paths = [folder / SAMPLE_FILES[n] for n in _split(split)]
    for p in paths:
        if not p.is_file():
            raise ImageError(
                p,
                "sample image missing from the installed scikit-image wheel "
                "(reinstall scikit-image>=0.22)",
            )
    return paths


def sample_split(split: str) -> list[InMemoryImage]:
    """Decoded images of one split: ``(name, (3, H, W) float32 RGB in [0, 1], is_gray)``."""
    out = []
    for name, path in zip(_split(split), sample_paths(split)):
        img = read_image(path)
        out.append(InMemoryImage(name, img.tensor, img.is_gray))
    return out


class SampleDataset(BenchmarkDataset):
    """One split of the sample set, with :class:`BenchmarkDataset` items and cropping.

    ``name`` of each item is the sample name (e.g. ``"immunohistochemistry"``), not the file stem.
    """

    def __init__(
        self,
        split: str = "test",
        scale: int = 4,
        modcrop_multiple: int | None = None,
        name: str | None = None,
        *,
        cache: bool = True,
        skip_small: bool = False,
        minimum: tuple[int, str] = (0, ""),
    ) -> None:
        self.split = _ALIASES.get(split, split)
        self.root = sample_dir()
        paths = sample_paths(split)
        self._setup(paths, scale, modcrop_multiple, name or f"sample-{self.split}", cache, skip_small, minimum)
        kept = set(self.paths)  # without the images skip_small left out
        self._sample_names = [n for n, p in zip(_split(split), paths) if p in kept]

    @property
    def names(self) -> list[str]:
        return list(self._sample_names)

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        item["name"] = self._sample_names[index]
        return item
