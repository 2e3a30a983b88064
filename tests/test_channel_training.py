"""Training through the LR channel (issue 32): the upscaler learns from the channel's LR, the
out_of_range penalty stays on the unrounded LR, a quality range is drawn per batch and resumed
exactly, validation and test code through the real codec, the baseline and the pretraining carry
the run's channel, bad channel settings stop a run at start; short runs of every method."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers import compose_run
from taid_car.channel import JPEGChannel, PNGChannel, codecs
from taid_car.errors import ConfigError
from taid_car.models.quantize import out_of_range_penalty, quantize_8bit
from taid_car.models.rescaler import rng_states, set_rng_states
from taid_car.run import build_rescaler, train
from taid_car.scoring.pipeline import rescale_and_score
from taid_car.training.baseline import baseline_config, pretrain_config

HERE = Path(__file__).parent
TINY = ["logger=none", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
        "callbacks.panels=null"]


def _hr(seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([0.5 + 0.35 * torch.sin(8 * x + c) * torch.cos(6 * y - c) for c in range(3)])
    return (base + 0.1 * torch.rand(2, 3, size, size, generator=g)).clamp(0, 1)


def _model(tmp_path, *overrides: str):
    return build_rescaler(compose_run(["model=taid", "scale=2", "logger=none", *overrides], tmp_path),
                          ["sample_val"], ["sample"])


def _seen_by_upscaler(model, hr: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(loss terms, the downscaler's unrounded LR, the upscaler's input) of one training forward."""
    seen = {}
    hooks = [model.downscaler.register_forward_hook(lambda m, i, out: seen.setdefault("unrounded", out)),
             model.upscaler.register_forward_pre_hook(lambda m, args: seen.setdefault("lr", args[0]))]
    try:
        terms = model.compute_losses(hr)
    finally:
        for hook in hooks:
            hook.remove()
    return terms, seen["unrounded"], seen["lr"]


def test_the_upscaler_learns_from_the_jpeg_lr_and_out_of_range_stays_on_the_unrounded_lr(tmp_path):
    model = _model(tmp_path, "channel=jpeg", "channel.quality=40")
    assert isinstance(model.channel, JPEGChannel) and model.channel.quantizer is model.quantizer
    hr = _hr()
    terms, unrounded, lr = _seen_by_upscaler(model, hr)
    expected, _ = codecs.jpeg_roundtrip(quantize_8bit(unrounded.detach()), 40)
    assert torch.allclose(lr.detach(), expected, atol=1e-6)
    assert not torch.allclose(lr.detach(), quantize_8bit(unrounded.detach()))  # not merely rounded
    assert torch.equal(terms["out_of_range"], out_of_range_penalty([unrounded]))
    terms["loss"].backward()
    grads = [p.grad for p in model.downscaler.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)  # the identity rule passes the gradient back


def test_png_training_forward_is_the_rounding(tmp_path):
    model = _model(tmp_path)
    assert isinstance(model.channel, PNGChannel)
    _, unrounded, lr = _seen_by_upscaler(model, _hr(1))
    assert torch.equal(lr, quantize_8bit(unrounded))


def test_a_quality_range_is_drawn_per_batch_from_pythons_random_and_resumes(tmp_path):
    model = _model(tmp_path, "channel=jpeg", "channel.quality=[50,95]")
    random.seed(11)
    expected = [random.randint(50, 95) for _ in range(3)]
    random.seed(11)
    hr = _hr(2)
    for quality in expected:
        _, unrounded, lr = _seen_by_upscaler(model, hr)
        coded, _ = codecs.jpeg_roundtrip(quantize_8bit(unrounded.detach()), quality)
        assert torch.allclose(lr.detach(), coded, atol=1e-6), quality
    assert len(set(expected)) > 1
    saved = rng_states()  # what a checkpoint keeps
    after = [model.channel.draw_quality() for _ in range(5)]
    set_rng_states(saved)
    assert [model.channel.draw_quality() for _ in range(5)] == after


