"""Image IO: every accepted format, every bad input, writing, size checks, modcrop."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taid_car.data import (
    IMAGE_EXTENSIONS,
    ImageError,
    MissingFolderError,
    check_min_size,
    list_images,
    load_image,
    modcrop,
    probe_size,
    read_image,
    save_image,
)

RNG = np.random.default_rng(1234)


def _rgb8(h: int = 13, w: int = 17) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _as_hwc255(t: torch.Tensor) -> np.ndarray:
    return (t.permute(1, 2, 0).numpy() * 255).round().astype(np.int64)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def write_png16(path: Path, a: np.ndarray) -> Path:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA), rows cycling through all 5 PNG filters."""
    a = np.asarray(a, dtype=">u2")
    h, w = a.shape[:2]
    c = 1 if a.ndim == 2 else a.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = a.reshape(h, -1).view(np.uint8).reshape(h, w * c * 2).astype(np.int64)
    bpp = 2 * c
    out = []
    prior = np.zeros_like(rows[0])
    for y, row in enumerate(rows):
        left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), prior[:-bpp]])
        ftype = y % 5
        pred = [0, left, prior, (left + prior) // 2, _paeth(left, prior, upleft)][ftype]
        out.append(bytes([ftype]) + ((row - pred) % 256).astype(np.uint8).tobytes())
        prior = row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"".join(out)))
        + chunk(b"IEND", b"")
    )
    return path


# --------------------------------------------------------------------------- 8-bit formats


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff", ".PNG"])
def test_lossless_rgb_formats_exact(tmp_path, ext):
    a = _rgb8()
    p = tmp_path / f"x{ext}"
    Image.fromarray(a).save(p)
    img = read_image(p)
    assert img.tensor.shape == (3, 13, 17) and img.tensor.dtype == torch.float32
    assert not img.is_gray and img.path == p
    assert np.array_equal(_as_hwc255(img.tensor), a)
    assert torch.equal(load_image(p), img.tensor)


def test_jpeg_reads_as_rgb(tmp_path):
    a = _rgb8(32, 24)
    Image.fromarray(a).save(tmp_path / "x.jpg", quality=95)
    Image.fromarray(a).save(tmp_path / "y.JPEG", quality=95)
    for name in ("x.jpg", "y.JPEG"):
        t = load_image(tmp_path / name)
        assert t.shape == (3, 32, 24)
        assert 0 <= t.min() and t.max() <= 1


def test_grayscale_expanded_to_three_channels(tmp_path):
    g = RNG.integers(0, 256, (9, 11), dtype=np.uint8)
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.is_gray and img.tensor.shape == (3, 9, 11)
    assert torch.equal(img.tensor[0], img.tensor[1]) and torch.equal(img.tensor[1], img.tensor[2])
    assert np.array_equal(_as_hwc255(img.tensor)[:, :, 0], g)


def test_bilevel_image_is_gray(tmp_path):
    Image.fromarray(RNG.integers(0, 2, (8, 8)).astype(bool)).save(tmp_path / "b.png")
    img = read_image(tmp_path / "b.png")
    assert img.is_gray and set(torch.unique(img.tensor).tolist()) <= {0.0, 1.0}


def test_rgba_drops_alpha_with_warning_naming_file(tmp_path):
    a = np.concatenate([_rgb8(), RNG.integers(0, 256, (13, 17, 1), dtype=np.uint8)], axis=2)
    p = tmp_path / "withalpha.png"
    Image.fromarray(a, mode="RGBA").save(p)
    with pytest.warns(UserWarning, match=r"withalpha\.png.*alpha"):
        img = read_image(p)
    assert not img.is_gray
    assert np.array_equal(_as_hwc255(img.tensor), a[:, :, :3])  # not composited


