"""Results come first (issue 31): ``results.*`` and ``run.json`` are written before any logger
extra that can fail, a logger that fails after training costs a warning, and where W&B cannot
write its folders (a read-only ``HOME``) the run says so at start. A run with a read-only HOME
trained and tested, then crashed in W&B's artifact staging before its results were written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taid_car.training.loggers import WANDB_FOLDERS, prepare_wandb_folders

ROOT = Path(__file__).parents[1]


@pytest.fixture
def unwritable_home(tmp_path, monkeypatch):
    """HOME is a file: nothing can be created under it, whoever runs the test (root included)."""
    home = tmp_path / "home_is_a_file"
    home.write_text("")
    monkeypatch.setenv("HOME", str(home))
    for variable in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", *(v for v, _ in WANDB_FOLDERS)):
        monkeypatch.delenv(variable, raising=False)
    return home


def test_wandb_folders_under_a_read_only_home_move_into_the_run(tmp_path, unwritable_home, caplog):
    said = prepare_wandb_folders(tmp_path / "run")
    assert len(said) == 3 and all("is HOME read-only?" in line for line in said)
    for variable, _ in WANDB_FOLDERS:
        moved = Path(os.environ[variable])
        assert moved.parent == tmp_path / "run" / "wandb" and moved.is_dir()
    assert prepare_wandb_folders(tmp_path / "run") == []  # said once: now they can be written


def test_a_folder_the_user_chose_is_kept_and_said(tmp_path, unwritable_home, monkeypatch):
    chosen = unwritable_home / "data"  # under a file: cannot be created
    monkeypatch.setenv("WANDB_DATA_DIR", str(chosen))
    said = prepare_wandb_folders(tmp_path / "run")
    assert any(line.startswith(f"W&B cannot write its staging files (tables, artifacts) in {chosen} (WANDB_DATA_DIR")
               and "the results files do not depend on them" in line for line in said)
    assert os.environ["WANDB_DATA_DIR"] == str(chosen)


def test_writable_folders_are_left_alone(tmp_path, monkeypatch):
    for variable, _ in WANDB_FOLDERS:
        monkeypatch.setenv(variable, str(tmp_path / variable))
    assert prepare_wandb_folders(tmp_path / "run") == []


@pytest.mark.slow
@pytest.mark.parametrize("data_dir", ["unset", "unwritable"])
def test_a_run_with_a_read_only_home_keeps_its_results(tmp_path, data_dir):
    """HOME unwritable: W&B's folders move into the run and everything is logged. WANDB_DATA_DIR
    set to a folder W&B cannot write: the results table fails in W&B, with a warning; the
    results files and run.json are written and the run exits 0."""
    home = tmp_path / "home_is_a_file"
    home.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "XDG_")) and k != "HYDRA_FULL_ERROR"}
    env |= {"HOME": str(home), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    if data_dir == "unwritable":
        env["WANDB_DATA_DIR"] = str(home / "wandb_data")
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "taid_car.run", "model=bicubic", "scale=2", "trainer.max_steps=2",
                             "trainer.val_check_interval=2", "callbacks.panels=null", "trainer.enable_progress_bar=false",
                             f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said[-3000:]
    assert (run_dir / "results.json").is_file() and (run_dir / "run.json").is_file()
    assert "W&B cannot write its staging files" in said
    if data_dir == "unwritable":
        assert "W&B could not log the results table" in said
    else:
        assert (run_dir / "wandb" / "data").is_dir() and "W&B could not log" not in said
