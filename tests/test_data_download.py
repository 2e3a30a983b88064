"""Dataset download logic, entirely offline: archives are served from tmp files via file:// (through
pooch, with the module's local downloader), and pooch's HTTP downloader is mocked where it matters."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pooch
import pytest
from PIL import Image

from taid_car.data import (
    DATASETS,
    BenchmarkDataset,
    ChecksumError,
    DatasetNotFoundError,
    dataset_folder,
    default_cache_dir,
    ensure_dataset,
)
from taid_car.data import download as dl

pytestmark = pytest.mark.usefixtures("no_network")


def _png_bytes(seed: int, size: int = 24) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fake_div2k_zip(path: Path, n: int = 3) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("DIV2K_valid_HR/", "")
        for i in range(n):
            zf.writestr(f"DIV2K_valid_HR/{801 + i:04d}.png", _png_bytes(i))
        zf.writestr("DIV2K_valid_HR/readme.txt", "not an image")
        zf.writestr("../../evil.png", _png_bytes(99))  # never written outside the cache
    return path


def _fake_benchmark_tar(path: Path) -> Path:
    with tarfile.open(path, "w") as tf:
        for s, n in {"Set5": 5, "Set14": 14, "B100": 2, "Urban100": 3}.items():
            for i in range(n):
                for sub in ("HR", "LR_bicubic/X4"):
                    data = _png_bytes(i, 24 if sub == "HR" else 6)
                    info = tarfile.TarInfo(f"benchmark/{s}/{sub}/img{i:03d}.png")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return path


def _point(monkeypatch, name: str, archive: Path, **changes) -> None:
    ds = dataclasses.replace(DATASETS[name], url=archive.as_uri(), sha256=_sha(archive), **changes)
    monkeypatch.setitem(DATASETS, name, ds)


def test_registry_is_complete_and_pinned():
    assert set(DATASETS) == {
        "DIV2K_train_HR",
        "DIV2K_valid_HR",
        "Set5",
        "Set14",
        "B100",
        "Urban100",
        "Manga109",
        "General100",
    }
    assert (
        DATASETS["DIV2K_train_HR"].url
        == "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip"
    )
    assert (
        DATASETS["DIV2K_valid_HR"].url
        == "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip"
    )
    for ds in DATASETS.values():
        assert ds.sha256 is None or len(ds.sha256) == 64
        assert ds.url is None or ds.url.startswith("https://")
        assert ds.downloadable == (ds.url is not None) and (ds.downloadable or ds.manual)
    assert {DATASETS[s].count for s in ("Set5", "Set14")} == {5, 14}
    assert (DATASETS["Manga109"].count, DATASETS["General100"].count) == (109, 100)
    assert not DATASETS["Manga109"].downloadable and not DATASETS["General100"].downloadable


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TAID_CAR_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert dataset_folder("set5") == tmp_path / "c" / "Set5"
    monkeypatch.delenv("TAID_CAR_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == Path("~/.cache/taid_car").expanduser()
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_folder("Set6")


def test_download_disabled_says_where_to_put_files(monkeypatch, tmp_path):
    monkeypatch.setattr(dl, "_fetch", lambda *a, **k: pytest.fail("must not download"))
    with pytest.raises(DatasetNotFoundError) as e:
        ensure_dataset("Set14", tmp_path, download=False)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert str(tmp_path / "Set14") in msg and "download=False" in msg
    assert "https://cv.snu.ac.kr/research/EDSR/benchmark.tar" in msg
    assert "14 HR images" in msg and "Set14/HR/" in msg and ".png" in msg


def test_offline_error(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere.zip"
    monkeypatch.setitem(
        DATASETS,
        "DIV2K_valid_HR",
        dataclasses.replace(DATASETS["DIV2K_valid_HR"], url=missing.as_uri()),
    )
    with pytest.raises(DatasetNotFoundError) as e:
        ensure_dataset("div2k_valid", tmp_path / "cache", download=True, progress=False)
    msg = str(e.value)
    assert "download failed" in msg and str(tmp_path / "cache" / "DIV2K_valid_HR") in msg
    assert "100 HR images" in msg and "DIV2K_valid_HR/" in msg
    assert not list((tmp_path / "cache" / "downloads").glob("*"))  # no partial file left


def test_offline_error_from_http(monkeypatch, tmp_path):
    """The real https URL goes through pooch's HTTP downloader; offline, requests raises."""
    import requests

    calls = []

    def offline(self, url, output_file, pooch=None, check_only=False):
        calls.append(url)
        raise requests.exceptions.ConnectionError("Temporary failure in name resolution")

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", offline)
    with pytest.raises(DatasetNotFoundError, match="name resolution") as e:
        ensure_dataset("Set5", tmp_path, download=True, progress=False)
    assert calls == ["https://cv.snu.ac.kr/research/EDSR/benchmark.tar"]
    assert "download failed (ConnectionError" in str(e.value) and "5 HR images" in str(e.value)
    assert not list((tmp_path / "downloads").glob("*"))  # pooch removed its temporary file


