"""Experiment tracking: resume after an interruption, W&B offline runs, multirun failures, DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from helpers import compose_run
from taid_car.run import train

REPO = Path(__file__).resolve().parents[1]


class _Interrupt(L.Callback):
    """Fails the run when it reaches ``at_step`` (after the checkpoint of the step before)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated interruption")


class _StartStep(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.start_step = trainer.global_step


def _with_callback(cfg, name, target, **kwargs):
    with open_dict(cfg):
        cfg.callbacks[name] = {"_target_": f"{__name__}.{target}", **kwargs}
    return cfg


def test_interrupted_run_resumes_step_optimizer_and_schedule(tmp_path):
    overrides = ["model=taid", "scale=2", "logger=csv", "trainer.max_steps=6", "trainer.val_check_interval=2",
                 "test=false", "trainer.enable_progress_bar=false", "optimizer.lr=1e-3"]
    cfg = _with_callback(compose_run(overrides, tmp_path / "a"), "interrupt", "_Interrupt", at_step=5)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        train(cfg)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == 4
    assert saved["taid_car_train_seconds"] > 0

    cfg = compose_run([*overrides, f"ckpt_path={last}"], tmp_path / "b")
    outcome = train(_with_callback(cfg, "start", "_StartStep"))
    trainer = outcome["trainer"]
    assert next(c for c in trainer.callbacks if isinstance(c, _StartStep)).start_step == 4
    assert trainer.global_step == 6
    # the run's training time is the first process's (to its checkpoint) plus this one's
    assert outcome["model"].train_seconds_before_resume == saved["taid_car_train_seconds"]
    assert outcome["train_seconds"] > saved["taid_car_train_seconds"]
    optimizer = trainer.optimizers[0]
    adam_steps = {int(state["step"]) for state in optimizer.state.values()}
    assert adam_steps == {6}  # the optimiser state was restored, then stepped twice more
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 6
    expected = 1e-6 + (1e-3 - 1e-6) * (1 + math.cos(math.pi * 6 / 6)) / 2  # cosine, T_max = 6
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_wandb_offline_run_records_its_id_for_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = ["model=bicubic", "scale=2", "logger=wandb", "trainer.max_steps=2", "trainer.val_check_interval=2",
                 "trainer.enable_progress_bar=false", "callbacks.panels.every_n_steps=1"]
    outcome = train(compose_run(overrides, tmp_path))
    import wandb

    run_id = wandb.run.id
    wandb.finish()
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert sorted(p.name for p in (tmp_path / "panels").glob("*.png"))  # panels saved beside W&B's
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["taid_car_wandb_id"] == run_id
    assert outcome["results"][0].set_name == "sample"

    from taid_car.run import prepare_resume

    last = tmp_path / "checkpoints" / "last.ckpt"
    cfg = compose_run([*overrides, f"ckpt_path={last}"], tmp_path)  # resuming the run in its own directory
    prepare_resume(cfg)
    assert cfg.logger.wandb.id == run_id and cfg.logger.wandb.resume == "allow"
    assert "resumed_from" not in cfg


def test_a_new_run_directory_started_from_a_checkpoint_is_a_new_wandb_run(tmp_path):
    """Branching from another run's checkpoint: a new W&B id (syncing both never merges them),
    and the source named in the config (``resumed_from``)."""
    from taid_car.run import prepare_resume

    ckpt = tmp_path / "old" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    config = OmegaConf.to_container(compose_run(["model=bicubic", "scale=2"], tmp_path / "old"), resolve=True)
    torch.save({"state_dict": {}, "taid_car_config": config, "taid_car_wandb_id": "oldrun42"}, ckpt)
    cfg = compose_run(["model=bicubic", "scale=2", "logger=wandb", f"ckpt_path={ckpt}"], tmp_path / "new")
    prepare_resume(cfg)
    assert cfg.logger.wandb.id is None and cfg.resumed_from == str(ckpt.resolve())


def test_sweep_group_is_shared_in_multirun_only(tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from taid_car.config import sweep_group

    cfg = compose_run(["model=car"], tmp_path)
    assert sweep_group() is None  # composed as a single run
    from omegaconf import read_write

    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.mode = RunMode.MULTIRUN
        hydra_cfg.sweep.dir = str(tmp_path / "multirun" / "2026-01-01_00-00-00")
    assert sweep_group() == "sweep-2026-01-01_00-00-00"
    assert cfg.model.name == "car"


def _run_cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "taid_car.run", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_multirun_failed_job_does_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    # job 0 fails after W&B started (its test set is missing), job 1 is fine
    proc = _run_cli(["-m", "model=bicubic", "scale=2", "data.test_sets.sample='/nowhere/set','builtin:test'",
                     "trainer.max_steps=1", "trainer.val_check_interval=1", "trainer.enable_progress_bar=false",
                     f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"], cwd=tmp_path)
    # the sweep goes on, then lists the failed job with its reason and exits non-zero
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = proc.stderr.strip().splitlines()[-2:]
    assert summary[0] == f"sweep {sweep}: 1 of 2 job(s) failed:", summary
    assert summary[1].startswith("  0: MissingFolderError: /nowhere/set: image folder does not exist"), summary
    failed, succeeded = sweep / "0", sweep / "1"
    assert "/nowhere/set" in (failed / "failed.txt").read_text()
    assert not (failed / "results.json").exists()
    assert json.loads((succeeded / "results.json").read_text())[0]["method"] == "bicubic & edsr_tiny"
    # each job has its own offline W&B run: the failed one was finished before the next began
    runs = [p.name.rsplit("-", 1)[-1] for p in sweep.glob("*/wandb/offline-run-*")]
    assert len(runs) == 2 and len(set(runs)) == 2


@pytest.mark.slow
def test_ddp_on_cpu_two_processes_one_output_directory(tmp_path):
    out = tmp_path / "ddp"
    proc = _run_cli(["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.devices=2",
                     "model=bicubic", "scale=2", "logger=csv", "trainer.max_steps=2", "trainer.val_check_interval=2",
                     "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # rank 1 wrote nowhere else
    result = json.loads((out / "results.json").read_text())[0]
    assert result["images"] == 4  # each sample test image scored once across the two ranks

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from taid_car.config import CONFIG_DIR
    from taid_car.evaluate import run_evaluation

    best = next((out / "checkpoints").glob("step*.ckpt"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        eval_cfg = compose(config_name="evaluate", overrides=[f"ckpt_path={best}", "progress=false"])
    single = run_evaluation(eval_cfg)[0]
    assert result["psnr_y"] == pytest.approx(single.psnr_y, abs=1e-4)  # reduced across ranks
    assert result["ssim_y"] == pytest.approx(single.ssim_y, abs=1e-5)


@pytest.mark.slow
def test_the_main_job_output_is_the_suites_own(tmp_path):
    """No W&B image-size warning (panels of one size per key), no litlogger tip, no W&B
    deprecation warning, no pytree deprecation warning: only the suite's table and lines."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("WANDB_SILENT", None)
    res = subprocess.run(
        [sys.executable, "-m", "taid_car.run", "model=bicubic", "scale=2", "trainer.max_steps=2",
         "trainer.val_check_interval=2", "baseline=false", "callbacks.panels.every_n_steps=1",
         "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}/run"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    for noise in ("Images sizes do not match", "litlogger", "LeafSpec", "anonymous setting",
                  "GPU available", "Test metric"):
        assert noise not in out, noise
    assert "bicubic & edsr_tiny" in out and "W&B run" in out
