"""Turn data specs from the config into datasets.

A spec is either ``builtin:<split>`` (the embedded sample set: ``train``, ``val``, ``test``)
or a folder of images. A missing folder whose set name is a known dataset (Set5, Set14, B100,
Urban100, DIV2K_train_HR, DIV2K_valid_HR) is looked up in the cache and downloaded there when
``download`` is true; otherwise the error says where to put the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch.utils.data import Dataset

from .datasets import BenchmarkDataset, InMemoryImage, resolve_hr_folder
from .download import DatasetNotFoundError, ensure_dataset, lookup_dataset
from .sample import SampleDataset, sample_split

BUILTIN_PREFIX = "builtin:"


def is_known_dataset(name: str) -> bool:
    """True for names :func:`ensure_dataset` can fetch (Set5, Set14, B100, Urban100, DIV2K...)."""
    try:
        lookup_dataset(name)
    except ValueError:
        return False
    return True


def _builtin_split(spec: str) -> str | None:
    return spec[len(BUILTIN_PREFIX):] if spec.startswith(BUILTIN_PREFIX) else None


def _existing_or_cached(name: str, spec: str, download: bool) -> Path:
    """``spec`` as a folder if it exists, else the cached copy of the known dataset ``name``."""
    folder = Path(spec).expanduser()
    if folder.exists() or not is_known_dataset(name):
        return folder  # a missing unknown folder is reported by the dataset, naming it
    try:
        return ensure_dataset(name, download=download)
    except DatasetNotFoundError as err:
        raise DatasetNotFoundError(f"{name}: {folder} does not exist. {err}") from err


def open_test_set(name: str, spec: str, scale: int, modcrop: int | None = None, download: bool = False) -> Dataset:
    """One benchmark set at ``scale`` with HR cropped to a multiple of ``modcrop`` (default scale)."""
    split = _builtin_split(str(spec))
    if split is not None:
        return SampleDataset(split, scale, modcrop, name=name)
    return BenchmarkDataset(_existing_or_cached(name, str(spec), download), scale, modcrop, name=name)


def resolve_train_source(spec: str, download: bool = False) -> Path | list[InMemoryImage]:
    """Training images for :class:`TrainPatchDataset`: a sample split, a folder or a known dataset."""
    split = _builtin_split(str(spec))
    if split is not None:
        return sample_split(split)
    return resolve_hr_folder(_existing_or_cached(Path(str(spec)).name, str(spec), download))


def open_test_sets(data_cfg: Mapping, scale: int) -> dict[str, Dataset]:
    """All sets of ``data_cfg.test_sets`` (keys ``test_sets``, ``modcrop``, ``download``)."""
    test_sets = data_cfg["test_sets"]
    if not test_sets:
        raise ValueError("data.test_sets is empty: name at least one benchmark set")
    return {
        name: open_test_set(name, spec, scale, data_cfg.get("modcrop"), bool(data_cfg.get("download", False)))
        for name, spec in test_sets.items()
    }
