"""DIV2K and the benchmark sets: fetched with pooch (checksummed) into a cache folder, or placed by hand.

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
* Manga109 (109 images) and General100 (100 images): known, **manual placement only**. Manga109's
  images are given out by its authors on request for academic use, with redistribution forbidden
  (http://www.manga109.org/en/download.html); General100 (Dong et al., FSRCNN, ECCV 2016) is linked
  from http://mmlab.ie.cuhk.edu.hk/projects/FSRCNN.html through a file-sharing link with no
  published checksum. Neither has a public, checksummable URL, so :func:`ensure_dataset` never
  downloads them; its error says where to get them and where to put them.

Downloads go through :func:`pooch.retrieve` (streamed to a temporary file in ``downloads/``, moved
in place only when its SHA-256 matches; ``file://`` URLs, e.g. a local mirror, are copied).
Only the HR images of an archive are extracted.

Layout in the cache (default ``~/.cache/taid_car``, or ``$TAID_CAR_CACHE``)::

    <cache>/DIV2K_train_HR/0001.png ... 0800.png
    <cache>/DIV2K_valid_HR/0801.png ... 0900.png
    <cache>/Set5/*.png  <cache>/Set14/*.png  <cache>/B100/*.png  <cache>/Urban100/*.png
    <cache>/Manga109/*  <cache>/General100/*   (placed by hand)
    <cache>/downloads/   archives while downloading (removed after extraction by default)

Files placed there by hand are used as they are (any layout :func:`resolve_hr_folder` knows).
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import urllib.parse
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

    ``url``: ``None`` for a set that is never downloaded (manual placement only; ``manual``
    says where to get it). ``member_dir``: the folder inside the archive whose image files form
    the set (matched as a path suffix, so a leading ``benchmark/`` or ``./`` does not matter).
    ``sha256``: ``None`` when no checksum is known (the archive is then only checked to open and
    hold the images). ``size``: archive bytes, for messages; ``count``: how many images the set has.
    """

    name: str
    url: str | None
    sha256: str | None
    size: int | None
    member_dir: str
    count: int
    homepage: str
    siblings: tuple[str, ...] = ()  # other sets in the same archive, extracted along with it
    manual: str = ""  # manual placement only: where and how to get the images

    @property
    def archive_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1] if self.url else ""

    @property
    def downloadable(self) -> bool:
        return self.url is not None


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
    "Manga109": RemoteDataset(
        "Manga109",
        None,
        None,
        None,
        "Manga109",
        109,
        "http://www.manga109.org/en/",
        manual=(
            "Manga109 is given out by its authors for academic use only, on request, and may not "
            "be redistributed: send the form at http://www.manga109.org/en/download.html to get a "
            "download address and password. SR papers test on 109 images, one per volume"
        ),
    ),
    "General100": RemoteDataset(
        "General100",
        None,
        None,
        None,
        "General100",
        100,
        "http://mmlab.ie.cuhk.edu.hk/projects/FSRCNN.html",
        manual=(
            "General-100 (Dong et al., FSRCNN, ECCV 2016; 100 BMP images) is linked from the FSRCNN "
            "project page http://mmlab.ie.cuhk.edu.hk/projects/FSRCNN.html through a file-sharing "
            "link with no published checksum: download it from there"
        ),
    ),
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
    "manga109": "Manga109",
    "general100": "General100",
    "general-100": "General100",
    "general_100": "General100",
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
    ``download=True``, fetches the archive through pooch into ``<cache>/downloads/`` (progress
    bar; an archive already there is reused when its SHA-256 matches), extracts only the HR
    images and returns the folder. Raises :class:`DatasetNotFoundError` when the set is absent
    and downloading is disabled, fails (offline) or is not possible (manual-placement sets such
    as Manga109), saying where to put which files; :class:`ChecksumError` on a SHA-256 mismatch.
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
    if not ds.downloadable:
        raise DatasetNotFoundError(
            _instructions(ds, target, "it has no public download (manual placement only)")
        )
    if not download:
        raise DatasetNotFoundError(
            _instructions(ds, target, "downloading is disabled (download=False)")
        )
    archive = cache / "downloads" / ds.archive_name
    try:
        _fetch(ds.url, archive, ds.sha256, progress=progress)
    except OSError as e:  # offline, HTTP errors (requests' exceptions are OSErrors), missing file://
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
    if not ds.downloadable:
        return (
            f"{ds.name} is not in {target} and {why}. {ds.manual}; then put its {ds.count} HR "
            f"images directly into {target}/ (files ending in {' '.join(IMAGE_EXTENSIONS)}; "
            f"{target}/HR/ works too), or point the set at the folder holding them."
        )
    return (
        f"{ds.name} is not in {target} and {why}. Either run again online with downloading "
        f"enabled (download=True), or download {ds.url} (archive {ds.archive_name}{_mb(ds.size)}; "
        f"see {ds.homepage}) yourself and put the {ds.count} HR images of its "
        f"'{ds.member_dir}/' folder directly into {target}/ (files ending in "
        f"{' '.join(IMAGE_EXTENSIONS)}; {target}/HR/ works too)."
    )


_HASH_MISMATCH = re.compile(r"expected (\S+) but got ([0-9a-fA-F]+)")  # pooch's ValueError text


def _copy_local(url: str, output_file, pooch=None, check_only: bool = False) -> bool | None:
    """A pooch downloader for ``file://`` URLs (a local mirror): pooch itself only knows remote ones."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if check_only:
        return source.is_file()
    with open(source, "rb") as src:  # FileNotFoundError (an OSError) when it is missing
        if hasattr(output_file, "write"):
            shutil.copyfileobj(src, output_file)
        else:
            with open(output_file, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return None


def _downloader(url: str, progress: bool):
    """pooch's HTTP downloader (progress bar, 60 s timeout), :func:`_copy_local` for ``file://``."""
    import pooch

    if url.startswith("file:"):
        return _copy_local
    if url.startswith(("http://", "https://")):
        return pooch.HTTPDownloader(progressbar=progress, timeout=60)
    return pooch.choose_downloader(url, progressbar=progress)


def _fetch(url: str, dest: Path, sha256: str | None, *, progress: bool = True) -> None:
    """Download ``url`` to ``dest`` with :func:`pooch.retrieve`, checking the SHA-256 when it is known.

    pooch streams into a temporary file beside ``dest`` and moves it in place only when the hash
    matches (otherwise it is deleted); a ``dest`` already there is reused when its hash matches and
    downloaded again when it does not.
    """
    import pooch

    known = f"sha256:{sha256.lower()}" if sha256 else None
    try:
        path = pooch.retrieve(
            url, known_hash=known, fname=dest.name, path=dest.parent,
            downloader=_downloader(url, progress), progressbar=progress,
        )
    except ValueError as e:
        mismatch = _HASH_MISMATCH.search(str(e)) if "does not match the known hash" in str(e) else None
        if mismatch is None:
            raise
        raise ChecksumError(
            f"{dest.name} from {url}: SHA-256 mismatch (expected {sha256}, got {mismatch.group(2)}); "
            "the file was deleted. Retry the download; if it persists the host changed the archive: "
            "place the images by hand (see the taid_car.data.download docstring)."
        ) from e
    if sha256 is None:
        warnings.warn(
            f"{url}: no pinned checksum; downloaded file has SHA-256 {pooch.file_hash(path)}", stacklevel=2
        )


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
