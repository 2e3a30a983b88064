"""The training entry point: configs compose, every model trains a step, resume, overfit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from helpers import compose_run, model_configs, model_scales
from taid_car.config import CONFIG_DIR
from taid_car.models.quantize import quantize_8bit
from taid_car.ops.imresize import bicubic_downscale, bicubic_upscale
from taid_car.run import apply_seed, build_rescaler, train
from taid_car.scoring.metrics import psnr_y

CONF = Path(CONFIG_DIR)
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
MODELS = model_configs()
UPSCALERS = sorted(p.stem for p in (CONF / "upscaler").glob("*.yaml"))
GROUP_OPTIONS = [
    f"{group}={p.stem}"
    for group in ("data", "trainer", "logger", "debug", "optimizer", "scheduler", "callbacks")
    for p in sorted((CONF / group).glob("*.yaml"))
]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(experiment, tmp_path):
    cfg = compose_run([f"experiment={experiment}"], tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.data.scale == cfg.scale == cfg.model.downscaler.scale


@pytest.mark.parametrize("method", ["car", "taid"])
@pytest.mark.parametrize("scale", [2, 4])
def test_paper_presets_are_one_preset_at_two_scales(method, scale, tmp_path):
    alias = OmegaConf.to_container(compose_run([f"experiment={method}_paper_x{scale}"], tmp_path), resolve=True)
    preset = OmegaConf.to_container(compose_run([f"experiment={method}_paper", f"scale={scale}"], tmp_path), resolve=True)
    assert alias == preset and alias["scale"] == scale


@pytest.mark.parametrize("option", GROUP_OPTIONS)
def test_every_group_option_composes_and_resolves(option, tmp_path):
    cfg = compose_run([option, "data_root=/data"], tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.scale == 4


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("upscaler", UPSCALERS)
def test_every_model_upscaler_pair_composes(model, upscaler, tmp_path):
    cfg = compose_run([f"model={model}", f"upscaler={upscaler}", "scale=2"], tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.upscaler.get("tied") or cfg.upscaler.net.scale == 2  # a tied upscaler has no net of its own


def test_misspelt_key_and_unknown_option_fail_at_start(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_run(["scael=4"], tmp_path)
    with pytest.raises(ConfigCompositionException):
        compose_run(["model=carr"], tmp_path)
    with pytest.raises(ConfigCompositionException):
        compose_run(["trainer.max_stepz=3"], tmp_path)


#: every model config at each of its scales; the first in the fast set, the others slow (make test)
SMOKE = [pytest.param(m, scale, marks=[pytest.mark.slow] if i else []) for m in MODELS
         for i, scale in enumerate(model_scales(m))]


@pytest.mark.parametrize(("model", "scale"), SMOKE)
def test_fast_dev_run_each_model(model, scale, tmp_path):
    """Every file of conf/model/, the colour ones included: one batch of training (every weighted
    term logged and finite), the test table, and the equal-budget baseline of a learned method."""
    cfg = compose_run([f"model={model}", f"scale={scale}", "debug=fast_dev_run"], tmp_path)
    outcome = train(cfg)
    results = outcome["results"]
    assert [r.set_name for r in results] == ["sample"]
    assert results[0].scale == scale and results[0].method.startswith(model)
    assert (tmp_path / "results.md").is_file()
    weights = outcome["model"].loss_weights
    terms = ["loss", *(name for name, weight in weights.items() if weight)]
    for name in terms:
        assert torch.isfinite(torch.tensor(outcome["metrics"][f"train/{name}"])), name
    baseline = cfg.model.baseline_model
    if model != baseline:  # a single run of a learned downscaler brings its equal-budget baseline
        assert [r.method.split(" & ")[0] for r in outcome["baseline"]] == [baseline]
        assert "baseline" in json.loads((tmp_path / "run.json").read_text())
    else:
        assert outcome["baseline"] is None


def test_seed_zero_is_applied_and_null_is_not(tmp_path):
    cfg = compose_run(["seed=0"], tmp_path)
    torch.manual_seed(123)
    assert apply_seed(cfg) == 0
    first = build_rescaler(cfg)
    torch.manual_seed(123)
    apply_seed(cfg)
    again = build_rescaler(cfg)
    for a, b in zip(first.parameters(), again.parameters()):
        torch.testing.assert_close(a, b)
    assert apply_seed(compose_run(["seed=null"], tmp_path)) is None


@pytest.mark.parametrize(
    "model,scale,shape",
    [("car", 4, (40, 56)), ("car", 2, (24, 40)), ("taid", 3, (21, 33)), ("bicubic", 3, (27, 15))],
)
def test_lr_and_sr_shapes_for_odd_sizes(model, scale, shape, tmp_path):
    cfg = compose_run([f"model={model}", f"scale={scale}"], tmp_path)
    rescaler = build_rescaler(cfg)
    hr = torch.rand(2, 3, *shape)
    lr, sr = rescaler(hr)
    assert lr.shape == (2, 3, shape[0] // scale, shape[1] // scale)
    assert sr.shape == hr.shape
    torch.testing.assert_close(lr, torch.round(lr * 255) / 255)  # on the 8-bit grid


def test_overfit_one_image_lowers_loss_and_beats_bicubic(tmp_path):
    """TAID + tiny EDSR on one 32x32 crop of a sample image: the loss falls and SR beats bicubic."""
    from taid_car.data.sample import sample_split

    torch.manual_seed(0)
    image = sample_split("test")[0].tensor[:, 100:132, 180:212].unsqueeze(0)  # textured astronaut crop
    cfg = compose_run(["model=taid", "scale=2"], tmp_path)
    rescaler = build_rescaler(cfg)
    optimizer = torch.optim.Adam(rescaler.parameters(), lr=1e-3)
    losses = []
    for _ in range(100):
        loss = rescaler.compute_losses(image)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    with torch.no_grad():
        _, sr = rescaler(image)
    bicubic = bicubic_upscale(quantize_8bit(bicubic_downscale(image, 2)), 2)
    assert psnr_y(sr, image, 2).item() > psnr_y(bicubic, image, 2).item()


@pytest.mark.slow
def test_evaluate_command_reproduces_the_runs_test_table(tmp_path):
    """The Lightning test loop and `taid_car.evaluate ckpt_path=...` score a checkpoint through one
    pipeline (taid_car.scoring.pipeline.rescale_and_score): identical numbers, not merely close."""
    from taid_car.evaluate import run_evaluation

    overrides = ["model=car", "scale=2", "logger=none", "trainer.max_steps=2", "baseline=false",
                 "trainer.val_check_interval=2", "trainer.enable_progress_bar=false"]
    outcome = train(compose_run(overrides, tmp_path))
    best = outcome["trainer"].checkpoint_callback.best_model_path
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        eval_cfg = compose(config_name="evaluate", overrides=[f"ckpt_path={best}", "progress=false"])
    evaluated = run_evaluation(eval_cfg)
    assert len(evaluated) == len(outcome["results"]) == 1
    ours, theirs = evaluated[0], outcome["results"][0]
    assert (ours.method, ours.scale, ours.images) == (theirs.method, theirs.scale, theirs.images)
    for key in ("psnr_y", "ssim_y", "psnr_rgb", "lr_psnr_y", "bicubic_psnr_y", "bicubic_ssim_y"):
        assert getattr(ours, key) == getattr(theirs, key), key


def test_loading_a_foreign_checkpoint_names_the_file(tmp_path):
    from taid_car.models.trained import load_trained_pair

    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match=r"other\.ckpt: not a taid_car checkpoint"):
        load_trained_pair(path)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_trained_pair(tmp_path / "missing.ckpt")


def test_slurm_launcher_config_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "trainer=ddp"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 2


def test_run_directories_are_unique_per_process(tmp_path):
    """Two runs started in the same second get different directories (the id is per process)."""
    import subprocess
    import sys

    from taid_car.config import run_id

    assert run_id() == run_id()
    code = "from taid_car.config import run_id; print(run_id())"
    others = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip() for _ in range(2)}
    assert len(others) == 2 and run_id() not in others
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    assert str(cfg.hydra.run.dir).endswith(f"_{run_id()}")


def test_a_run_directory_holding_another_run_is_refused_unless_resuming(tmp_path):
    from taid_car.run import refuse_foreign_run_dir

    cfg = compose_run(["model=bicubic"], tmp_path)
    refuse_foreign_run_dir(cfg)  # empty: fine
    (tmp_path / "results.json").write_text("[]")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(FileExistsError, match=r"already holds a run \(results.json, checkpoints/last.ckpt\).*ckpt_path=last"):
        refuse_foreign_run_dir(cfg)
    refuse_foreign_run_dir(compose_run(["model=bicubic", "ckpt_path=last"], tmp_path))  # resuming it: fine
