"""TAD's colorization (``model=taid_color``): shapes, plain gray, scoring, configs, the CLI, and
a short overfit in which the learned gray + decoder beats plain gray + the same decoder."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import compose_run
from taid_car.errors import ConfigError
from taid_car.models.colorize import BT601, ColorToGray, GrayToColor, PlainGray, plain_gray
from taid_car.models.quantize import quantize_8bit
from taid_car.models.rescaler import Rescaler
from taid_car.scoring.metrics import quantize_uint8, rgb_to_gray
from taid_car.scoring.pipeline import rescale_and_score, score_colorized
from taid_car.scoring.report import markdown_table
from taid_car.scoring.results import SetResult
from taid_car.scoring.tasks import COLORIZE
from taid_car.training.baseline import baseline_config, gain_lines, wants_baseline


def test_shapes_and_channels():
    hr = torch.rand(2, 3, 27, 34)
    encoder, decoder = ColorToGray(), GrayToColor()
    gray = encoder(hr)
    assert gray.shape == (2, 1, 27, 34) and encoder.out_channels == 1 and encoder.task is COLORIZE
    assert decoder(quantize_8bit(gray)).shape == (2, 3, 27, 34)
    assert PlainGray()(hr).shape == (2, 1, 27, 34)
    with pytest.raises(ValueError, match=r"\(B,1,H,W\)"):
        decoder(hr)
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        encoder(gray)


@pytest.mark.parametrize("cls", [ColorToGray, GrayToColor, PlainGray])
def test_scale_other_than_one_is_refused(cls):
    with pytest.raises(ConfigError, match="scale must be 1"):
        cls(scale=2)


def test_encoder_starts_at_plain_gray_exactly():
    hr = torch.rand(1, 3, 16, 20)
    assert torch.equal(ColorToGray()(hr), plain_gray(hr))


def test_plain_gray_is_bt601_and_the_metrics_gray():
    assert BT601 == (0.299, 0.587, 0.114)
    hr = torch.randint(0, 256, (2, 3, 31, 17)).float() / 255
    ours = quantize_uint8(quantize_8bit(plain_gray(hr)))
    metrics = rgb_to_gray(quantize_uint8(hr))
    assert (ours - metrics).abs().max() <= 1  # same weights; rounding at exact .5 ties may differ
    assert (ours == metrics).double().mean() > 0.999


def test_pipeline_scores_colorization():
    hr = torch.rand(2, 3, 24, 24)
    names, reference, headline = COLORIZE.scores, COLORIZE.reference_scores, COLORIZE.headline
    decoder = GrayToColor()
    out = rescale_and_score(ColorToGray(), decoder, hr, 1, False)
    assert set(out.scores) == set(names) and headline == "psnr_rgb" and reference == ()
    assert out.lr.shape == (2, 1, 24, 24) and out.bicubic_sr is None
    assert torch.equal(out.bicubic_lr, quantize_8bit(plain_gray(hr)))
    plain = rescale_and_score(PlainGray(), decoder, hr, 1, False)
    assert torch.isinf(plain.scores["lr_psnr_y"]).all()  # the baseline's gray is plain gray
    torch.testing.assert_close(plain.scores["lr_ssim_y"], torch.ones(2, dtype=torch.float64))
    # a ±8-level checker dither on a flat gray: 30 dB "gray fidelity", yet SSIM sees the pattern
    checker = ((torch.arange(24)[:, None] + torch.arange(24)) % 2).to(torch.float32) * 2 - 1
    flat = torch.full((1, 1, 24, 24), 128 / 255)
    scores = score_colorized(hr[:1], flat + 8 / 255 * checker, hr[:1], flat, 1, False)
    assert abs(float(scores["lr_psnr_y"]) - 30.07) < 0.01 and float(scores["lr_ssim_y"]) < 0.5
    # the learned encoder starts at plain gray: same LR, same restored image
    assert torch.equal(out.lr, plain.lr) and torch.equal(out.scores["psnr_rgb"], plain.scores["psnr_rgb"])


def test_results_table_shows_colour_columns_only():
    row = {"set_name": "Set5", "scale": 1, "images": 5, "psnr_y": 35.0, "ssim_y": 0.98, "psnr_rgb": 24.0,
           "lr_psnr_y": 40.0, "ssim_rgb": 0.9, "lr_ssim_y": 0.95, "task": "colorize"}
    table = markdown_table([SetResult(method="taid_color & gray_to_color", **row)])
    assert "SSIM-RGB" in table and "gray vs plain gray" in table and "Bicubic" not in table
    assert "gray SSIM vs plain gray" in table and "0.9500" in table
    resize = markdown_table([SetResult("bicubic & bicubic", "Set5", 4, 5, 28.4, 0.81, 26.0, float("inf"), 28.4, 0.81)])
    assert "SSIM-RGB" not in resize and "Bicubic PSNR-Y" in resize and "gray SSIM" not in resize


def test_config_preset_and_its_gray_baseline(tmp_path):
    cfg = compose_run(["model=taid_color"], tmp_path)
    assert cfg.scale == 1 and cfg.upscaler.name == "gray_to_color"
    assert cfg.callbacks.checkpoint.monitor == "val/headline" and cfg.optimized_metric == "val/headline"
    assert wants_baseline(cfg, multirun=False)
    base = baseline_config(cfg)
    assert base.model.name == "gray" and base.upscaler.name == "gray_to_color" and base.scale == 1
    assert not wants_baseline(compose_run(["model=gray"], tmp_path), multirun=False)
    resize = compose_run(["model=taid"], tmp_path)
    assert resize.scale == 4 and resize.callbacks.checkpoint.monitor == "val/headline"
    study = compose_run(["experiment=color_study"], tmp_path)
    assert study.model.name == "taid_color" and wants_baseline(study, multirun=False)  # brings its gray row
    assert study.model.downscaler.block == 2 and study.upscaler.net.block == 2  # the position-aware design
    assert study.model.loss_weights.out_of_range == 1.0 and not study.model.quantize_through_clamp


def test_gain_line_is_in_rgb():
    def result(method, psnr, ssim):
        return SetResult(method, "Set5", 1, 5, 35.0, 0.98, psnr, 40.0, ssim_rgb=ssim, task="colorize")

    line = gain_lines([result("taid_color & d", 24.5, 0.91)], [result("gray & d", 24.0, 0.90)], steps=100)[0]
    assert "+0.50 dB PSNR-RGB" in line and "+0.0100 SSIM-RGB" in line and line.endswith("the learned gray helped.")


def _isoluminant_tiles(tiles: int = 8, tile: int = 6) -> torch.Tensor:
    """(1,3,48,48): 8x8 flat tiles of random colours that all have the same BT.601 gray (0.5),
    so plain gray holds no colour at all and a decoder can only restore it from what an encoder
    hid in the gray image."""
    weights = torch.tensor(BT601)
    a = torch.tensor([1.0, -weights[0] / weights[1], 0.0])
    b = torch.linalg.cross(weights, a)
    a, b = a / a.norm(), b / b.norm()  # two directions of zero luma
    coef = (torch.rand(2, tiles, tiles, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.5
    chroma = coef[0, None] * a[:, None, None] + coef[1, None] * b[:, None, None]
    return (0.5 + chroma).clamp(0, 1).repeat_interleave(tile, 1).repeat_interleave(tile, 2)[None]


def _overfit(encoder, block: int, image: torch.Tensor, steps: int = 500) -> dict:
    """``steps`` Adam steps of the encoder + a ``block`` decoder on one image (λ = 0.1)."""
    torch.manual_seed(1)
    decoder = GrayToColor(n_blocks=2, n_feats=16, block=block)
    weights = {"l1": 1.0, "guidance": 0.1} if encoder.regularizer_names else None
    model = Rescaler(encoder, decoder, 1, weights, optimizer=partial(torch.optim.Adam, lr=5e-4))
    optimizer = model.configure_optimizers()
    for _ in range(steps):
        optimizer.zero_grad()
        model.compute_losses(image)["loss"].backward()
        optimizer.step()
    return rescale_and_score(model.downscaler, model.upscaler, image, 1, False).scores


@pytest.mark.slow
def test_a_block_encoder_hides_colour_that_plain_gray_cannot_carry():
    """Iso-luminant tiles, 500 steps each, the same decoder: learned gray on 2x2 blocks restores
    colour >= 10 dB better than plain gray (measured +18.5 dB, at 30.3 dB gray fidelity), a margin
    the per-pixel design (block=1, measured +4.0 dB) cannot reach: the threshold tells them apart."""
    image = _isoluminant_tiles()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same float sums on every machine
    try:
        torch.manual_seed(0)
        results = {block: (_overfit(ColorToGray(n_blocks=2, n_feats=16, block=block), block, image),
                           _overfit(PlainGray(), block, image)) for block in (2, 1)}
    finally:
        torch.set_num_threads(threads)
    gain = {block: float(learned["psnr_rgb"] - plain["psnr_rgb"]) for block, (learned, plain) in results.items()}
    assert gain[2] >= 10.0, gain
    assert gain[1] < 10.0, gain  # the old design does not pass this test
    assert float(results[2][0]["lr_psnr_y"]) > 28  # still a gray image close to plain gray


def test_block_networks_take_any_size_and_start_at_plain_gray():
    rgb = torch.rand(2, 3, 13, 18)
    encoder, decoder = ColorToGray(n_blocks=1, n_feats=8, block=2), GrayToColor(n_blocks=1, n_feats=8, block=2)
    gray = encoder(rgb)
    assert gray.shape == (2, 1, 13, 18) and torch.allclose(gray, PlainGray()(rgb))
    assert decoder(gray).shape == (2, 3, 13, 18)
    with pytest.raises(ValueError, match="block=0"):
        GrayToColor(block=0)


def test_presets_default_to_the_position_aware_design():
    """tiny (4x32) for CPU and base (16x64, paper-sized) both work on 2x2 blocks unless told otherwise."""
    sizes = {}
    for preset in ("tiny", "base"):
        encoder, decoder = ColorToGray(preset=preset), GrayToColor(preset=preset)
        assert encoder.block == decoder.block == 2
        assert encoder.net.head.in_channels == 12 and decoder.net.tail.out_channels == 12
        sizes[preset] = sum(p.numel() for p in encoder.parameters())
        assert decoder(encoder(torch.rand(1, 3, 9, 7))).shape == (1, 3, 9, 7)
    assert sizes["base"] > 10 * sizes["tiny"]


# ------------------------------------------------------------------ rescale: gray out, colour back


@pytest.fixture(scope="module")
def color_ckpt(tmp_path_factory) -> Path:
    from taid_car.run import train

    out = tmp_path_factory.mktemp("color_run")
    cfg = compose_run(["model=taid_color", "logger=none", "trainer.max_steps=1", "trainer.val_check_interval=1",
                       "test=false", "trainer.enable_progress_bar=false"], out)
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_rescale_saves_learned_gray_and_restores_colour(color_ckpt, tmp_path):
    from taid_car.rescale import main

    folder = tmp_path / "in"
    folder.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(folder / "a.png")
    common = ["--device", "cpu", "--no-progress", "--ckpt", str(color_ckpt)]
    assert main(["downscale", "--input", str(folder), "--output", str(tmp_path / "gray"), *common]) == 0
    with Image.open(tmp_path / "gray" / "a.png") as gray:
        assert gray.mode == "L" and gray.size == (41, 30)
    assert main(["upscale", "--input", str(tmp_path / "gray"), "--output", str(tmp_path / "colour"), *common]) == 0
    with Image.open(tmp_path / "colour" / "a.png") as colour:
        assert colour.mode == "RGB" and colour.size == (41, 30)
    # a colour file is not a gray image to restore: named, skipped, exit 1 (nothing done)
    assert main(["upscale", "--input", str(folder), "--output", str(tmp_path / "x"), *common]) == 1
    assert main(["roundtrip", "--input", str(folder), *common]) == 0
    assert main(["roundtrip", "--input", str(folder), "--jpeg-quality", "50", *common]) == 2


@pytest.mark.slow
def test_fast_dev_run_trains_tests_and_brings_the_gray_baseline(tmp_path):
    from taid_car.run import train

    outcome = train(compose_run(["model=taid_color", "debug=fast_dev_run"], tmp_path))
    result = outcome["results"][0]
    assert result.scale == 1 and result.ssim_rgb is not None and result.bicubic_psnr_y is None
    assert "train/guidance" in outcome["metrics"] and "val/headline" in outcome["metrics"]
    assert [r.method for r in outcome["baseline"]] == ["gray & gray_to_color"]
    assert "PSNR-RGB" in (tmp_path / "results.md").read_text()
