"""Checkpoints survive a kill mid-save, and ``ckpt_path=last`` resumes from the newest readable one."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from taid_car.models.checkpoints import CheckpointError, load_authors_checkpoint, read_checkpoint_file
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
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))
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
    save_atomically({"state_dict": {"w": torch.ones(2)}, "taid_car_config": {"model": {}}}, good)
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    diverged = tmp_path / "step4.ckpt"  # written by hand: the suite refuses to save it
    torch.save({"state_dict": {"w": torch.tensor([1.0, float("nan")])}, "taid_car_config": {"model": {}}}, diverged)
    foreign = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, foreign)
    for offset, path in ((10, bad), (20, diverged), (30, foreign)):
        os.utime(path, (good.stat().st_mtime + offset,) * 2)
    with caplog.at_level("INFO"):
        assert latest_checkpoint(tmp_path) == good
    assert "skipped" in caplog.text and "last.ckpt" in caplog.text and "resuming from" in caplog.text
    assert "step4.ckpt (non-finite weights (w))" in caplog.text
    assert "other.ckpt (not a taid_car checkpoint" in caplog.text
    with pytest.raises(FileNotFoundError, match=r"no checkpoint to resume from in .*last.ckpt \("):
        good.unlink()
        latest_checkpoint(tmp_path)


def _short_run(run_dir: Path, steps: int, val_every: int) -> list[str]:
    """Overrides of a quick bicubic x2 training run into ``run_dir`` (no logger, test or baseline)."""
    return ["model=bicubic", "scale=2", f"trainer.max_steps={steps}", f"trainer.val_check_interval={val_every}",
            "logger=none", "test=false", "baseline=false", "callbacks.panels=null",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]


def _run(script: list[str], overrides: list[str], **env: str) -> subprocess.CompletedProcess:
    """``python <script> <overrides>`` (a helper script beside the tests, or ``-m taid_car.run``)."""
    return subprocess.run([sys.executable, *script, *overrides], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_a_run_killed_while_saving_resumes_with_ckpt_path_last(tmp_path):
    """A real run SIGKILLed in the middle of its third checkpoint write (step 4's ``last.ckpt``
    after step 2's best and last): ``last.ckpt`` still loads, and ``ckpt_path=last`` finishes it."""
    run_dir = tmp_path / "run"
    overrides = _short_run(run_dir, steps=4, val_every=2)
    killed = _run([str(HERE / "_kill_during_save.py")], overrides, KILL_AT_SAVE="3", PYTHONPATH=str(HERE))
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2
    resumed = _run(["-m", "taid_car.run"], [*overrides, "ckpt_path=last"], PYTHONPATH="")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4


# ----------------------------------------------------------------------------- bad checkpoints


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, good)
    files = {"text": tmp_path / "notes.ckpt", "truncated": tmp_path / "cut.ckpt", "random": tmp_path / "noise.ckpt"}
    files["text"].write_text("this is not a checkpoint\n")
    files["truncated"].write_bytes(good.read_bytes()[:200])
    files["random"].write_bytes(bytes(range(256)) * 8)
    return files


def test_a_file_that_is_not_a_checkpoint_gets_one_message(tmp_path):
    """Text, truncated or random bytes: the path, "not a readable checkpoint", the reason in
    brackets; no pickle/zip internals as the message and no advice to unpickle an untrusted file."""
    for kind, path in _bad_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            read_checkpoint_file(path)
        message = str(info.value)
        assert message.startswith(f"{path}: not a readable checkpoint (") and message.endswith(")"), kind
        assert "weights_only=False" not in message and "\n" not in message, kind


def test_every_loader_gives_that_message(tmp_path):
    """The authors' loader (it said "pop from empty list"), a run checkpoint for evaluate /
    rescale / crops, and the ``ckpt_path=last`` scan all report the one reason."""
    from taid_car.models.car import KernelGenerationNet
    from taid_car.models.trained import load_pair

    text = _bad_files(tmp_path)["text"]
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_authors_checkpoint(KernelGenerationNet(2, stem=8, mid=8, n_res_blocks=1, trunk=8), text)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_pair(text)
    only = tmp_path / "only"
    only.mkdir()
    (only / text.name).write_bytes(text.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"notes.ckpt \(not a file written by torch.save"):
        latest_checkpoint(only)


def test_resuming_another_configuration_names_both(tmp_path):
    from omegaconf import OmegaConf

    from helpers import compose_run
    from taid_car.run import config_mismatch, prepare_resume

    theirs = OmegaConf.to_container(compose_run(["model=car", "scale=2"], tmp_path), resolve=True)
    ckpt = tmp_path / "car_x2.ckpt"
    torch.save({"state_dict": {}, "taid_car_config": theirs}, ckpt)
    cfg = compose_run(["model=taid", "scale=4", f"ckpt_path={ckpt}"], tmp_path / "b")
    with pytest.raises(CheckpointError, match=(
            r"this checkpoint was trained with model=car scale=2 upscaler=edsr_tiny; "
            r"this run is model=taid scale=4 upscaler=edsr_tiny\. Resume with model=car scale=2")):
        prepare_resume(cfg)
    ours = OmegaConf.to_container(compose_run(["model=car", "scale=2", "model.downscaler.preset=paper"],
                                              tmp_path / "c"), resolve=True)
    assert "model.downscaler.preset='paper' (checkpoint: 'small')" in config_mismatch(theirs, ours)
    assert config_mismatch(theirs, theirs) is None


@pytest.mark.slow
def test_a_run_interrupted_before_its_first_validation_can_resume(tmp_path):
    """Ctrl-C at step 2 of 8 (validations at 4 and 8): the interrupted state is saved and ``ckpt_path=last``
    continues from step 2 to the end."""
    run_dir = tmp_path / "run"
    overrides = _short_run(run_dir, steps=8, val_every=4)
    stopped = _run([str(HERE / "_interrupt_run.py")], overrides, INTERRUPT_AT_STEP="2", PYTHONPATH=str(HERE))
    saved = run_dir / "checkpoints" / "interrupted.ckpt"
    assert saved.is_file(), stopped.stderr[-3000:]
    said = stopped.stdout + stopped.stderr  # says where the state went and how to resume it
    assert f"interrupted at step 2: saved {saved}; resume with: python -m taid_car.run model=bicubic" in said
    assert f"ckpt_path=last hydra.run.dir={run_dir}" in said
    assert torch.load(saved, map_location="cpu", weights_only=False)["global_step"] == 2
    resumed = _run(["-m", "taid_car.run"], [*overrides, "ckpt_path=last"], PYTHONPATH="")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 8