def test_http_download_goes_through_pooch_with_the_pinned_hash(monkeypatch, tmp_path):
    archive = _fake_div2k_zip(tmp_path / "DIV2K_valid_HR.zip")
    https = "https://example.invalid/DIV2K_valid_HR.zip"
    _point(monkeypatch, "DIV2K_valid_HR", archive, count=3)
    monkeypatch.setitem(DATASETS, "DIV2K_valid_HR", dataclasses.replace(DATASETS["DIV2K_valid_HR"], url=https))
    seen = {}
    real_retrieve = pooch.retrieve

    def retrieve(url, known_hash=None, fname=None, path=None, downloader=None, **kw):
        seen.update(url=url, known_hash=known_hash, fname=fname, path=path, downloader=downloader)
        return real_retrieve(url, known_hash=known_hash, fname=fname, path=path,
                             downloader=lambda u, out, p=None: dl._copy_local(archive.as_uri(), out), **kw)

    monkeypatch.setattr(pooch, "retrieve", retrieve)
    cache = tmp_path / "cache"
    folder = ensure_dataset("DIV2K_valid_HR", cache, download=True, progress=False)
    assert len(list(folder.glob("*.png"))) == 3
    assert seen["url"] == https and seen["known_hash"] == f"sha256:{_sha(archive)}"
    assert seen["fname"] == "DIV2K_valid_HR.zip" and Path(seen["path"]) == cache / "downloads"
    assert type(seen["downloader"]).__name__ == "HTTPDownloader"


def test_kept_archive_is_reused_and_a_damaged_one_fetched_again(monkeypatch, tmp_path):
    archive = _fake_benchmark_tar(tmp_path / "benchmark.tar")
    for s in ("Set5", "Set14", "B100", "Urban100"):
        _point(monkeypatch, s, archive)
    cache = tmp_path / "cache"
    kept = cache / "downloads" / "benchmark.tar"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"truncated")  # an interrupted earlier download: its hash does not match
    with pytest.warns(UserWarning):
        ensure_dataset("Set5", cache, download=True, progress=False, keep_archive=True)
    assert _sha(kept) == _sha(archive)  # pooch fetched it again
    archive.unlink()  # from now on the source is gone: only the kept archive can serve
    shutil.rmtree(cache / "B100")
    with pytest.warns(UserWarning, match="B100 has 2 images"):
        assert ensure_dataset("B100", cache, download=True, progress=False) == cache / "B100"
    assert not kept.exists()  # removed after extraction (keep_archive=False)
def test_manual_only_sets_are_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setattr(dl, "_fetch", lambda *a, **k: pytest.fail("must not download"))
    for name, count, where in (("manga109", 109, "manga109.org"), ("General100", 100, "FSRCNN")):
        for download in (False, True):
            with pytest.raises(DatasetNotFoundError) as e:
                ensure_dataset(name, tmp_path, download=download)
            msg = str(e.value)
            assert "manual placement only" in msg and where in msg and f"{count} HR images" in msg
            assert str(tmp_path / dl.lookup_dataset(name).name) in msg
    hr = tmp_path / "Manga109"
    hr.mkdir()
    for i in range(109):
        (hr / f"title{i:03d}.png").write_bytes(_png_bytes(i, 8))
    assert ensure_dataset("Manga109", tmp_path) == hr  # placed by hand: used as it is


def test_zip_download_extract_and_reuse(monkeypatch, tmp_path):
    archive = _fake_div2k_zip(tmp_path / "DIV2K_valid_HR.zip")
    _point(monkeypatch, "DIV2K_valid_HR", archive, count=3)
    cache = tmp_path / "cache"
    folder = ensure_dataset("DIV2K_valid_HR", cache, download=True, progress=False)
    assert folder == cache / "DIV2K_valid_HR"
    assert sorted(p.name for p in folder.iterdir()) == ["0801.png", "0802.png", "0803.png"]
    assert not (tmp_path / "evil.png").exists() and not (cache.parent / "evil.png").exists()
    assert not (cache / "downloads" / "DIV2K_valid_HR.zip").exists()  # archive removed
    assert not [p for p in cache.iterdir() if p.name.startswith(".extract")]
    assert len(BenchmarkDataset(folder, scale=2)) == 3

    monkeypatch.setattr(dl, "_fetch", lambda *a, **k: pytest.fail("already there: no download"))
    assert ensure_dataset("div2k-valid", cache, download=True) == folder
    assert ensure_dataset("div2k-valid", cache, download=False) == folder


