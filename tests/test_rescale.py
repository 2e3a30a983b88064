"""The inference CLI ``python -m taid_car.rescale``: downscale, upscale, round trip, bad files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from helpers import bicubic_checkpoint, compose_run
from taid_car.data.io import modcrop, read_image
from taid_car.models.downscaler import crop_multiple
from taid_car.models.quantize import quantize_8bit
from taid_car.models.trained import load_trained_pair
from taid_car.rescale import main

COMMON = ["--device", "cpu", "--no-progress"]


def cli(command: str, ckpt: Path, source: Path, output: Path | None = None, *extra: str) -> int:
    """``python -m taid_car.rescale <command> --ckpt ... --input ... [--output ...] <extra>`` on CPU."""
    argv = [command, "--ckpt", str(ckpt), "--input", str(source)]
    if output is not None:
        argv += ["--output", str(output)]
    return main([*argv, *extra, *COMMON])


@pytest.fixture(scope="module")
def taid_ckpt(tmp_path_factory) -> Path:
    """A real checkpoint from one training step of TAID x2 (``python -m taid_car.run``)."""
    from taid_car.run import train

    out = tmp_path_factory.mktemp("taid_run")
    cfg = compose_run(
        [
            "model=taid",
            "scale=2",
            "logger=none",
            "trainer.max_steps=1",
            "trainer.val_check_interval=1",
            "test=false",
            "trainer.enable_progress_bar=false",
        ],
        out,
    )
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def bicubic_ckpt(tmp_path_factory) -> Path:
    """Bicubic & Bicubic x2 saved as ``taid_car.run`` saves checkpoints (no weights to train)."""
    return bicubic_checkpoint(tmp_path_factory.mktemp("bicubic_run"))


def _pattern(h: int, w: int, phase: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return 0.5 + 0.25 * np.sin(x / 3 + phase) * np.cos(y / 4) + 0.2 * (x / w - 0.5)


@pytest.fixture
def images(tmp_path) -> Path:
    """``a.png`` 40x56 RGB and ``b.png`` 33x47 grayscale (not a multiple of 2: cropped)."""
    folder = tmp_path / "hr"
    folder.mkdir()
    rgb = np.stack([_pattern(40, 56, p) for p in (0.0, 1.0, 2.0)], axis=2)
    Image.fromarray(np.round(rgb * 255).astype(np.uint8), "RGB").save(folder / "a.png")
    Image.fromarray(np.round(_pattern(33, 47, 0.5) * 255).astype(np.uint8), "L").save(folder / "b.png")
    return folder


def _lr_in_memory(ckpt: Path, path: Path) -> torch.Tensor:
    downscaler, _, _ = load_trained_pair(ckpt)
    multiple = crop_multiple(downscaler)
    with torch.no_grad():
        return quantize_8bit(downscaler(modcrop(read_image(path).tensor, multiple)[None]))[0]


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def test_downscale_writes_the_exact_8bit_lr_and_upscale_restores_the_size(
    taid_ckpt, images, tmp_path, caplog
):
    lr_dir, sr_dir = tmp_path / "lr", tmp_path / "sr"
    assert cli("downscale", taid_ckpt, images, lr_dir) == 0
    assert sorted(p.name for p in lr_dir.iterdir()) == ["a.png", "b.png"]
    assert "b.png: cropped 33x47 -> 32x46" in caplog.text
    for name, size in (("a.png", (20, 28)), ("b.png", (16, 23))):
        lr = read_image(lr_dir / name).tensor
        assert lr.shape[-2:] == size
        assert torch.equal(lr, _lr_in_memory(taid_ckpt, images / name))  # the file is the LR

    assert cli("upscale", taid_ckpt, lr_dir, sr_dir) == 0
    _, upscaler, _ = load_trained_pair(taid_ckpt)
    for name, size in (("a.png", (40, 56)), ("b.png", (32, 46))):
        sr = read_image(sr_dir / name).tensor
        assert sr.shape == (3, *size)
        with torch.no_grad():
            expected = upscaler(read_image(lr_dir / name).tensor[None])[0]
        assert torch.equal(sr, torch.floor(expected.clamp(0, 1) * 255 + 0.5) / 255)


def test_nothing_is_overwritten_without_the_flag(bicubic_ckpt, images, tmp_path, caplog):
    out = tmp_path / "lr"
    argv = [
        "downscale",
        "--ckpt",
        str(bicubic_ckpt),
        "--input",
        str(images),
        "--output",
        str(out),
        *COMMON,
    ]
    assert main(argv) == 0
    (out / "a.png").write_bytes(b"keep me")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    caplog.clear()
    assert main(argv) == 2
    assert (
        "2 output file(s) already exist" in caplog.text and "a.png" in caplog.text and "b.png" in caplog.text
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([*argv, "--overwrite"]) == 0
    assert read_image(out / "a.png").tensor.shape == (3, 20, 28)
    # an output folder that is the input folder would replace the inputs: refused
    assert cli("downscale", bicubic_ckpt, images, images, "--overwrite") == 2
    assert "would replace input file(s)" in caplog.text


def test_roundtrip_scores_and_jpeg_lowers_psnr(taid_ckpt, images, tmp_path, capsys):
    clean, jpeg = tmp_path / "clean", tmp_path / "jpeg"
    base = ["roundtrip", "--ckpt", str(taid_ckpt), "--input", str(images), *COMMON]
    assert main([*base, "--output", str(clean)]) == 0
    assert "taid & edsr_tiny x2 round trip" in capsys.readouterr().out
    assert main([*base, "--output", str(jpeg), "--channel", "jpeg", "--quality", "10"]) == 0
    table = (clean / "roundtrip.md").read_text()
    assert "| a.png | 40x56 |" in table and "| b.png | 32x46 |" in table and "| mean | 2 images |" in table
    no_jpeg, with_jpeg = _read_csv(clean / "roundtrip.csv"), _read_csv(jpeg / "roundtrip.csv")
    assert set(no_jpeg) == set(with_jpeg) == {"a.png", "b.png", "mean"}
    assert no_jpeg["b.png"]["size"] == "32x46"
    assert set(with_jpeg["mean"]) == set(no_jpeg["mean"])  # the same columns: the one score table
    clean_mean, mean = ({k: float(v) for k, v in rows["mean"].items() if k not in ("image", "size")}
                        for rows in (no_jpeg, with_jpeg))
    assert mean["psnr_y"] != clean_mean["psnr_y"]  # JPEG changed what the upscaler saw
    assert mean["bicubic_psnr_y"] < clean_mean["bicubic_psnr_y"] - 3  # quality 10 costs dB
    assert 0 < mean["bpp"] < clean_mean["bpp"] and 0 < mean["bicubic_bpp"] < clean_mean["bicubic_bpp"]
    assert "LR through jpeg q10 4:2:0" in (jpeg / "roundtrip.md").read_text()


def test_bicubic_pair_matches_the_bicubic_reference(bicubic_ckpt, images, tmp_path):
    out, lr_dir = tmp_path / "res", tmp_path / "lr"
    argv = [
        "roundtrip",
        "--ckpt",
        str(bicubic_ckpt),
        "--input",
        str(images),
        "--output",
        str(out),
        *COMMON,
    ]
    assert main(argv) == 0
    for row in _read_csv(out / "roundtrip.csv").values():
        assert row["psnr_y"] == row["bicubic_psnr_y"] and row["ssim_y"] == row["bicubic_ssim_y"]
        assert row["bpp"] == row["bicubic_bpp"]
        assert math.isinf(float(row["lr_psnr_y"]))  # the LR is the bicubic LR
    assert main([*argv, "--overwrite", "--channel", "jpeg", "--quality", "10"]) == 0
    for row in _read_csv(out / "roundtrip.csv").values():  # the same channel for both pairs
        assert row["psnr_y"] == row["bicubic_psnr_y"] and row["bpp"] == row["bicubic_bpp"]
        assert math.isfinite(float(row["lr_psnr_y"]))  # the stored LR is the bicubic LR after JPEG
    assert cli("downscale", bicubic_ckpt, images, lr_dir) == 0
    with Image.open(lr_dir / "b.png") as gray, Image.open(lr_dir / "a.png") as rgb:
        assert (gray.mode, rgb.mode) == ("L", "RGB")  # a gray source keeps a gray LR file


@pytest.fixture
def with_bad_files(images) -> Path:
    """``images`` plus a non-image ``c.png``, a truncated PNG and a 1x1 image (too small at x2)."""
    (images / "c.png").write_bytes(b"this is not a png")
    (images / "d_truncated.png").write_bytes((images / "a.png").read_bytes()[:80])
    Image.new("RGB", (1, 1)).save(images / "e_tiny.png")
    return images


def test_bad_files_are_skipped_by_name_or_fatal(bicubic_ckpt, with_bad_files, tmp_path, caplog):
    skip_out, fail_out = tmp_path / "skip", tmp_path / "fail"
    argv = ["downscale", "--ckpt", str(bicubic_ckpt), "--input", str(with_bad_files), *COMMON]
    assert main([*argv, "--output", str(skip_out)]) == 0
    assert sorted(p.name for p in skip_out.iterdir()) == ["a.png", "b.png"]
    assert "skipped 3 file(s)" in caplog.text
    for name in ("c.png", "d_truncated.png", "e_tiny.png"):
        assert f"{name}:" in caplog.text
    assert "smaller than the 2x2 needed" in caplog.text

    caplog.clear()
    assert main([*argv, "--output", str(fail_out), "--on-error", "fail"]) == 1
    assert "c.png" in caplog.text and "--on-error fail" in caplog.text
    assert not fail_out.exists()  # caught by the header check, before anything was written

    # a file whose header reads but whose pixels do not fails while processing: outputs before it stay
    late = tmp_path / "late"
    late.mkdir()
    for name in ("a.png", "d_truncated.png"):
        (late / name).write_bytes((with_bad_files / name).read_bytes())
    caplog.clear()
    assert cli("downscale", bicubic_ckpt, late, tmp_path / "late_out", "--on-error", "fail") == 1
    assert "d_truncated.png" in caplog.text and "stopping after 1 completed file(s): a.png" in caplog.text
    assert [p.name for p in (tmp_path / "late_out").iterdir()] == ["a.png"]

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "c.png").write_bytes(b"this is not a png")
    assert main(["roundtrip", "--ckpt", str(bicubic_ckpt), "--input", str(only_bad), *COMMON]) == 1
    assert "every input file failed" in caplog.text


def test_clear_errors_for_checkpoint_and_input(bicubic_ckpt, images, tmp_path, caplog):
    def run(ckpt, source) -> int:
        return main(["roundtrip", "--ckpt", str(ckpt), "--input", str(source), *COMMON])

    assert run(tmp_path / "missing.ckpt", images) == 2
    assert "missing.ckpt does not exist" in caplog.text
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    assert run(tmp_path / "other.ckpt", images) == 2
    assert "not a taid_car checkpoint" in caplog.text
    (tmp_path / "text.ckpt").write_text("hello")
    assert run(tmp_path / "text.ckpt", images) == 2
    assert "not a readable checkpoint" in caplog.text
    assert run(bicubic_ckpt, tmp_path / "nowhere") == 2
    assert "nowhere does not exist" in caplog.text
    (tmp_path / "empty").mkdir()
    assert run(bicubic_ckpt, tmp_path / "empty") == 2
    assert "no image files" in caplog.text
    Image.open(images / "a.png").save(images / "a.jpg")
    assert cli("downscale", bicubic_ckpt, images, tmp_path / "o") == 2
    assert "same output file (same stem): a.jpg, a.png" in caplog.text
    caplog.clear()
    assert main(["roundtrip", "--ckpt", str(bicubic_ckpt), "--input", str(images), "--channel", "jpeg",
                 "--quality", "0"]) == 2
    assert "channel.quality=0" in caplog.text


def test_upscale_refuses_lr_files_made_at_another_scale(tmp_path, images, caplog):
    """``downscale`` tags its LR files with the scale; ``upscale`` with a checkpoint of another
    scale refuses them (it used to write half-size SR files with rc 0)."""
    from taid_car.data.io import png_text

    def bicubic(scale: int) -> Path:
        cfg = compose_run(["model=bicubic", "upscaler=bicubic", f"scale={scale}"], tmp_path / f"x{scale}")
        path = tmp_path / f"bicubic_x{scale}.ckpt"
        torch.save({"taid_car_config": OmegaConf.to_container(cfg, resolve=True), "state_dict": {}}, path)
        return path

    lr_dir = tmp_path / "lr4"
    assert cli("downscale", bicubic(4), images, lr_dir) == 0
    assert png_text(lr_dir / "a.png")["taid_car:scale"] == "4"
    assert cli("upscale", bicubic(2), lr_dir, tmp_path / "sr") == 2
    assert "a.png (x4, bicubic & bicubic)" in caplog.text and "upscales x2" in caplog.text
    assert not (tmp_path / "sr").exists()
    assert cli("upscale", bicubic(4), lr_dir, tmp_path / "sr4") == 0


def test_images_above_max_pixels_are_refused_with_the_reason(bicubic_ckpt, images, tmp_path, caplog):
    """A huge image is not fed whole to the model: refused before anything runs, with its size."""
    code = cli("downscale", bicubic_ckpt, images, tmp_path / "lr", "--max-pixels", "1000", "--on-error", "fail")
    assert code == 1
    assert "a.png" in caplog.text and "above --max-pixels" in caplog.text and "crop or tile it" in caplog.text
    assert cli("downscale", bicubic_ckpt, images, tmp_path / "lr2", "--max-pixels", "1000") == 1  # all skipped
    assert cli("downscale", bicubic_ckpt, images, tmp_path / "lr3") == 0  # the default admits them


def test_debug_shows_the_traceback(tmp_path):
    from taid_car.errors import UsageError

    assert main(["roundtrip", "--ckpt", str(tmp_path / "missing.ckpt"), "--input", str(tmp_path)]) == 2
    with pytest.raises(UsageError, match="does not exist"):
        main(["roundtrip", "--ckpt", str(tmp_path / "missing.ckpt"), "--input", str(tmp_path), "--debug"])


def test_only_what_is_wrong_with_the_file_is_called_a_bad_checkpoint(tmp_path, images, caplog, monkeypatch):
    """A saved config the modules refuse names the file; an error that is not about the file
    (a bug, out of memory) is raised as it is, not reported as an unreadable checkpoint."""
    from taid_car.models import trained
    from taid_car.rescale import load_pair

    cfg = OmegaConf.to_container(compose_run(["model=taid", "scale=2"], tmp_path / "run"), resolve=True)
    cfg["model"]["downscaler"]["preset"] = "enormous"
    path = tmp_path / "bad_preset.ckpt"
    torch.save({"taid_car_config": cfg, "state_dict": {}}, path)
    assert cli("roundtrip", path, images) == 2
    assert f"{path}: its saved config does not build the pair" in caplog.text and "enormous" in caplog.text

    def broken(_):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(trained, "load_pair", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        load_pair(path, torch.device("cpu"))
