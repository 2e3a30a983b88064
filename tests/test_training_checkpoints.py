"""Checkpoints survive a kill mid-save, and ``ckpt_path=last`` resumes from the newest readable one."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from taid_car.training import checkpoints
from taid_car.training.checkpoints import AtomicCheckpointIO, latest_checkpoint, save_atomically

HERE = Path(__file__).resolve().parent


def test_save_goes_through_a_temporary_file_beside_the_target(tmp_path, monkeypatch):
    """Whatever TMPDIR is (another device on clusters), the rename stays in the run folder."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(other))
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(checkpoints.os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    assert torch.load(target, weights_only=True)["state_dict"]["w"].sum() == 3
    (src, dst), = renames
    assert Path(src).parent == Path(dst).parent == target.parent
    assert not list(other.iterdir()) and [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    save_atomically({"state_dict": {"step": 1}}, target)

    def broken(obj, f, *args, **kwargs):
        f.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_atomically({"state_dict": {"step": 2}}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["state_dict"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_latest_checkpoint_skips_unreadable_ones_and_says_so(tmp_path, caplog):
    good = tmp_path / "step2.ckpt"
    save_atomically({"state_dict": {}}, good)
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    os.utime(bad, (good.stat().st_mtime + 10,) * 2)
    with caplog.at_level("INFO"):
        assert latest_checkpoint(tmp_path) == good
    assert "skipped" in caplog.text and "last.ckpt" in caplog.text and "resuming from" in caplog.text
    with pytest.raises(FileNotFoundError, match=r"no readable checkpoint in .*last.ckpt \("):
        good.unlink()
        latest_checkpoint(tmp_path)


def test_a_run_killed_while_saving_resumes_with_ckpt_path_last(tmp_path):
    """A real run SIGKILLed in the middle of its third checkpoint write (step 4's ``last.ckpt``
    after step 2's best and last): ``last.ckpt`` still loads, and ``ckpt_path=last`` finishes it."""
    run_dir = tmp_path / "run"
    overrides = ["model=bicubic", "scale=2", "trainer.max_steps=4", "trainer.val_check_interval=2",
                 "logger=none", "test=false", "baseline=false", "callbacks.panels=null",
                 "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "KILL_AT_SAVE": "3", "PYTHONPATH": str(HERE)}
    killed = subprocess.run([sys.executable, str(HERE / "_kill_during_save.py"), *overrides], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2
    resumed = subprocess.run([sys.executable, "-m", "taid_car.run", *overrides, "ckpt_path=last"],
                             env={**os.environ, "PYTHONPATH": ""}, capture_output=True, text=True,
                             timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4