def test_gray_alpha_drops_alpha_and_is_gray(tmp_path):
    la = RNG.integers(0, 256, (6, 7, 2), dtype=np.uint8)
    p = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(p)
    with pytest.warns(UserWarning, match=r"la\.png.*alpha"):
        img = read_image(p)
    assert img.is_gray
    assert np.array_equal(_as_hwc255(img.tensor)[:, :, 1], la[:, :, 0])


def test_palette_images(tmp_path):
    colour = Image.fromarray(_rgb8()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    colour.save(tmp_path / "pc.png")
    img = read_image(tmp_path / "pc.png")
    assert not img.is_gray and img.tensor.shape == (3, 13, 17)
    assert np.array_equal(_as_hwc255(img.tensor), np.asarray(colour.convert("RGB")))

    gray = Image.fromarray(RNG.integers(0, 256, (5, 6), dtype=np.uint8), mode="L").convert("P")
    gray.save(tmp_path / "pg.png")
    assert read_image(tmp_path / "pg.png").is_gray

    colour.info["transparency"] = 0
    colour.save(tmp_path / "pt.png", transparency=0)
    with pytest.warns(UserWarning, match="alpha"):
        assert read_image(tmp_path / "pt.png").tensor.shape == (3, 13, 17)


def test_gif_palette_is_accepted_by_read_image(tmp_path):
    Image.fromarray(_rgb8()).convert("P").save(tmp_path / "x.gif")
    assert read_image(tmp_path / "x.gif").tensor.shape == (3, 13, 17)


@pytest.mark.parametrize("ext", [".jpg", ".tif"])
def test_cmyk_converted_to_rgb(tmp_path, ext):
    cmyk = Image.fromarray(_rgb8()).convert("CMYK")
    p = tmp_path / f"c{ext}"
    cmyk.save(p)
    img = read_image(p)
    assert img.tensor.shape == (3, 13, 17) and not img.is_gray
    if ext == ".tif":  # lossless: equal to Pillow's CMYK -> RGB conversion
        assert np.array_equal(_as_hwc255(img.tensor), np.asarray(cmyk.convert("RGB")))


# --------------------------------------------------------------------------- 16-bit


def _check16(t: torch.Tensor, ref: np.ndarray) -> None:
    """Full 16-bit precision: exact after x65535, and not an 8-bit value in disguise."""
    ref = ref.astype(np.float64)
    got = t.permute(1, 2, 0).double().numpy()
    assert np.abs(got - ref / 65535).max() < 1e-7
    assert np.array_equal(np.round(got * 65535), ref)
    assert t.min() >= 0 and t.max() <= 1


SPECIALS = np.array([0, 1, 255, 256, 257, 32767, 32768, 65534, 65535], dtype=np.uint16)


def _u16(shape) -> np.ndarray:
    a = RNG.integers(0, 65536, shape).astype(np.uint16)
    a.reshape(-1)[: len(SPECIALS)] = SPECIALS
    return a


def test_16bit_gray_png_via_pillow(tmp_path):
    g = _u16((11, 9))
    p = tmp_path / "g16.png"
    Image.fromarray(g).save(p)  # Pillow writes mode I;16
    img = read_image(p)
    assert img.is_gray
    _check16(img.tensor, np.repeat(g[:, :, None], 3, 2))
    assert img.tensor[0].flatten()[1] == pytest.approx(1 / 65535, rel=1e-6)  # 1 survives


def test_16bit_rgb_png_full_precision(tmp_path):
    a = _u16((23, 19, 3))  # odd sizes, all five PNG row filters
    img = read_image(write_png16(tmp_path / "rgb16.png", a))
    assert not img.is_gray
    _check16(img.tensor, a)


def test_16bit_rgba_png_full_precision_and_warns(tmp_path):
    a = _u16((10, 12, 4))
    with pytest.warns(UserWarning, match="alpha"):
        img = read_image(write_png16(tmp_path / "rgba16.png", a))
    _check16(img.tensor, a[:, :, :3])


def test_16bit_gray_png_written_by_hand_and_gray_alpha(tmp_path):
    g = _u16((7, 13))
    img = read_image(write_png16(tmp_path / "g16.png", g))
    assert img.is_gray
    _check16(img.tensor, np.repeat(g[:, :, None], 3, 2))
    la = _u16((7, 13, 2))
    with pytest.warns(UserWarning, match="alpha"):
        img = read_image(write_png16(tmp_path / "la16.png", la))
    assert img.is_gray
    _check16(img.tensor, np.repeat(la[:, :, :1], 3, 2))


def test_16bit_tiff_rgb_and_gray(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    a = _u16((9, 14, 3))
    tifffile.imwrite(tmp_path / "rgb16.tif", a, photometric="rgb")
    _check16(read_image(tmp_path / "rgb16.tif").tensor, a)
    g = _u16((9, 14))
    tifffile.imwrite(tmp_path / "g16.tiff", g, photometric="minisblack")
    img = read_image(tmp_path / "g16.tiff")
    assert img.is_gray
    _check16(img.tensor, np.repeat(g[:, :, None], 3, 2))


# --------------------------------------------------------------------------- bad files


def _assert_names_file(excinfo, path: Path, reason_word: str) -> None:
    msg = str(excinfo.value)
    assert str(path) in msg and reason_word in msg.lower(), msg
    assert excinfo.value.path == path


def test_text_file_renamed_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("these are not pixels\n")
    with pytest.raises(ImageError) as e:
        read_image(p)
    _assert_names_file(e, p, "not a readable image")
    with pytest.raises(ImageError):
        probe_size(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError) as e:
        read_image(p)
    _assert_names_file(e, p, "not a readable image")


def test_truncated_png(tmp_path):
    p = tmp_path / "trunc.png"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    assert probe_size(p) == (64, 64)  # the header is intact ...
    with pytest.raises(ImageError) as e:  # ... the pixels are not
        read_image(p)
    _assert_names_file(e, p, "truncated")


def test_truncated_jpeg(tmp_path):
    p = tmp_path / "trunc.jpg"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(p, quality=90)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ImageError) as e:
        read_image(p)
    _assert_names_file(e, p, "not a readable image")


def test_corrupt_png_bytes(tmp_path):
    p = tmp_path / "corrupt.png"
    Image.fromarray(_rgb8(40, 40)).save(p)
    b = bytearray(p.read_bytes())
    for i in range(60, len(b) - 20, 7):  # scribble over the compressed data
        b[i] ^= 0xFF
    p.write_bytes(bytes(b))
    with pytest.raises(ImageError) as e:
        read_image(p)
    _assert_names_file(e, p, "not a readable image")


def test_random_bytes_bmp(tmp_path):
    p = tmp_path / "noise.bmp"
    p.write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match=r"noise\.bmp"):
        read_image(p)


