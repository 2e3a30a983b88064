"""Turn data specs from the config into datasets.

A spec is either ``builtin:<split>`` (the embedded sample set: ``train``, ``val``, ``test``)
or a folder of images. A missing folder whose set name is a known dataset (Set5, Set14, B100,
Urban100, Manga109, General100, DIV2K_train_HR, DIV2K_valid_HR) is looked up in the cache and
downloaded there when ``download`` is true and the set has a public download; otherwise the
error says where to put the files.

Val/test sets (``data.val_sets``, ``data.test_sets``) are given either as a list of set names,
each the folder ``<data.root>/<name>`` (``data.root`` is ``${data_root}``), or as a mapping
``{name: spec}`` for folders anywhere; :func:`resolve_set_specs` turns both into the mapping.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from torch.utils.data import Dataset

from .datasets import BenchmarkDataset, InMemoryImage, NoImageLargeEnough, resolve_hr_folder
from .download import DATASETS, DatasetNotFoundError, ensure_dataset, lookup_dataset
from .sample import SampleDataset, sample_split

BUILTIN_PREFIX = "builtin:"


def is_known_dataset(name: str) -> bool:
    """True for names :func:`ensure_dataset` knows (Set5, ..., Manga109, General100, DIV2K; aliases too)."""
    try:
        lookup_dataset(name)
    except ValueError:
        return False
    return True


class SetSpecError(ValueError):
    """A ``data.val_sets`` / ``data.test_sets`` value of the wrong shape; the message names the entry."""


def _plain(value):
    """``value`` with OmegaConf containers turned into dicts/lists (for checks and messages)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _folders_under(base: Path) -> str:
    if not base.is_dir():
        return f"{base} does not exist"
    names = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    shown = ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
    return f"folders in {base}: {shown or 'none'}"


def resolve_set_specs(specs, root: str | os.PathLike | None, key: str = "data.test_sets") -> dict[str, str]:
    """Val/test sets as ``{name: spec}``, from a list of set names or a mapping.

    * A mapping ``{name: spec}`` (``spec``: a folder or ``builtin:<split>``) is returned as it is;
      its folders are checked when the sets are opened.
    * A list of names (or one name) resolves each name to the folder ``<root>/<name>``. A name
      with no folder there must be a known dataset (:data:`DATASETS`, aliases such as ``bsd100``
      included, which are then spelled as the dataset): it is looked up in the download cache
      when opened. ``None`` or an empty list gives no sets.

    ``key`` (``data.test_sets``, ``data.val_sets``) names the config key in errors. Raises
    :class:`SetSpecError` for entries that are not set names (not strings, paths, mappings in a
    list), duplicates, or names without ``root``; :class:`DatasetNotFoundError` for an unknown
    name with no folder, saying where it looked and which names are known.
    """
    specs = _plain(specs)
    if specs is None:
        return {}
    if isinstance(specs, Mapping):
        out: dict[str, str] = {}
        for name, spec in specs.items():
            if not isinstance(name, str) or not name:
                raise SetSpecError(f"{key}: set names must be non-empty strings, got {name!r}")
            if not isinstance(spec, (str, os.PathLike)) or not str(spec):
                raise SetSpecError(
                    f"{key}.{name}: expected a folder or builtin:<split>, got {spec!r} "
                    f"({type(spec).__name__})"
                )
            out[name] = os.fspath(spec)
        return out
    if isinstance(specs, str):
        specs = [specs]
    if not isinstance(specs, (list, tuple)):
        raise SetSpecError(
            f"{key}: expected a list of set names (e.g. [Set5, Set14]) or a mapping name: folder, "
            f"got {specs!r} ({type(specs).__name__})"
        )
    if specs and (root is None or not str(root)):
        raise SetSpecError(
            f"{key}={specs!r} lists set names, which are folders under data.root, but data.root "
            "is not set (the data configs set it to ${data_root}); set data.root or give "
            f"{key} as a mapping name: folder"
        )
    base = Path(str(root)).expanduser() if specs else Path()
    mapping_hint = (
        f"for a folder elsewhere or builtin:<split>, give all of {key} as a mapping instead, "
        f"e.g. '~{key}' '+{key}={{B100: /path/to/B100}}'"
    )
    out = {}
    for i, entry in enumerate(specs):
        where = f"{key}[{i}]"
        if isinstance(entry, Mapping):
            raise SetSpecError(
                f"{where}: {entry!r} is a mapping inside a list of set names; a list holds only "
                f"names of folders under data.root={base}; {mapping_hint}"
            )
        if not isinstance(entry, str):
            raise SetSpecError(
                f"{where}: expected a set name (a string such as Set5), got {entry!r} "
                f"({type(entry).__name__})"
            )
        if (not entry.strip() or entry in (".", "..") or "/" in entry or "\\" in entry
                or entry.startswith(BUILTIN_PREFIX)):
            raise SetSpecError(
                f"{where}: {entry!r} is not a set name (a folder name under data.root={base}); "
                f"{mapping_hint}"
            )
        name, folder = entry, base / entry
        if not folder.exists() and is_known_dataset(entry):
            name = lookup_dataset(entry).name  # bsd100 -> B100
            folder = base / name
        if name in out:
            also = f" (as {entry!r})" if name != entry else ""
            raise SetSpecError(f"{where}: {name!r} is listed twice{also} in {key}={specs!r}")
        if not folder.exists() and not is_known_dataset(name):
            raise DatasetNotFoundError(
                f"{where}: no folder {folder} for the set {entry!r}, and {entry!r} is not a known "
                f"dataset (known: {', '.join(DATASETS)}); {_folders_under(base)}. Put its HR "
                f"images in {folder}/, fix the name, or {mapping_hint}"
            )
        out[name] = str(folder)
    return out


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


