"""Every phase under DDP: pretraining, the run, its baseline and each test are fits/tests of their
own that every rank runs on the same decisions (CPU, gloo, two ranks); a sweep's ranks step
through the same jobs in one sweep folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from taid_car.config import CONFIG_DIR
from taid_car.errors import ConfigError
from taid_car.run import refuse_other_world_size
from taid_car.rundir import SWEEP_JOB_ENV, RunDirGuard, runs_this_sweep_job

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.devices=2"]
SHORT = ["scale=2", "logger=csv", "trainer.max_steps=2", "trainer.val_check_interval=2",
         "trainer.enable_progress_bar=false"]


@pytest.fixture(autouse=True)
def _no_hydra_runtime_left():
    """Tests here set Hydra's runtime config (a sweep's job); none is left for the next module."""
    yield
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env.pop(SWEEP_JOB_ENV, None)
    return subprocess.run([sys.executable, "-m", "taid_car.run", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _evaluate_best(run_dir: Path):
    """The run's best checkpoint scored by ``evaluate`` in this one process (HR crops of 8, as CAR's)."""
    best = next((run_dir / "checkpoints").glob("step*.ckpt"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"ckpt_path={best}", "progress=false", "data.modcrop=8"])
    from taid_car.evaluate import run_evaluation

    return run_evaluation(cfg)[0]


@pytest.mark.slow
def test_pretraining_run_baseline_and_tests_all_run_under_ddp(tmp_path):
    out = tmp_path / "run"
    proc = _run_cli([*DDP, *SHORT, "model=car", "model.pretrain_steps=2", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # rank 1 wrote nowhere else

    # the pretraining ran (two ranks) and both the run and its baseline started from it
    pretrained = out / "pretrain" / "checkpoints" / "last.ckpt"
    assert torch.load(pretrained, weights_only=False)["global_step"] == 2
    for folder in (out, out / "baseline"):
        config = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["taid_car_config"]
        assert Path(config["upscaler"]["init_from"]) == pretrained

    summary = json.loads((out / "run.json").read_text())
    assert summary["pretrain_steps"] == 2
    assert summary["baseline"]["method"] == "bicubic & edsr_tiny"
    assert summary["baseline"]["global_step"] == 2
    assert set(summary["baseline"]["per_set"]) == {"sample"}
    markdown = (out / "results.md").read_text()
    assert "Baseline, bicubic + the same upscaler on the same schedule" in markdown
    gain = [line for line in markdown.splitlines() if line.startswith("- sample x2: car & edsr_tiny")]
    assert len(gain) == 1 and "vs bicubic & edsr_tiny" in gain[0]
    assert proc.stdout.count("sample x2: car & edsr_tiny") == 1  # printed by rank 0 only

    # each test image scored once across the ranks, and the means are those of one process
    for folder in (out, out / "baseline"):
        row = json.loads((folder / "results.json").read_text())[0]
        assert row["images"] == 4
        single = _evaluate_best(folder)
        assert row["psnr_y"] == pytest.approx(single.psnr_y, abs=1e-4)
        assert row["ssim_y"] == pytest.approx(single.ssim_y, abs=1e-5)


@pytest.mark.slow
def test_a_ddp_sweep_runs_every_job_in_one_sweep_folder(tmp_path):
    proc = _run_cli(["-m", "model=car,bicubic", *DDP, *SHORT], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multirun"]
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps  # rank 1's sweep wrote into rank 0's folder
    sweep = sweeps[0]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0_car_x2", "1_bicubic_x2"]
    for job, method in (("0_car_x2", "car & edsr_tiny"), ("1_bicubic_x2", "bicubic & edsr_tiny")):
        row = json.loads((sweep / job / "results.json").read_text())[0]
        assert (row["method"], row["images"]) == (method, 4)
        assert json.loads((sweep / job / "run.json").read_text())["global_step"] == 2
    record = OmegaConf.load(sweep / "multirun.yaml")  # the sweep's own, not rank 1's launch overrides
    assert record.hydra.job.name == "run" and record.hydra.output_subdir == ".hydra"
    assert proc.stderr.count("2 job(s), none failed") == 1


def _sweep_job(tmp_path: Path, num: int, mode: RunMode = RunMode.MULTIRUN):
    """Hydra's runtime config of job ``num`` of a sweep into ``<tmp_path>/sweep`` (``mode``: RUN for a single run)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=bicubic"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = mode
        cfg.hydra.job.num = num
        cfg.hydra.sweep.dir = str(tmp_path / "sweep")
        cfg.hydra.runtime.output_dir = str(tmp_path / "sweep" / str(num))
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_a_sweeps_main_process_pins_its_ranks_to_its_folder_and_job(tmp_path, monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", SWEEP_JOB_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["taid_car.run", "-m", "model=car,bicubic"])
    for num in (0, 1):
        _sweep_job(tmp_path, num)
        assert runs_this_sweep_job()
        assert os.environ[SWEEP_JOB_ENV] == str(num)
    assert sys.argv[3:] == [f'hydra.sweep.dir="{tmp_path / "sweep"}"']  # once

    # a rank started at job 1 skips job 0 (its rank 0 ran it alone) and changes nothing
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(sys, "argv", ["taid_car.run", "-m", "model=car,bicubic"])
    _sweep_job(tmp_path, 0)
    assert not runs_this_sweep_job()
    _sweep_job(tmp_path, 1)
    assert runs_this_sweep_job()
    assert sys.argv == ["taid_car.run", "-m", "model=car,bicubic"] and os.environ[SWEEP_JOB_ENV] == "1"


def test_outside_a_sweep_every_process_runs_and_nothing_is_pinned(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["taid_car.run"])
    monkeypatch.delenv(SWEEP_JOB_ENV, raising=False)
    HydraConfig.instance().cfg = None
    assert runs_this_sweep_job()
    _sweep_job(tmp_path, 3, RunMode.RUN)
    assert runs_this_sweep_job()
    assert sys.argv == ["taid_car.run"] and SWEEP_JOB_ENV not in os.environ


def test_the_sweep_record_is_put_back_after_a_rank_rewrote_it(tmp_path, monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(name, raising=False)
    cfg = _sweep_job(tmp_path, 0)
    record = tmp_path / "sweep" / "multirun.yaml"
    record.parent.mkdir()
    record.write_text("hydra:\n  job:\n    name: run\n")
    guard = RunDirGuard()
    guard.on_job_start(cfg)
    record.write_text("hydra:\n  job:\n    name: train_ddp_process_1\n")  # rank 1's sweep started
    guard.on_job_end(cfg)
    assert record.read_text() == "hydra:\n  job:\n    name: run\n"


def test_a_later_sweep_job_on_another_number_of_processes_is_refused(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        one = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
        refuse_other_world_size(one)  # the same world: nothing to say
        two = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False)
        with pytest.raises(ConfigError, match=r"^trainer: this job runs 2 process\(es\), but an earlier job"):
            refuse_other_world_size(two)
    finally:
        torch.distributed.destroy_process_group()
