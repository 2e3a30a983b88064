"""DIV2K and the four benchmark sets, fetched from their official hosts into a cache folder.

Hosts and pinned SHA-256 checksums:

* DIV2K train HR (800 PNG) and valid HR (100 PNG): the ETH Zurich DIV2K site,
  https://data.vision.ee.ethz.ch/cvl/DIV2K/ (``DIV2K_train_HR.zip``, ``DIV2K_valid_HR.zip``).
  Checksums and sizes as recorded by TensorFlow Datasets (``div2k/checksums.tsv``) and matched
  by independent projects.
* Set5, Set14, B100, Urban100 (HR only): the EDSR authors' ``benchmark.tar`` (Lim et al.,
  CVPRW 2017) at https://cv.snu.ac.kr/research/EDSR/benchmark.tar, one 250 MB archive holding
  ``benchmark/<set>/HR/*.png`` (and LR images, which are not extracted). The four original
  homepages (Bevilacqua et al., Zeyde et al., BSDS, Huang et al.) do not serve one HR-only PNG
  layout; this archive is the distribution most SR code uses. Its checksum was recorded by a
  third-party project, not verified here; a mismatch raises :class:`ChecksumError` saying so.

Layout in the cache (default ``~/.cache/taid_car``, or ``$TAID_CAR_CACHE``)::

    <cache>/DIV2K_train_HR/0001.png ... 0800.png
    <cache>/DIV2K_valid_HR/0801.png ... 0900.png
    <cache>/Set5/*.png  <cache>/Set14/*.png  <cache>/B100/*.png  <cache>/Urban100/*.png
    <cache>/downloads/   archives while downloading (removed after extraction by default)

Files placed there by hand are used as they are (any layout :func:`resolve_hr_folder` knows).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .datasets import resolve_hr_folder
from .io import IMAGE_EXTENSIONS, ImageError, list_images

__all__ = [
    "CACHE_ENV",
    "DATASETS",
    "ChecksumError",
    "DatasetNotFoundError",
    "RemoteDataset",
    "dataset_folder",
    "default_cache_dir",
    "ensure_dataset",
    "lookup_dataset",
]

CACHE_ENV = "TAID_CAR_CACHE"

_BENCHMARK_URL = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
# Recorded by a third-party project (not verified here): 250112000 bytes.
_BENCHMARK_SHA256 = "80c21c333bbf6ceb5308b7243761f8284478274413a97b96f1d63e9045fd93e8"


@dataclass(frozen=True)
class RemoteDataset:
    """Where one HR image set comes from.

    ``member_dir``: the folder inside the archive whose image files form the set (matched as a
    path suffix, so a leading ``benchmark/`` or ``./`` does not matter). ``sha256``: ``None``
    when no checksum is known (the archive is then only checked to open and hold the images).
    ``size``: archive bytes, for messages; ``count``: how many images the set has.
    """

    name: str
    url: str
    sha256: str | None
    size: int | None
    member_dir: str
    count: int
    homepage: str
    siblings: tuple[str, ...] = ()  # other sets in the same archive, extracted along with it

    @property
    def archive_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


_DIV2K = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
_BENCH_SETS = ("Set5", "Set14", "B100", "Urban100")
_BENCH_COUNTS = {"Set5": 5, "Set14": 14, "B100": 100, "Urban100": 100}

DATASETS: dict[str, RemoteDataset] = {
    "DIV2K_train_HR": RemoteDataset(
        "DIV2K_train_HR",
        _DIV2K + "DIV2K_train_HR.zip",
        "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
        3530603713,
        "DIV2K_train_HR",
        800,
        _DIV2K,
    ),
    "DIV2K_valid_HR": RemoteDataset(
        "DIV2K_valid_HR",
        _DIV2K + "DIV2K_valid_HR.zip",
        "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
        448993893,
        "DIV2K_valid_HR",
        100,
        _DIV2K,
    ),
    **{
        s: RemoteDataset(
            s,
            _BENCHMARK_URL,
            _BENCHMARK_SHA256,
            250112000,
            f"{s}/HR",
            _BENCH_COUNTS[s],
            "https://github.com/sanghyun-son/EDSR-PyTorch",
            tuple(t for t in _BENCH_SETS if t != s),
        )
        for s in _BENCH_SETS
    },
}
"""Known sets by name. Aliases accepted by :func:`ensure_dataset`: see ``_ALIASES``."""

_ALIASES = {
    "div2k_train": "DIV2K_train_HR",
    "div2k-train": "DIV2K_train_HR",
    "div2k_train_hr": "DIV2K_train_HR",
    "div2k_valid": "DIV2K_valid_HR",
    "div2k-valid": "DIV2K_valid_HR",
    "div2k_valid_hr": "DIV2K_valid_HR",
    "div2k_val": "DIV2K_valid_HR",
    "set5": "Set5",
    "set14": "Set14",
    "b100": "B100",
    "bsd100": "B100",
    "bsds100": "B100",
    "urban100": "Urban100",
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset that is neither in the cache nor downloadable now; the message says what to do."""


