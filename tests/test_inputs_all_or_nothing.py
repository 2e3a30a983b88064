"""Inputs are all or nothing: every listed image entry is read or named (dangling symlinks and
symlink loops included), validation/test sets never shrink silently, training follows
``data.on_error``, and EXIF orientation is applied as viewers apply it (said once)."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers import bicubic_checkpoint, compose_evaluate
from taid_car.data import io as image_io
from taid_car.data.datamodule import RescaleDataModule, split_holdout
from taid_car.data.datasets import BenchmarkDataset, TrainPatchDataset
from taid_car.data.io import ImageError, list_images, probe_size, read_image_raw
from taid_car.errors import reported
from taid_car.evaluate import run_evaluation
from taid_car.rescale import main as rescale_main

RNG = np.random.default_rng(31)


def _png(path: Path, h: int = 32, w: int = 32) -> np.ndarray:
    a = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).save(path)
    return a


def _dangling(path: Path) -> Path:
    os.symlink(path.parent / "unmounted" / path.name, path)
    return path


def _loop(path: Path) -> Path:
    os.symlink(path.name, path)  # a link to itself
    return path


def _set_with_bad_entries(folder: Path) -> list[str]:
    """3 readable PNGs and 2 dangling links (storage not mounted); returns the bad names."""
    folder.mkdir(parents=True)
    for name in ("a.png", "c.png", "e.png"):
        _png(folder / name)
    return [_dangling(folder / "b.png").name, _dangling(folder / "d.png").name]


# --------------------------------------------------------------------------- listing and reading


def test_listing_keeps_dangling_links_and_loops_and_the_reader_names_them(tmp_path):
    _png(tmp_path / "a.png")
    _dangling(tmp_path / "b.png")
    _loop(tmp_path / "c.png")
    (tmp_path / "d.png").mkdir()  # a folder is no entry
    os.symlink(tmp_path / "d.png", tmp_path / "e.png")  # nor a link to one
    os.mkfifo(tmp_path / "f.png")  # a FIFO is, and must not block the reader
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.png", "c.png", "f.png"]
    for reader in (probe_size, read_image_raw):
        with pytest.raises(ImageError, match=r"b\.png: dangling symlink to .*unmounted.*does not exist"):
            reader(tmp_path / "b.png")
        with pytest.raises(ImageError, match=r"c\.png: symlink loop"):
            reader(tmp_path / "c.png")
        with pytest.raises(ImageError, match=r"f\.png: is not a regular file"):
            reader(tmp_path / "f.png")
        with pytest.raises(ImageError, match=r"e\.png: is a folder"):
            reader(tmp_path / "e.png")


def test_a_folder_of_dangling_links_only_is_listed_not_called_empty(tmp_path):
    _dangling(tmp_path / "a.png")
    assert [p.name for p in list_images(tmp_path)] == ["a.png"]


# --------------------------------------------------------------------------- test and validation sets


@pytest.mark.parametrize("skip_small", [False, True])
def test_test_set_with_dangling_links_raises_naming_every_one(tmp_path, skip_small):
    bad = _set_with_bad_entries(tmp_path / "Set5")
    with pytest.raises(ImageError) as e:
        BenchmarkDataset(tmp_path / "Set5", scale=2, skip_small=skip_small)
    msg = str(e.value)
    assert "\n" not in msg and "2 of the 5 image(s) of the set Set5 cannot be read" in msg, msg
    for name in bad:
        assert f"{name} (dangling symlink to {tmp_path / 'Set5' / 'unmounted' / name}" in msg, msg
    assert e.value.path == tmp_path / "Set5"


def test_test_set_with_a_symlink_loop_raises(tmp_path):
    folder = tmp_path / "Set14"
    folder.mkdir()
    _png(folder / "a.png")
    _loop(folder / "z.png")
    with pytest.raises(ImageError, match=r"1 of the 2 image\(s\) of the set Set14 cannot be read: z\.png \(symlink loop"):
        BenchmarkDataset(folder, scale=2)


def test_evaluate_refuses_a_partial_test_set_in_one_line(tmp_path, capsys):
    bad = _set_with_bad_entries(tmp_path / "Set5")
    cfg = compose_evaluate(["data=benchmark", f"data_root={tmp_path}", "data.test_sets=[Set5]", "scales=[2]"])
    with pytest.raises(ImageError) as e:
        run_evaluation(cfg)
    assert all(name in str(e.value) for name in bad)
    with pytest.raises(SystemExit) as exit_, reported("taid_car.evaluate"):  # what the CLI does with it
        run_evaluation(cfg)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("taid_car.evaluate: error: "), err
    assert all(name in err for name in bad) and "never scored in part" in err


# --------------------------------------------------------------------------- training folders


def _train_folder(folder: Path) -> None:
    folder.mkdir()
    for name in ("a.png", "c.png", "e.png"):
        _png(folder / name)
    _loop(folder / "b.png")
    _dangling(folder / "d.png")


def test_training_folder_raises_or_skips_loops_and_dangling_links_by_name(tmp_path):
    folder = tmp_path / "train"
    _train_folder(folder)
    with pytest.raises(ImageError, match=r"b\.png: symlink loop"):
        TrainPatchDataset(folder, patch_size=16, scale=2)  # on_error=raise, the default
    with pytest.warns(UserWarning) as record:
        ds = TrainPatchDataset(folder, patch_size=16, scale=2, on_error="skip")
    assert ds.names == ["a", "c", "e"]
    (warning,) = [str(w.message) for w in record if "on_error=skip" in str(w.message)]
    assert "skipped 2 of 5 training image(s)" in warning
    assert "b.png (symlink loop" in warning and "d.png (dangling symlink to" in warning


def test_holdout_split_counts_bad_files_and_a_held_out_one_raises_whatever_on_error(tmp_path):
    """Held-out files are validation data (a bad one raises, even with on_error=skip); the training
    part follows on_error; the split is over every listed file, so a bad one never moves it."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "b.png", "d.png", "e.png"):
        _png(folder / name)
    _dangling(folder / "c.png")  # index 2 of 5: a training file of the 2-image hold-out (0 and 4)
    assert [p.name for p in split_holdout(list_images(folder), 2)[1]] == ["a.png", "e.png"]
    dm = RescaleDataModule(scale=2, train=str(folder), lr_patch_size=8, holdout=2, on_error="skip")
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 training image\(s\) .*c\.png \(dangling"):
        dm.setup("fit")
    assert dm.val_sets["imgs_holdout"].names == ["a", "e"] and dm.train_set.names == ["b", "d"]
    with pytest.raises(ImageError, match=r"c\.png: dangling"):
        RescaleDataModule(scale=2, train=str(folder), lr_patch_size=8, holdout=2).setup("fit")

    (folder / "e.png").unlink()
    _dangling(folder / "e.png")  # now a held-out file is bad
    dm = RescaleDataModule(scale=2, train=str(folder), lr_patch_size=8, holdout=2, on_error="skip")
    with pytest.raises(ImageError, match=r"imgs_holdout cannot be read: e\.png \(dangling.*on_error applies to training"):
        dm.setup("fit")


# --------------------------------------------------------------------------- EXIF orientation


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.fixture
def fresh_notice(monkeypatch, caplog):
    """The once-per-process notice not yet given; INFO and up captured."""
    monkeypatch.setattr(image_io, "_exif_noticed", False)
    caplog.set_level(logging.INFO, logger="taid_car.data.io")
    return caplog


def _notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "EXIF orientation" in r.getMessage()]


