"""Every numeric setting of a run is checked at start: one line naming the key, before Lightning or
torch sees the value (issue 31: ``trainer.max_steps=-1`` trained 1000 epochs at lr 1e-6;
``data.batch_size=0`` and ``optimizer.lr=-1`` gave 47-line tracebacks; ``model=irn scale=3`` gave
Hydra's 5-line form)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import compose_run, model_configs
from taid_car.errors import UsageError
from taid_car.settings import RUN_RULES, SettingError, check_settings

ROOT = Path(__file__).parents[1]

#: (override, the key the error must name); every one was a traceback or a silent misrun before
BAD = [
    ("trainer.max_steps=-1", "trainer.max_steps=-1"),
    ("trainer.max_steps=0", "trainer.max_steps=0"),
    ("data.batch_size=0", "data.batch_size=0"),
    ("data.batch_size=2.5", "data.batch_size=2.5"),
    ("optimizer.lr=-1", "optimizer.lr=-1"),
    ("optimizer.lr=nan", "optimizer.lr=nan"),
    ("optimizer.lr=0", "optimizer.lr=0"),
    ("optimizer.betas=[0.9,1.5]", "optimizer.betas=[0.9, 1.5]"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval=0"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0"),
    ("trainer.devices=0", "trainer.devices=0"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1"),
    ("data.lr_patch_size=0", "data.lr_patch_size=0"),
    ("data.repeats=0", "data.repeats=0"),
    ("data.num_workers=-1", "data.num_workers=-1"),
    ("scheduler.T_max=0", "scheduler.T_max=0"),
    ("scheduler.eta_min=-1e-6", "scheduler.eta_min=-1e-06"),
    ("model.loss_weights.l1=-1", "model.loss_weights.l1=-1"),
    ("model.loss_weights.offset_tv=inf", "model.loss_weights.offset_tv=inf"),
    ("model.pretrain_steps=-5", "model.pretrain_steps=-5"),
    ("model.downscaler_lr_scale=-0.1", "model.downscaler_lr_scale=-0.1"),
    ("callbacks.panels.every_n_steps=0", "callbacks.panels.every_n_steps=0"),
    ("callbacks.checkpoint.save_top_k=-2", "callbacks.checkpoint.save_top_k=-2"),
    ("seed=-1", "seed=-1"),
]


@pytest.mark.parametrize(("override", "named"), BAD)
def test_out_of_range_setting_is_named(tmp_path, override, named):
    cfg = compose_run(["model=car", override], tmp_path)
    with pytest.raises(SettingError) as caught:
        check_settings(cfg)
    assert str(caught.value).startswith(named + ":"), str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, UsageError)  # exit status 2 through errors.reported


SHIPPED = [[f"model={m}"] for m in model_configs()] + [
    ["model=car", extra] for extra in ("experiment=cpu_study", "experiment=car_paper", "experiment=irn_paper",
                                       "experiment=color_study", "debug=overfit", "debug=fast_dev_run",
                                       "scheduler=multistep", "scheduler=none", "trainer=ddp")]


@pytest.mark.parametrize("overrides", SHIPPED, ids=" ".join)
def test_every_shipped_configuration_passes(tmp_path, overrides):
    """No false alarm: every model, and every experiment, debug, schedule and trainer preset the
    suite ships, is within range."""
    check_settings(compose_run(overrides, tmp_path))


def test_missing_keys_are_not_checked(tmp_path):
    """A key the composed config lacks (no scheduler, no panels) is not an error."""
    cfg = compose_run(["scheduler=none", "callbacks.panels=null", "logger=none"], tmp_path)
    check_settings(cfg)


def test_rules_name_keys_that_exist(tmp_path):
    """Each rule's key is a key of some shipped configuration (a typo would never fire)."""
    from omegaconf import OmegaConf

    configs = [compose_run(o, tmp_path) for o in (["model=car"], ["scheduler=multistep"], ["model=irn"],
                                                  ["trainer=ddp"], ["experiment=irn_paper"])]
    for rule in RUN_RULES:
        if rule.key in ("trainer.max_epochs", "trainer.num_nodes", "trainer.accumulate_grad_batches",
                        "optimizer.weight_decay", "data.holdout"):
            continue  # Lightning's / torch's own keys, not in the shipped files; checked when given
        assert any(OmegaConf.select(c, rule.key, default="__missing__") != "__missing__" for c in configs), rule.key


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "taid_car.run", *args, "logger=none"], cwd=ROOT,
                          env={**env, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"},
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
@pytest.mark.parametrize(("args", "expected"), [
    (["trainer.max_steps=-1"], "taid_car.run: error: trainer.max_steps=-1: the number of training steps"),
    (["data.batch_size=0"], "taid_car.run: error: data.batch_size=0: the training batch size"),
    (["optimizer.lr=-1"], "taid_car.run: error: optimizer.lr=-1: the learning rate"),
    (["model=irn", "scale=3"], "taid_car.run: error: scale=3: IRN works at powers of two"),
])
def test_cli_says_one_line_and_exits_2(tmp_path, args, expected):
    result = _run([*args, f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Error executing job" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(expected), result.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training