@pytest.mark.filterwarnings("ignore:.*Urban100 has 3 images")
def test_tar_extracts_requested_set_and_siblings(monkeypatch, tmp_path):
    archive = _fake_benchmark_tar(tmp_path / "benchmark.tar")
    for s in ("Set5", "Set14", "B100", "Urban100"):
        _point(monkeypatch, s, archive)
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="B100 has 2 images, expected 100"):
        folder = ensure_dataset("Set5", cache, download=True, progress=False, keep_archive=True)
    assert folder == cache / "Set5" and len(list(folder.glob("*.png"))) == 5
    assert len(list((cache / "Set14").glob("*.png"))) == 14  # extracted along with it
    assert not (cache / "Set5" / "LR_bicubic").exists()  # HR only, flat
    assert (cache / "downloads" / "benchmark.tar").is_file()
    monkeypatch.setattr(dl, "_fetch", lambda *a, **k: pytest.fail("already there"))
    assert ensure_dataset("Set14", cache, download=False) == cache / "Set14"


def test_checksum_mismatch(monkeypatch, tmp_path):
    archive = _fake_div2k_zip(tmp_path / "DIV2K_valid_HR.zip")
    bad = "0" * 64
    monkeypatch.setitem(
        DATASETS,
        "DIV2K_valid_HR",
        dataclasses.replace(DATASETS["DIV2K_valid_HR"], url=archive.as_uri(), sha256=bad),
    )
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as e:
        ensure_dataset("DIV2K_valid_HR", cache, download=True, progress=False)
    msg = str(e.value)
    assert "SHA-256 mismatch" in msg and bad in msg and _sha(archive) in msg
    assert "DIV2K_valid_HR.zip" in msg
    assert not list((cache / "downloads").glob("*")) and not (cache / "DIV2K_valid_HR").exists()


def test_unknown_checksum_warns_and_still_checks_archive(monkeypatch, tmp_path):
    archive = _fake_div2k_zip(tmp_path / "DIV2K_valid_HR.zip")
    monkeypatch.setitem(
        DATASETS,
        "DIV2K_valid_HR",
        dataclasses.replace(DATASETS["DIV2K_valid_HR"], url=archive.as_uri(), sha256=None, count=3),
    )
    with pytest.warns(UserWarning, match="no pinned checksum"):
        ensure_dataset("DIV2K_valid_HR", tmp_path / "c1", download=True, progress=False)

    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not an archive" * 10)
    monkeypatch.setitem(
        DATASETS,
        "DIV2K_valid_HR",
        dataclasses.replace(DATASETS["DIV2K_valid_HR"], url=junk.as_uri(), sha256=None),
    )
    with pytest.raises(ValueError, match="archive cannot be read"), pytest.warns(UserWarning):
        ensure_dataset("DIV2K_valid_HR", tmp_path / "c2", download=True, progress=False)
    assert not (tmp_path / "c2" / "DIV2K_valid_HR").exists()


def test_archive_with_unexpected_layout(monkeypatch, tmp_path):
    archive = tmp_path / "DIV2K_valid_HR.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/0801.png", _png_bytes(0))
    _point(monkeypatch, "DIV2K_valid_HR", archive)
    with pytest.raises(ValueError, match=r"no images under 'DIV2K_valid_HR/'.*images/0801\.png"):
        ensure_dataset("DIV2K_valid_HR", tmp_path / "c", download=True, progress=False)


def test_files_placed_by_hand_are_used(monkeypatch, tmp_path):
    monkeypatch.setattr(dl, "_fetch", lambda *a, **k: pytest.fail("must not download"))
    hr = tmp_path / "Set5" / "HR"
    hr.mkdir(parents=True)
    for i in range(5):
        (hr / f"x{i}.png").write_bytes(_png_bytes(i))
    assert ensure_dataset("Set5", tmp_path) == hr
    (tmp_path / "Set14").mkdir()
    (tmp_path / "Set14" / "a.png").write_bytes(_png_bytes(0))
    with pytest.warns(UserWarning, match="1 images, fewer than the 14"):
        assert ensure_dataset("Set14", tmp_path) == tmp_path / "Set14"


def test_existing_folder_without_images_is_filled(monkeypatch, tmp_path):
    archive = _fake_div2k_zip(tmp_path / "DIV2K_valid_HR.zip")
    _point(monkeypatch, "DIV2K_valid_HR", archive, count=3)
    target = tmp_path / "cache" / "DIV2K_valid_HR"
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    assert (
        ensure_dataset("DIV2K_valid_HR", tmp_path / "cache", download=True, progress=False)
        == target
    )
    assert sorted(p.name for p in target.iterdir()) == [
        "0801.png",
        "0802.png",
        "0803.png",
        "notes.txt",
    ]