def open_test_set(
    name: str, spec: str, scale: int, modcrop: int | None = None, download: bool = False, cache: bool = False,
    skip_small: bool = False, minimum: tuple[int, str] = (0, ""),
) -> Dataset:
    """One benchmark set at ``scale`` with HR cropped to a multiple of ``modcrop`` (default scale).

    ``cache``: keep decoded images in memory (for sets read again and again, as validation sets
    are); off by default, so scoring a set once holds one image at a time. ``skip_small``: leave
    out images too small for the factor, or for a model's ``minimum`` (side, why)
    (:class:`~taid_car.data.datasets.BenchmarkDataset`).
    """
    split = _builtin_split(str(spec))
    if split is not None:
        return SampleDataset(split, scale, modcrop, name=name, skip_small=skip_small, minimum=minimum)
    return BenchmarkDataset(_existing_or_cached(name, str(spec), download), scale, modcrop, name=name, cache=cache,
                            skip_small=skip_small, minimum=minimum)


def resolve_train_source(spec: str, download: bool = False) -> Path | list[InMemoryImage]:
    """Training images for :class:`TrainPatchDataset`: a sample split, a folder or a known dataset."""
    split = _builtin_split(str(spec))
    if split is not None:
        return sample_split(split)
    return resolve_hr_folder(_existing_or_cached(Path(str(spec)).name, str(spec), download))


def open_test_sets(data_cfg: Mapping, scale: int, cache: bool = False, skip_small: bool = False,
                   minimum: tuple[int, str] = (0, "")) -> dict[str, Dataset]:
    """All sets of ``data_cfg.test_sets`` (keys ``test_sets``, ``root``, ``modcrop``, ``download``);
    ``cache``, ``skip_small`` and ``minimum`` as in :func:`open_test_set`; with ``skip_small``, a set with no
    image large enough is left out with a warning naming it.

    ``test_sets``: a list of set names under ``root`` or a mapping name -> spec
    (:func:`resolve_set_specs`).
    """
    test_sets = resolve_set_specs(data_cfg.get("test_sets"), data_cfg.get("root"), "data.test_sets")
    if not test_sets:
        raise ValueError("data.test_sets is empty: name at least one benchmark set")
    sets = {}
    for name, spec in test_sets.items():
        try:
            sets[name] = open_test_set(name, spec, scale, data_cfg.get("modcrop"),
                                       bool(data_cfg.get("download", False)), cache, skip_small, minimum)
        except NoImageLargeEnough as err:
            warnings.warn(str(err), stacklevel=2)
    return sets
