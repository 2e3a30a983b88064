"""The LR channel at every scoring site (issue 32): the pipeline, the Bicubic & Bicubic reference,
evaluate at several qualities in one command, rescale's files, a recursion's last level only,
compare's rate-distortion plots; and Bicubic & Bicubic under JPEG against an independent yardstick."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from helpers import bicubic_checkpoint, compose_evaluate, compose_run, fake_run
from taid_car.channel import LOSSLESS, JPEGChannel, build_channel, scoring_channels
from taid_car.channel.codecs import encode, jpeg_roundtrip
from taid_car.data.io import read_image
from taid_car.errors import ConfigError
from taid_car.evaluate import channel_node, run_evaluation
from taid_car.models import BicubicDownscaler, BicubicUpscaler, TAIDDownscaler
from taid_car.models.quantize import Quantizer, quantize_8bit
from taid_car.models.trained import TrainedPair
from taid_car.ops.imresize import bicubic_downscale, bicubic_upscale, imresize
from taid_car.scoring.pipeline import rescale_and_score, rescale_and_score_channels
from taid_car.scoring.report import write_results
from taid_car.scoring.tasks import RESIZE

QUALITIES = [30, 50, 70, 80, 90]


def _hr(seed: int = 0, h: int = 48, w: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([0.5 + 0.35 * torch.sin(9 * x + c) * torch.cos(7 * y - c) for c in range(3)])
    return (base + 0.08 * torch.rand(3, h, w, generator=g)).clamp(0, 1)[None]


# ------------------------------------------------------------------ the png channel is the old rounding


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", [Quantizer(), Quantizer("soft"), Quantizer("ste", through_clamp=True)])
def test_png_channel_forward_and_gradient_are_the_old_rounding(dtype, rule):
    lr = (torch.rand(2, 3, 9, 11, dtype=dtype) * 1.3 - 0.15).requires_grad_()
    channel = build_channel(None, rule)
    trained = channel.train(lr)
    assert torch.equal(trained, quantize_8bit(lr, rule.mode, rule.alpha, rule.through_clamp))
    weights = torch.randn_like(lr)
    (grad,) = torch.autograd.grad((trained * weights).sum(), lr)
    (old,) = torch.autograd.grad((quantize_8bit(lr, rule.mode, rule.alpha, rule.through_clamp) * weights).sum(), lr)
    assert torch.equal(grad, old)
    coded = channel.code(lr)
    assert coded.lr.dtype == dtype and torch.equal(coded.lr, quantize_8bit(lr.detach()))


def test_png_pipeline_keeps_the_old_numbers():
    hr = _hr(1)
    down, up = TAIDDownscaler(2), BicubicUpscaler(2)
    out = rescale_and_score(down, up, hr, 2, False)
    with torch.no_grad():
        lr = quantize_8bit(down(hr))
    assert torch.equal(out.lr, lr) and torch.equal(out.sr, bicubic_upscale(lr, 2))
    assert torch.equal(out.bicubic_lr, quantize_8bit(bicubic_downscale(hr, 2)))
    assert out.scores["bpp"].item() == 8 * len(encode(lr[0], "png")) / lr[0, 0].numel()


# ------------------------------------------------------------------ the pipeline through JPEG


def test_the_lr_and_the_bicubic_reference_go_through_the_same_channel():
    hr, channel = _hr(2), build_channel({"name": "jpeg", "quality": 40})
    down = TAIDDownscaler(2)
    out = rescale_and_score(down, BicubicUpscaler(2), hr, 2, False, channel=channel)
    with torch.no_grad():
        lr, bits = jpeg_roundtrip(quantize_8bit(down(hr)), 40)
    assert torch.equal(out.lr, lr) and torch.equal(out.sr, bicubic_upscale(lr, 2))
    bicubic, bicubic_bits = jpeg_roundtrip(quantize_8bit(bicubic_downscale(hr, 2)), 40)
    assert torch.equal(out.bicubic_lr, bicubic) and torch.equal(out.bicubic_sr, bicubic_upscale(bicubic, 2))
    pixels = lr.shape[-2] * lr.shape[-1]
    assert out.scores["bpp"].item() == bits.item() / pixels and out.scores["bicubic_bpp"].item() == bicubic_bits.item() / pixels
    assert set(out.scores) == set(RESIZE.result_scores)
    clean = rescale_and_score(down, BicubicUpscaler(2), hr, 2, False)
    assert out.scores["bicubic_psnr_y"] < clean.scores["bicubic_psnr_y"]
    assert math.isfinite(out.scores["lr_psnr_y"]) and out.scores["lr_psnr_y"] < clean.scores["lr_psnr_y"]


def test_bicubic_pair_under_jpeg_is_its_own_reference_with_a_finite_lr_fidelity():
    out = rescale_and_score(BicubicDownscaler(2), BicubicUpscaler(2), _hr(3), 2, False, channel=JPEGChannel(quality=50))
    assert torch.equal(out.scores["psnr_y"], out.scores["bicubic_psnr_y"])
    assert torch.equal(out.scores["bpp"], out.scores["bicubic_bpp"])
    assert bool(torch.isfinite(out.scores["lr_psnr_y"]).all())  # the stored LR vs the clean bicubic LR


def test_several_channels_in_one_pass_equal_one_pass_each():
    hr, down, up = _hr(4), TAIDDownscaler(2), BicubicUpscaler(2)
    channels = scoring_channels({"name": "png", "test_qualities": [30, 90]})
    assert [c.label for c in channels] == ["png", "jpeg q30 4:2:0", "jpeg q90 4:2:0"]
    together = rescale_and_score_channels(down, up, hr, 2, False, channels)
    for channel, out in zip(channels, together):
        alone = rescale_and_score(down, up, hr, 2, False, channel=channel)
        assert torch.equal(out.lr, alone.lr) and out.scores.keys() == alone.scores.keys()
        assert all(torch.equal(out.scores[k], alone.scores[k]) for k in out.scores)
    psnr = [out.scores["bicubic_psnr_y"].item() for out in together]
    assert psnr[0] > psnr[2] > psnr[1]  # clean, then quality 90, then 30


def test_a_gray_image_is_stored_as_a_gray_file_with_the_same_decode():
    gray = _hr(5)[:, :1].expand(-1, 3, -1, -1)
    decoded, bits = jpeg_roundtrip(gray, 60)
    planes = torch.round(gray[0, 0] * 255).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(planes, "L").save(buffer, format="JPEG", quality=60, optimize=False, progressive=False)
    with Image.open(io.BytesIO(buffer.getvalue())) as theirs:
        assert np.array_equal(np.round(decoded[0, 0].numpy() * 255), np.asarray(theirs))
    assert bits.item() == 8 * len(buffer.getvalue())
    assert torch.equal(decoded[:, 0], decoded[:, 1]) and torch.equal(decoded[:, 1], decoded[:, 2])


# ------------------------------------------------------------------ the recursion: the last level only


def test_a_recursion_codes_only_its_last_level():
    unit = TAIDDownscaler(2).eval()
    pair = TrainedPair("taid", 2, unit, BicubicUpscaler(2), {}, channel=JPEGChannel(quality=30)).at_scale(4)
    hr = _hr(6, 64, 64)
    with torch.no_grad():
        expected, _ = jpeg_roundtrip(quantize_8bit(unit(quantize_8bit(unit(hr)))), 30)
        jpeg_between, _ = jpeg_roundtrip(quantize_8bit(unit(jpeg_roundtrip(quantize_8bit(unit(hr)), 30)[0])), 30)
    lr = pair.downscale(hr)
    assert torch.equal(lr, expected) and not torch.equal(lr, jpeg_between)


# ------------------------------------------------------------------ evaluate


def _jpeg_trained_checkpoint(folder: Path, quality=75) -> Path:
    """A TAID x2 checkpoint (untrained weights) whose run trained through JPEG at ``quality``."""
    from taid_car.run import build_rescaler

    cfg = compose_run(["model=taid", "scale=2", "channel=jpeg", f"channel.quality={quality}", "logger=none"], folder)
    model = build_rescaler(cfg)
    path = folder / "taid_jpeg.ckpt"
    torch.save({"taid_car_config": OmegaConf.to_container(cfg, resolve=True), "state_dict": model.state_dict()}, path)
    return path


def test_evaluate_scores_a_checkpoint_and_its_reference_at_five_qualities_in_one_command(tmp_path):
    ckpt = _jpeg_trained_checkpoint(tmp_path)
    overrides = [f"ckpt_path={ckpt}", "channel=jpeg", f"channel.test_qualities=[{','.join(map(str, QUALITIES))}]"]
    results = run_evaluation(compose_evaluate(overrides), overrides)
    assert [(r.set_name, r.quality) for r in results] == [("sample", q) for q in QUALITIES]
    assert all(r.method == "taid & edsr_tiny [jpeg q75 4:2:0]" for r in results)
    for r in results:
        assert (r.channel, r.subsampling) == ("jpeg", "4:2:0") and r.images == 4
        assert r.bpp > 0 and r.bicubic_bpp > 0 and r.bicubic_psnr_y is not None
        assert all(row["bpp"] > 0 and row["bicubic_bpp"] > 0 for row in r.per_image)
    assert [r.bicubic_psnr_y for r in results] == sorted(r.bicubic_psnr_y for r in results)  # quality helps
    assert [r.bicubic_bpp for r in results] == sorted(r.bicubic_bpp for r in results)
    paths = write_results(results, tmp_path / "out")
    with paths["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["quality"] for row in rows] == [str(q) for q in QUALITIES]
    assert {"channel", "subsampling", "bpp", "bicubic_bpp"} <= set(rows[0])
    table = paths["md"].read_text()
    assert "LR channel" in table and "jpeg q30 4:2:0" in table and "bits per LR pixel" in table
    assert json.loads(paths["json"].read_text())[0]["per_image"][0]["bpp"] > 0


def test_evaluate_uses_the_checkpoints_own_channel_unless_the_command_names_one(tmp_path):
    own = {"name": "jpeg", "quality": [50, 90], "subsampling": "4:2:0", "train_rule": "ste", "test_qualities": None}
    ckpt = {"channel": own}
    cfg = compose_evaluate([])
    assert channel_node(cfg, [], ckpt) == own
    assert scoring_channels(channel_node(cfg, [], ckpt), own=False)[0].quality == 70  # a range at its middle
    assert channel_node(cfg, [], {})["name"] == "png"  # a checkpoint from before the channel
    typed = ["channel.quality=50"]
    assert channel_node(compose_evaluate(typed), typed, ckpt)["quality"] == 50
    typed = ["channel=png"]
    assert channel_node(compose_evaluate(typed), typed, ckpt)["name"] == "png"
    typed = ["channel.test_qualities=[30,40]"]
    channels = scoring_channels(channel_node(compose_evaluate(typed), typed, ckpt), own=False)
    assert [(c.name, c.quality) for c in channels] == [("jpeg", 30), ("jpeg", 40)]


def test_evaluate_names_a_bad_channel_setting_before_it_scores(tmp_path):
    for overrides, message in ((["channel=jpeg", "channel.quality=0"], "channel.quality=0"),
                               (["channel=jpeg", "channel.test_qualities=[30,101]"], "channel.test_qualities"),
                               (["channel=png", "channel.quality=50"], "channel=png takes no channel.quality")):
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            run_evaluation(compose_evaluate(overrides), overrides)


# ------------------------------------------------------------------ Bicubic & Bicubic vs an independent yardstick


def _matlab_y(rgb: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr's Y of 0..255 RGB (H, W, 3), as uint8 (rounded)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return np.round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255)


def _yardstick(path: Path, scale: int, quality: int) -> tuple[float, float]:
    """(PSNR-Y dB, bits per LR pixel) of Bicubic & Bicubic with the LR in JPEG: MATLAB-bicubic down,
    8 bit, Pillow JPEG (4:2:0; an LR with three equal channels as a gray file), MATLAB-bicubic up,
    8 bit, Y (a gray file, e.g. Set14 bridge: its values), ``scale`` pixels off each border."""
    with Image.open(path) as img:
        gray = img.mode == "L"
        hr = np.asarray(img.convert("L" if gray else "RGB"), dtype=np.float64)
    hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
    planes = torch.from_numpy(hr[None] if gray else hr.transpose(2, 0, 1)).float() / 255  # read as the suite reads
    lr = np.round(imresize(planes, 1 / scale).clamp(0, 1).numpy() * 255).astype(np.uint8)
    stored_gray = gray or bool((lr[0] == lr[1]).all() and (lr[1] == lr[2]).all())  # e.g. Set14 man
    image = Image.fromarray(lr[0], "L") if stored_gray else Image.fromarray(lr.transpose(1, 2, 0), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=2)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        coded = np.asarray(decoded.convert("L" if gray else "RGB"), dtype=np.float64)
    coded = torch.from_numpy(coded[None] if gray else coded.transpose(2, 0, 1)) / 255
    sr = np.round(imresize(coded, scale).clamp(0, 1).numpy() * 255)
    sr_y = sr[0] if gray else _matlab_y(sr.transpose(1, 2, 0))
    hr_y = hr if gray else _matlab_y(hr)
    crop = (slice(scale, -scale), slice(scale, -scale))
    mse = np.mean((sr_y[crop] - hr_y[crop]) ** 2)
    return 10 * math.log10(255**2 / mse), 8 * len(buffer.getvalue()) / (lr.shape[-2] * lr.shape[-1])


def _compare_with_yardstick(overrides: list[str], paths: dict[str, list[Path]], qualities: list[int], scales):
    cfg = compose_evaluate([*overrides, "channel=jpeg", f"channel.test_qualities=[{','.join(map(str, qualities))}]",
                            f"scales=[{','.join(map(str, scales))}]"])
    results = run_evaluation(cfg)
    assert len(results) == len(paths) * len(qualities) * len(scales)
    for r in results:
        ours = {row["name"]: row for row in r.per_image}
        theirs = [_yardstick(path, r.scale, r.quality) for path in paths[r.set_name]]
        assert len(ours) == len(theirs)
        mean_psnr = sum(psnr for psnr, _ in theirs) / len(theirs)
        assert r.bicubic_psnr_y == pytest.approx(mean_psnr, abs=0.01), (r.set_name, r.scale, r.quality)
        assert r.psnr_y == r.bicubic_psnr_y  # the method is the reference here
        assert r.bicubic_bpp == pytest.approx(sum(bpp for _, bpp in theirs) / len(theirs), rel=1e-12)


def test_bicubic_under_jpeg_equals_an_independent_yardstick_on_skimage_images():
    from taid_car.data.sample import sample_paths

    _compare_with_yardstick([], {"sample": sample_paths("test")}, [30, 75, 90], [2, 4])


@pytest.mark.data
@pytest.mark.slow
def test_bicubic_under_jpeg_equals_an_independent_yardstick_on_set5_and_set14(data_root):
    paths = {name: sorted(p for p in (data_root / name).iterdir() if p.suffix.lower() == ".png")
             for name in ("Set5", "Set14")}
    _compare_with_yardstick(["data=benchmark", f"data_root={data_root}"], paths, [30, 50, 75, 90], [2, 4])


# ------------------------------------------------------------------ rescale


def _images(folder: Path) -> Path:
    folder.mkdir()
    hr = (_hr(7, 40, 56)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(hr, "RGB").save(folder / "a.png")
    Image.fromarray(hr[..., 1], "L").save(folder / "b.png")
    return folder


def test_rescale_downscale_through_jpeg_writes_the_codecs_bytes_and_upscale_reads_them(tmp_path):
    from taid_car.rescale import main

    ckpt, images = bicubic_checkpoint(tmp_path), _images(tmp_path / "hr")
    common = ["--device", "cpu", "--no-progress"]
    assert main(["downscale", "--ckpt", str(ckpt), "--input", str(images), "--output", str(tmp_path / "lr"),
                 "--channel", "jpeg", "--quality", "60", *common]) == 0
    assert sorted(p.name for p in (tmp_path / "lr").iterdir()) == ["a.jpg", "b.jpg"]
    for name in ("a", "b"):
        hr = read_image(images / f"{name}.png").tensor[None]
        rounded = LOSSLESS.round(bicubic_downscale(hr, 2))
        assert (tmp_path / "lr" / f"{name}.jpg").read_bytes() == encode(rounded[0], "jpeg", 60, "4:2:0")
    with Image.open(tmp_path / "lr" / "b.jpg") as gray:
        assert gray.mode == "L"  # a gray source: a gray JPEG
    assert main(["upscale", "--ckpt", str(ckpt), "--input", str(tmp_path / "lr"), "--output", str(tmp_path / "sr"),
                 *common]) == 0
    hr = read_image(images / "a.png").tensor[None]
    out = rescale_and_score(BicubicDownscaler(2), BicubicUpscaler(2), hr, 2, False, channel=JPEGChannel(quality=60))
    sr = read_image(tmp_path / "sr" / "a.png").tensor
    assert torch.equal(sr, torch.floor(out.sr[0].clamp(0, 1) * 255 + 0.5) / 255)


def test_rescale_defaults_to_the_checkpoints_channel_and_names_bad_options(tmp_path, caplog):
    from taid_car.rescale import main

    ckpt, images = _jpeg_trained_checkpoint(tmp_path, quality=80), _images(tmp_path / "hr")
    common = ["--device", "cpu", "--no-progress"]
    assert main(["downscale", "--ckpt", str(ckpt), "--input", str(images), "--output", str(tmp_path / "lr"),
                 *common]) == 0
    assert sorted(p.name for p in (tmp_path / "lr").iterdir()) == ["a.jpg", "b.jpg"]
    assert main(["roundtrip", "--ckpt", str(bicubic_checkpoint(tmp_path)), "--input", str(images),
                 "--jpeg-quality", "75", *common]) == 2
    assert "--jpeg-quality is gone" in caplog.text and "--channel jpeg --quality 75" in caplog.text
    assert main(["roundtrip", "--ckpt", str(bicubic_checkpoint(tmp_path)), "--input", str(images),
                 "--quality", "75", *common]) == 2
    assert "channel is png (lossless); give --channel jpeg" in caplog.text


# ------------------------------------------------------------------ compare


def _jpeg_rows(method: str, offset: float) -> list[dict]:
    rows = [{"method": method, "set_name": "Set5", "scale": 2, "images": 5, "psnr_y": 36 + offset, "ssim_y": 0.95,
             "psnr_rgb": 34.0, "lr_psnr_y": 40.0, "bicubic_psnr_y": 33.6, "bicubic_ssim_y": 0.93, "bpp": 10.0,
             "bicubic_bpp": 9.0, "channel": "png", "per_image": []}]
    for quality in (30, 50, 90):
        rows.append({**rows[0], "channel": "jpeg", "quality": quality, "subsampling": "4:2:0",
                     "psnr_y": 28 + quality / 10 + offset, "bicubic_psnr_y": 28 + quality / 12,
                     "bpp": quality / 30, "bicubic_bpp": quality / 35})
    return rows


def test_compare_draws_psnr_against_quality_and_against_bits_per_pixel(tmp_path):
    from taid_car.compare import compare

    root = tmp_path / "runs"
    fake_run(root, "0_car", "car & edsr_tiny", 2, {}, results=_jpeg_rows("car & edsr_tiny", 0.5))
    fake_run(root, "1_taid", "taid & edsr_tiny", 2, {}, results=_jpeg_rows("taid & edsr_tiny", 1.0))
    written = compare([root], console=None)
    for kind, name in (("quality", "psnr_y_vs_quality.png"), ("bpp", "psnr_y_vs_bpp.png")):
        assert written[kind].name == name
        with Image.open(written[kind]) as image:
            assert image.format == "PNG" and min(image.size) > 100
    report = written["md"].read_text()
    assert "psnr_y_vs_quality.png" in report and "psnr_y_vs_bpp.png" in report and "jpeg q30 4:2:0" in report
    with written["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {row["quality"] for row in rows} == {"", "30", "50", "90"}
    assert rows[0]["channel"] == "png"  # png first within a set and scale, then high quality to low


def test_compare_of_clean_runs_draws_no_rate_distortion_plot(tmp_path):
    from taid_car.compare import compare

    root = tmp_path / "runs"
    fake_run(root, "0_car", "car & edsr_tiny", 2, {"Set5": (34.0, 0.95, 36.0, 33.0)})
    written = compare([root], console=None)
    assert "quality" not in written and "bpp" not in written