def test_exif_rotated_jpeg_is_read_upright_with_its_upright_size_and_said_once(tmp_path, fresh_notice):
    a = RNG.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "plain.jpg", quality=95)
    for name in ("phone1.jpg", "phone2.jpg"):  # the same compressed pixels, "rotate 90 CW to view"
        Image.fromarray(a).save(tmp_path / name, quality=95, exif=_exif(6))
    stored = read_image_raw(tmp_path / "plain.jpg").array
    assert probe_size(tmp_path / "plain.jpg") == (24, 40) and not _notices(fresh_notice)
    assert probe_size(tmp_path / "phone1.jpg") == (40, 24)
    for name in ("phone1.jpg", "phone2.jpg"):
        upright = read_image_raw(tmp_path / name).array
        assert upright.shape == (40, 24, 3) and np.array_equal(upright, np.rot90(stored, -1))
    (notice,) = _notices(fresh_notice)
    assert str(tmp_path / "phone1.jpg") in notice and "orientation 6 applied" in notice


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(("suffix", "mode"), [(".png", "RGB"), (".tif", "RGB"), (".tif", "L")])
def test_every_orientation_as_exif_transpose_turns_it(tmp_path, fresh_notice, orientation, suffix, mode):
    """Against Pillow's exif_transpose of the pixels in memory (its TIFF reader turns pixels
    itself, and scrambles a memory-mapped gray one: the file is not the reference)."""
    a = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    image = Image.fromarray(a).convert(mode)
    path = tmp_path / f"o{orientation}{suffix}"
    image.save(path, exif=_exif(orientation))
    reference = Image.fromarray(np.asarray(image.convert("RGB")))
    reference.getexif()[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(reference))
    assert np.array_equal(read_image_raw(path).array, expected)
    assert probe_size(path) == expected.shape[:2]
    assert len(_notices(fresh_notice)) == (orientation != 1)


