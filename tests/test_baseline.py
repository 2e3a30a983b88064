"""The main job's fair baseline (bicubic + the same upscaler, same schedule), upscaler warm
starts from another run's checkpoint, and the downscaler's own learning rate."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from helpers import compose_run
from taid_car.run import build_rescaler, train
from taid_car.scoring.results import SetResult
from taid_car.training.baseline import baseline_config, gain_lines, wants_baseline

TINY = ["logger=none", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false"]


def _result(method: str, psnr: float, ssim: float, set_name: str = "sample") -> SetResult:
    return SetResult(method=method, set_name=set_name, scale=4, images=1, psnr_y=psnr, ssim_y=ssim,
                     psnr_rgb=psnr, lr_psnr_y=40.0, bicubic_psnr_y=27.0, bicubic_ssim_y=0.7)


def test_baseline_is_on_for_single_learned_runs_only(tmp_path):
    assert wants_baseline(compose_run(["model=car"], tmp_path), multirun=False)
    assert wants_baseline(compose_run(["model=taid"], tmp_path), multirun=False)
    assert not wants_baseline(compose_run(["model=car"], tmp_path), multirun=True)  # sweeps: own job
    assert not wants_baseline(compose_run(["model=taid"], tmp_path), multirun=True)
    # a pretrained run is not on the sweep bicubic job's budget: it brings its own baseline
    assert wants_baseline(compose_run(["model=car", "model.pretrain_steps=5"], tmp_path), multirun=True)
    assert not wants_baseline(compose_run(["model=bicubic"], tmp_path), multirun=False)
    assert not wants_baseline(compose_run(["model=car", "test=false"], tmp_path), multirun=False)
    assert not wants_baseline(compose_run(["model=car", "baseline=false"], tmp_path), multirun=False)
    assert wants_baseline(compose_run(["model=car", "baseline=true"], tmp_path), multirun=True)
    with pytest.raises(ValueError, match="baseline must be one of"):
        wants_baseline(compose_run(["model=car", "baseline=sometimes"], tmp_path), multirun=False)


def test_baseline_config_changes_the_downscaler_only(tmp_path):
    cfg = compose_run(["model=car", "scale=2", "upscaler=edsr_baseline", "trainer.max_steps=7",
                       "optimizer.lr=1e-3", "seed=3"], tmp_path)
    base = baseline_config(cfg)
    OmegaConf.resolve(cfg)
    OmegaConf.resolve(base)
    assert base.model.name == "bicubic" and base.model.downscaler.scale == 2
    assert base.data.modcrop == 8 and cfg.data.modcrop is None  # CAR's crops: both scored on the same pixels
    for key in ("upscaler", "trainer.max_steps", "optimizer", "scheduler", "seed", "data.train"):
        assert OmegaConf.select(base, key) == OmegaConf.select(cfg, key), key
    assert base.output_dir == str(tmp_path / "baseline") and base.baseline is False
    assert list(base.logger) == ["csv"]


def test_gain_lines_say_whether_it_helped():
    learned = [_result("car & edsr_tiny", 28.40, 0.80), _result("car & edsr_tiny", 26.00, 0.70, "Set14")]
    base = [_result("bicubic & edsr_tiny", 28.10, 0.79), _result("bicubic & edsr_tiny", 26.05, 0.71, "Set14")]
    sample, set14 = gain_lines(learned, base, steps=2000)
    assert "+0.30 dB PSNR-Y" in sample and "+0.0100 SSIM-Y" in sample and "same 2000 steps" in sample
    assert sample.endswith("the learned downscaler helped.")
    assert "-0.05 dB" in set14 and "level" in set14
    assert gain_lines(learned, [_result("bicubic & edsr_tiny", 28.9, 0.8)])[0].endswith("did not help.")


@pytest.mark.slow
def test_main_job_trains_and_reports_the_baseline(tmp_path, capsys):
    outcome = train(compose_run(["model=car", "scale=2", *TINY], tmp_path))
    assert [r.method for r in outcome["baseline"]] == ["bicubic & edsr_tiny"]
    assert (tmp_path / "baseline" / "results.json").is_file()
    summary = json.loads((tmp_path / "run.json").read_text())
    gain = summary["baseline"]["per_set"]["sample"]
    assert gain["gain_psnr_y"] == pytest.approx(outcome["results"][0].psnr_y - outcome["baseline"][0].psnr_y)
    assert summary["baseline"]["global_step"] == summary["global_step"] == 2
    assert [r["method"] for r in json.loads((tmp_path / "results.json").read_text())] == ["car & edsr_tiny"]
    assert "Baseline, bicubic + the same upscaler" in (tmp_path / "results.md").read_text()
    printed = capsys.readouterr().out
    assert "bicubic & edsr_tiny" in printed and "dB PSNR-Y" in printed
    assert "no verdict after 2 steps" in printed and "help" not in printed  # 2 steps judge nothing


def test_upscaler_init_from_loads_another_runs_upscaler(tmp_path):
    train(compose_run(["model=bicubic", "scale=2", *TINY], tmp_path / "bicubic"))
    ckpt = tmp_path / "bicubic" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    rescaler = build_rescaler(compose_run(["model=car", "scale=2", f"upscaler.init_from={ckpt}"], tmp_path))
    for name, value in rescaler.upscaler.state_dict().items():
        torch.testing.assert_close(value, saved[f"upscaler.{name}"], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"trained with upscaler=edsr_tiny scale=2; this run is upscaler=edsr_tiny scale=4"):
        build_rescaler(compose_run(["model=car", "scale=4", f"upscaler.init_from={ckpt}"], tmp_path))
    with pytest.raises(ValueError, match="upscaler=edsr_baseline scale=2"):
        build_rescaler(compose_run(["model=car", "scale=2", "upscaler=edsr_baseline",
                                    f"upscaler.init_from={ckpt}"], tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        build_rescaler(compose_run(["model=car", f"upscaler.init_from={tmp_path / 'missing.ckpt'}"], tmp_path))


def test_downscaler_learning_rate_scale(tmp_path):
    rescaler = build_rescaler(compose_run(["model=car", "optimizer.lr=1e-3", "model.downscaler_lr_scale=0.1"], tmp_path))
    optimizer = rescaler.configure_optimizers()["optimizer"]
    up, down = optimizer.param_groups
    assert up["lr"] == pytest.approx(1e-3) and down["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in down["params"]} == {id(p) for p in rescaler.downscaler.parameters()}
    assert {id(p) for p in up["params"]} == {id(p) for p in rescaler.upscaler.parameters()}
    bicubic = build_rescaler(compose_run(["model=bicubic"], tmp_path)).configure_optimizers()["optimizer"]
    assert len(bicubic.param_groups) == 1  # no downscaler parameters, no empty group
    with pytest.raises(ValueError, match="downscaler_lr_scale"):
        build_rescaler(compose_run(["model=car", "model.downscaler_lr_scale=0"], tmp_path))


@pytest.mark.slow
def test_pretrain_steps_start_the_learned_run_and_the_baseline_from_one_bicubic_upscaler(tmp_path):
    from taid_car.run import pretrain_upscaler

    cfg = compose_run(["model=car", "scale=2", "model.pretrain_steps=2", *TINY], tmp_path)
    ckpt = pretrain_upscaler(cfg)
    assert ckpt == tmp_path / "pretrain" / "checkpoints" / "last.ckpt" and ckpt.is_file()
    assert cfg.upscaler.init_from == str(ckpt)
    pretrained = torch.load(ckpt, weights_only=False)
    assert pretrained["taid_car_config"]["model"]["name"] == "bicubic" and pretrained["global_step"] == 2
    for config in (cfg, baseline_config(cfg)):
        upscaler = build_rescaler(config).upscaler
        for name, value in upscaler.state_dict().items():
            torch.testing.assert_close(value, pretrained["state_dict"][f"upscaler.{name}"], rtol=0, atol=0)
    outcome = train(cfg)  # reuses the pretrained checkpoint, then learned run + baseline
    assert outcome["baseline"] and (tmp_path / "baseline" / "results.json").is_file()