def test_missing_file_and_folder_as_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist") as e:
        read_image(tmp_path / "nope.png")
    assert "nope.png" in str(e.value)
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


def test_float_tiff_out_of_range_rejected(tmp_path):
    p = tmp_path / "f.tif"
    Image.fromarray(np.full((4, 4), 3.5, dtype=np.float32), mode="F").save(p)
    with pytest.raises(ImageError, match=r"f\.tif.*outside \[0, 1\]"):
        read_image(p)
    Image.fromarray(np.full((4, 4), 0.25, dtype=np.float32), mode="F").save(p)
    img = read_image(p)
    assert img.is_gray and torch.allclose(img.tensor, torch.full((3, 4, 4), 0.25))


# --------------------------------------------------------------------------- folders


def test_list_images_sorted_case_insensitive_skips_others(tmp_path):
    for name in [
        "b.PNG",
        "a.jpg",
        "c.JpEg",
        "d.bmp",
        "e.TIF",
        "f.tiff",
        "z.txt",
        ".hidden.png",
        "._a.png",
    ]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "c.JpEg", "d.bmp", "e.TIF", "f.tiff"]
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def test_list_images_missing_folder(tmp_path):
    missing = tmp_path / "Set5"
    with pytest.raises(MissingFolderError) as e:
        list_images(missing)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ImageError)
    assert (
        str(missing) in str(e.value) and ".png" in str(e.value) and "does not exist" in str(e.value)
    )