def test_validation_and_test_code_through_the_real_codec_at_each_quality(tmp_path):
    model = _model(tmp_path, "channel=jpeg", "channel.quality=[50,95]", "channel.test_qualities=[30]")
    model.eval()
    assert model.val_channel.quality == 72  # a range is validated at its middle
    assert [c.quality for c in model.test_channels] == [72, 30]
    hr = _hr(3)
    batch = {"hr": hr, "is_gray": torch.tensor([False, False])}
    with torch.no_grad():
        model.validation_step(batch, 0)
        model.test_step(batch, 0)
    assert len(model.val_metrics) == 1 and len(model.test_metrics[0]) == 2
    for metrics, channel in [(model.val_metrics[0], model.val_channel), *zip(model.test_metrics[0], model.test_channels)]:
        out = rescale_and_score(model.downscaler, model.upscaler, hr, 2, False, channel=channel)
        for name, metric in metrics.items():
            assert float(metric.compute()) == pytest.approx(float(out.scores[name].mean()), rel=1e-12), (channel, name)
    assert float(model.test_metrics[0][1]["bicubic_psnr_y"].compute()) < float(model.test_metrics[0][0]["bicubic_psnr_y"].compute())


def test_the_baseline_and_the_pretraining_carry_the_runs_channel(tmp_path):
    cfg = compose_run(["model=car", "scale=2", "channel=jpeg", "channel.quality=[50,95]", "model.pretrain_steps=3"],
                      tmp_path)
    for derived in (baseline_config(cfg), pretrain_config(cfg)):
        assert OmegaConf.to_container(derived.channel) == OmegaConf.to_container(cfg.channel)
        assert build_rescaler(derived).channel == JPEGChannel(quality=(50, 95))