class ChecksumError(ValueError):
    """A downloaded archive whose SHA-256 differs from the pinned one (the file is deleted)."""


def default_cache_dir() -> Path:
    """``$TAID_CAR_CACHE``, else ``$XDG_CACHE_HOME/taid_car``, else ``~/.cache/taid_car``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "taid_car"


def lookup_dataset(name: str) -> RemoteDataset:
    """The :data:`DATASETS` entry for ``name`` or an alias (``div2k_valid``, ``bsd100``, ...)."""
    key = name if name in DATASETS else _ALIASES.get(name.lower())
    if key is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


_lookup = lookup_dataset  # older private name, still imported by sources.py


def dataset_folder(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where ``name``'s HR images live (or will live) in the cache: ``<cache>/<name>/``."""
    return Path(cache_dir or default_cache_dir()).expanduser() / _lookup(name).name


def _present(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    try:
        return resolve_hr_folder(folder)
    except ImageError:
        return None


def ensure_dataset(
    name: str,
    cache_dir: str | Path | None = None,
    download: bool = False,
    *,
    progress: bool = True,
    keep_archive: bool = False,
) -> Path:
    """The folder of ``name``'s HR images, downloading and extracting it first if allowed.

    ``name``: a key of :data:`DATASETS` (or an alias such as ``div2k_valid``, ``bsd100``).
    Returns the HR folder if already there (extracted earlier or placed by hand). Otherwise, with
    ``download=True``, fetches the archive (progress bar), checks its SHA-256, extracts only the
    HR images and returns the folder. Raises :class:`DatasetNotFoundError` when the set is
    absent and downloading is disabled or fails (offline), saying where to put which files.
    """
    ds = _lookup(name)
    cache = Path(cache_dir or default_cache_dir()).expanduser()
    target = cache / ds.name
    found = _present(target)
    if found is not None:
        n = len(list_images(found))
        if n < ds.count:
            warnings.warn(
                f"{found}: {n} images, fewer than the {ds.count} of {ds.name}", stacklevel=2
            )
        return found
    if not download:
        raise DatasetNotFoundError(
            _instructions(ds, target, "downloading is disabled (download=False)")
        )
    archive = cache / "downloads" / ds.archive_name
    try:
        if not archive.is_file():
            _fetch(ds.url, archive, ds.sha256, progress=progress)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DatasetNotFoundError(
            _instructions(ds, target, f"the download failed ({type(e).__name__}: {e})")
        ) from e
    try:
        _extract(archive, ds, cache)
    finally:
        if not keep_archive and archive.exists():
            archive.unlink()
    found = _present(target)
    if found is None:
        raise ImageError(target, f"no images after extracting {archive.name}")
    return found


def _mb(size: int | None) -> str:
    return f", {size / 1e6:,.0f} MB" if size else ""


def _instructions(ds: RemoteDataset, target: Path, why: str) -> str:
    return (
        f"{ds.name} is not in {target} and {why}. Either run again online with downloading "
        f"enabled (download=True), or download {ds.url} (archive {ds.archive_name}{_mb(ds.size)}; "
        f"see {ds.homepage}) yourself and put the {ds.count} HR images of its "
        f"'{ds.member_dir}/' folder directly into {target}/ (files ending in "
        f"{' '.join(IMAGE_EXTENSIONS)}; {target}/HR/ works too)."
    )


def _fetch(url: str, dest: Path, sha256: str | None, *, progress: bool = True) -> None:
    """Download ``url`` to ``dest`` (via ``dest.part``), checking the SHA-256 when it is known."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    got = digest.hexdigest()
    if sha256 is not None and got != sha256.lower():
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{dest.name} from {url}: SHA-256 mismatch (expected {sha256}, got {got}); the file "
            "was deleted. Retry the download; if it persists the host changed the archive: "
            f"place the images by hand (see the taid_car.data.download docstring)."
        )
    if sha256 is None:
        warnings.warn(f"{url}: no pinned checksum; downloaded file has SHA-256 {got}", stacklevel=2)
    part.replace(dest)


def _member_pattern(member_dir: str) -> re.Pattern[str]:
    exts = "|".join(re.escape(e) for e in IMAGE_EXTENSIONS)
    return re.compile(rf"(?:^|/){re.escape(member_dir)}/([^/]+(?:{exts}))$", re.IGNORECASE)


def _extract(archive: Path, ds: RemoteDataset, cache: Path) -> None:
    """Extract the HR images of ``ds`` (and its archive siblings) into ``<cache>/<set>/``, flat.

    Files go to a temporary folder first and are moved in place whole, so an interrupted
    extraction leaves nothing half-done. Only image files under the expected folder are written,
    under their base names (no path from the archive is trusted).
    """
    wanted = {ds.name: ds, **{s: DATASETS[s] for s in ds.siblings if s in DATASETS}}
    wanted = {k: v for k, v in wanted.items() if k == ds.name or _present(cache / k) is None}
    patterns = {k: _member_pattern(v.member_dir) for k, v in wanted.items()}
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache))
    counts = dict.fromkeys(wanted, 0)
    seen: list[str] = []
    try:
        try:
            for member, read in _members(archive):
                if len(seen) < 10:
                    seen.append(member)
                for key, pat in patterns.items():
                    m = pat.search(member.replace("\\", "/"))
                    if m and not m.group(1).startswith("."):
                        out = tmp / key / m.group(1)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with read() as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        counts[key] += 1
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
            raise ImageError(
                archive,
                f"archive is damaged ({type(e).__name__}: {e}); delete it and download again",
            ) from e
        if counts[ds.name] == 0:
            raise ImageError(
                archive,
                f"holds no images under '{ds.member_dir}/' (layout changed?); first members: "
                f"{', '.join(seen) or 'none'}",
            )
        for key, n in counts.items():
            if n == 0:
                continue
            if n != wanted[key].count:
                warnings.warn(
                    f"{archive}: {key} has {n} images, expected {wanted[key].count}", stacklevel=3
                )
            final = cache / key
            if not final.exists():
                (tmp / key).replace(final)  # the whole set appears at once
                continue
            for f in sorted((tmp / key).iterdir()):  # a folder already there: add what is missing
                if not (final / f.name).exists():
                    f.replace(final / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _members(archive: Path):
    """Yield ``(member name, opener)`` for every regular file of a zip or tar archive."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        yield info.filename, (lambda info=info: zf.open(info))
            return
        with tarfile.open(archive) as tf:
            for info in tf:
                if info.isfile():
                    yield info.name, (lambda info=info: tf.extractfile(info))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise ImageError(
            archive,
            f"archive cannot be read ({type(e).__name__}: {e}); delete it and download again",
        ) from e