def test_list_images_not_a_folder(tmp_path):
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(MissingFolderError, match="not a folder"):
        list_images(f)


def test_list_images_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ImageError) as e:
        list_images(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "no image files" in msg
    assert all(ext in msg for ext in IMAGE_EXTENSIONS) and "readme.txt" in msg


# --------------------------------------------------------------------------- writing


def test_save_image_roundtrip_rounding_and_clamp(tmp_path):
    t = torch.tensor([[[0.0, 0.5 / 255, 1.5 / 255, 1.0, -0.2, 1.7]]]).expand(3, 1, 6).clone()
    p = save_image(t, tmp_path / "deep" / "er" / "x.png")
    assert p.is_file()
    back = np.asarray(Image.open(p))
    assert back.dtype == np.uint8 and Image.open(p).mode == "RGB"
    assert back[0, :, 0].tolist() == [0, 1, 2, 255, 0, 255]  # half up, clamped


def test_save_image_gray_and_exact_roundtrip(tmp_path):
    a = _rgb8()
    t = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    save_image(t, tmp_path / "rgb.png")
    assert torch.equal(load_image(tmp_path / "rgb.png"), t)
    save_image(t[:1], tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "L" and read_image(tmp_path / "g.png").is_gray
    save_image(t[0], tmp_path / "g2.png")
    assert Image.open(tmp_path / "g2.png").mode == "L"


def test_save_image_refuses_overwrite(tmp_path):
    p = save_image(torch.zeros(3, 4, 4), tmp_path / "x.png")
    with pytest.raises(FileExistsError, match=r"x\.png.*overwrite=True"):
        save_image(torch.ones(3, 4, 4), p)
    assert load_image(p).max() == 0  # untouched
    save_image(torch.ones(3, 4, 4), p, overwrite=True)
    assert load_image(p).min() == 1


def test_save_image_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="PNG"):
        save_image(torch.zeros(3, 4, 4), tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="shape|tensor"):
        save_image(torch.zeros(2, 3, 4, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN"):
        save_image(torch.full((3, 2, 2), float("nan")), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- sizes


def test_check_min_size_message():
    with pytest.raises(ImageError) as e:
        check_min_size(
            torch.zeros(3, 12, 10), 24, 24, Path("Set14/bridge.png"), "patch 96 at scale 4"
        )
    msg = str(e.value)
    assert msg.startswith(str(Path("Set14/bridge.png")) + ": ")
    assert "12x10" in msg and "smaller than the 24x24 needed for patch 96 at scale 4" in msg
    check_min_size(torch.zeros(3, 24, 24), 24, 24, "ok.png", "x")
    check_min_size((30, 25), 24, 24, "ok.png", "x")
    with pytest.raises(ImageError, match="23x30"):
        check_min_size((23, 30), 24, 24, "tall.png", "x")


def test_modcrop_keeps_top_left():
    x = torch.arange(3 * 10 * 13, dtype=torch.float32).reshape(3, 10, 13)
    y = modcrop(x, 4)
    assert y.shape == (3, 8, 12) and torch.equal(y, x[:, :8, :12])
    assert y.data_ptr() == x.data_ptr()  # a view
    assert modcrop(x, 1).shape == x.shape
    assert modcrop(x[None], 3).shape == (1, 3, 9, 12)
    with pytest.raises(ValueError):
        modcrop(x, 0)
    with pytest.raises(ValueError, match="smaller"):
        modcrop(x, 16)


def test_no_warnings_for_plain_rgb(tmp_path):
    Image.fromarray(_rgb8()).save(tmp_path / "x.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(tmp_path / "x.png")