@pytest.mark.parametrize(("overrides", "message"), [
    (["channel=webp"], "channel=webp is for evaluation only"),
    (["channel=jpeg", "channel.quality=0"], "channel.quality=0"),
    (["channel=jpeg", "channel.quality=[90,50]"], "low <= high"),
    (["channel=jpeg", "channel.subsampling=4:1:1"], "channel.subsampling"),
    (["channel=jpeg", "channel.train_rule=magic"], "channel.train_rule='magic'"),
    (["channel.test_qualities=[0]"], "channel.test_qualities=[0]"),
    (["channel.test_qualities=30"], "channel.test_qualities=30"),
])
def test_a_bad_channel_stops_the_run_at_start(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        train(compose_run(["model=taid", "scale=2", *TINY, *overrides], tmp_path))
    assert not (tmp_path / "checkpoints").exists()  # nothing built or trained


@pytest.mark.parametrize("rule", ["ste", "diff"])
def test_a_recursions_intermediate_levels_are_rounded_only(tmp_path, monkeypatch, rule):
    from taid_car.channel import diff_jpeg

    model = _model(tmp_path, "scale=4", "model.downscaler.recursive=true", "upscaler=taid_tiny",
                   "channel=jpeg", "channel.quality=60", f"channel.train_rule={rule}")
    coded_shapes = []
    module, name = (codecs, "jpeg_roundtrip") if rule == "ste" else (diff_jpeg, "diff_jpeg")
    coder = getattr(module, name)

    def spy(images, *args, **kwargs):
        coded_shapes.append(tuple(images.shape[-2:]))
        return coder(images, *args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    assert model.downscaler.recursive and model.downscaler.net.levels == 2
    model.compute_losses(_hr(4))
    assert coded_shapes == [(8, 8)]  # the stored x4 LR only, not the x2 level


# ------------------------------------------------------------------ short runs of every method (slow)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["car", "taid", "irn"])
def test_every_method_and_its_baseline_train_through_jpeg(tmp_path, model):
    outcome = train(compose_run([f"model={model}", "scale=2", *TINY, "channel=jpeg", "channel.quality=75",
                                 "baseline=true"], tmp_path))
    for rows in (outcome["results"], outcome["baseline"]):
        assert [(r.channel, r.quality, r.subsampling) for r in rows] == [("jpeg", 75, "4:2:0")]
        assert rows[0].bpp > 0 and rows[0].bicubic_bpp > 0 and "[jpeg q75 4:2:0]" in rows[0].method
    assert outcome["baseline"][0].method.startswith("bicubic & ")
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["channel"] == {"channel": "jpeg", "quality": 75, "subsampling": "4:2:0"}
    baseline_saved = torch.load(tmp_path / "baseline" / "checkpoints" / "last.ckpt", weights_only=True)
    assert baseline_saved["taid_car_config"]["channel"]["quality"] == 75  # its upscaler learnt JPEG-coded bicubic LR
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved[0]["quality"] == 75 and saved[0]["bpp"] > 0


@pytest.mark.slow
def test_a_quality_range_run_is_tested_at_its_middle_and_each_test_quality(tmp_path):
    outcome = train(compose_run(["model=taid", "scale=2", *TINY, "baseline=false", "channel=jpeg",
                                 "channel.quality=[50,95]", "channel.test_qualities=[30,90]"], tmp_path))
    assert [r.quality for r in outcome["results"]] == [72, 30, 90]
    metrics = outcome["metrics"]
    assert "test/sample/psnr_y" in metrics and "test/sample/jpeg_q30_420/psnr_y" in metrics
    assert "range" not in (tmp_path / "results.md").read_text()


def _run(args: list[str], script: list[str] | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *(script or ["-m", "taid_car.run"]), *args],
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, cwd=HERE.parent,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_a_killed_and_resumed_quality_range_run_ends_with_the_weights_of_the_run_left_alone(tmp_path):
    """12 steps straight vs 6, SIGKILL in the next save, ``ckpt_path=last`` to 12, through JPEG with a
    quality drawn per batch: the resumed run draws the same qualities (max |Δw| = 0)."""
    def quick(run_dir: Path, *extra: str) -> list[str]:
        return ["model=taid", "scale=2", "trainer.max_steps=12", "trainer.val_check_interval=6", "logger=none",
                "test=false", "baseline=false", "callbacks.panels=null", "trainer.enable_progress_bar=false",
                "channel=jpeg", "channel.quality=[20,95]", f"hydra.run.dir={run_dir}", *extra]

    straight = _run(quick(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed_dir = tmp_path / "killed"
    killed = _run(quick(killed_dir), [str(HERE / "_kill_during_save.py")], KILL_AT_SAVE="3", PYTHONPATH=str(HERE))
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = _run(quick(killed_dir, "ckpt_path=last"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
            for d in (tmp_path / "straight", killed_dir))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0


def test_the_baseline_gain_is_stated_per_set_and_lr_channel():
    from taid_car.scoring.results import SetResult
    from taid_car.training.baseline import gain_lines, gains

    def row(method: str, psnr: float, **channel) -> SetResult:
        return SetResult(method=method, set_name="Set5", scale=4, images=5, psnr_y=psnr, ssim_y=0.8, psnr_rgb=psnr,
                         lr_psnr_y=40.0, bicubic_psnr_y=27.0, bicubic_ssim_y=0.7, **channel)

    jpeg = {"channel": "jpeg", "quality": 30, "subsampling": "4:2:0"}
    learned = [row("car & e", 28.5), row("car & e", 27.0, **jpeg)]
    baseline = [row("bicubic & e", 28.0), row("bicubic & e", 27.2, **jpeg)]
    per_set = gains(learned, baseline)
    assert list(per_set) == ["Set5", "Set5 through jpeg q30 4:2:0"]
    assert per_set["Set5 through jpeg q30 4:2:0"]["gain_psnr_y"] == pytest.approx(-0.2)
    clean, coded = gain_lines(learned, baseline, steps=2000)
    assert "+0.50 dB" in clean and "helped" in clean
    assert coded.startswith("Set5 through jpeg q30 4:2:0 x4") and "-0.20 dB" in coded and "did not help" in coded