def _png16_with_exif(path: Path, a: np.ndarray, orientation: int) -> Path:
    """A 16-bit RGB PNG (filter 0 rows) with an eXIf chunk before its pixels."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    h, w, _ = a.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in a)
    exif = _exif(orientation).tobytes().removeprefix(b"Exif\x00\x00")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"eXIf", exif) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_16bit_decodes_that_reopen_the_file_are_turned_too(tmp_path, fresh_notice):
    import tifffile

    a = RNG.integers(0, 65536, (6, 10, 3)).astype(np.uint16)
    png = _png16_with_exif(tmp_path / "x16.png", a, 8)
    tif = tmp_path / "x16.tif"
    tifffile.imwrite(tif, a, photometric="rgb", extratags=[(0x0112, 3, 1, 6, False)])
    for path, expected in ((png, np.rot90(a, 1)), (tif, np.rot90(a, -1))):
        raw = read_image_raw(path)
        assert raw.max_value == 65535 and raw.array.dtype == np.uint16
        assert np.array_equal(raw.array, expected) and probe_size(path) == (10, 6)


def test_a_png_without_exif_is_read_bit_identically_as_stored(tmp_path, fresh_notice):
    """Benchmark sets (Set5, Set14 PNGs) carry no EXIF: their pixels, and so the published
    numbers, do not change."""
    a = _png(tmp_path / "baby.png", 33, 47)
    raw = read_image_raw(tmp_path / "baby.png")
    assert raw.array.dtype == np.uint8 and np.array_equal(raw.array, a)
    assert probe_size(tmp_path / "baby.png") == (33, 47) and not _notices(fresh_notice)


# --------------------------------------------------------------------------- rescale


@pytest.fixture(scope="module")
def bicubic_ckpt(tmp_path_factory) -> Path:
    """Bicubic & Bicubic x2 saved as ``taid_car.run`` saves checkpoints (no weights to train)."""
    return bicubic_checkpoint(tmp_path_factory.mktemp("bicubic_run"))


def test_rescale_names_a_dangling_link_as_a_failed_file(bicubic_ckpt, tmp_path, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "a.png")
    _dangling(folder / "b.png")
    argv = ["downscale", "--ckpt", str(bicubic_ckpt), "--input", str(folder), "--device", "cpu", "--no-progress"]
    assert rescale_main([*argv, "--output", str(tmp_path / "skip")]) == 0
    assert [p.name for p in (tmp_path / "skip").iterdir()] == ["a.png"]
    assert "skipped 1 file(s)" in caplog.text and "b.png: dangling symlink to" in caplog.text
    caplog.clear()
    assert rescale_main([*argv, "--output", str(tmp_path / "fail"), "--on-error", "fail"]) == 1
    assert "b.png: dangling symlink to" in caplog.text and "--on-error fail" in caplog.text
