"""Non-finite weights are refused by the one checkpoint reader, for every consumer (evaluate,
rescale, crops, ``upscaler.init_from``, ``ckpt_path=last``); ``ckpt_path=last`` skips dangling
links and anything else that is no regular file, saying why; image panels of a validation pass
whose outputs are not finite are skipped with a warning, not a crash."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from helpers import ToyInvertible, compose_evaluate, compose_run, fake_run
from taid_car.models.checkpoints import CheckpointError, CheckpointNotFound, read_checkpoint_file
from taid_car.models.trained import init_upscaler_from, read_run_checkpoint

ROOT = Path(__file__).resolve().parents[1]
#: two poisoned entries, in state-dict order: the error names the first
FIRST_BAD, SECOND_BAD = "downscaler.net.nets.0.head.weight", "upscaler.tail.1.weight"


def pair_checkpoint(path: Path, poisoned: tuple[str, ...] = (), value: float = float("nan")) -> Path:
    """A ``taid_car.run``-style TAID x2 & edsr_tiny checkpoint of a freshly built pair, with
    ``value`` written into one element of each key in ``poisoned``."""
    cfg = compose_run(["model=taid", "upscaler=edsr_tiny", "scale=2"], path.parent / f"{path.stem}_cfg")
    down, up = instantiate(cfg.model.downscaler), instantiate(cfg.upscaler.net)
    state = {f"downscaler.{k}": v for k, v in down.state_dict().items()}
    state |= {f"upscaler.{k}": v for k, v in up.state_dict().items()}
    for key in poisoned:
        state[key] = state[key].clone()
        state[key].view(-1)[0] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"taid_car_config": OmegaConf.to_container(cfg, resolve=True), "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def nan_ckpt(tmp_path_factory) -> Path:
    return pair_checkpoint(tmp_path_factory.mktemp("nan") / "diverged.ckpt", (FIRST_BAD, SECOND_BAD))


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(folder / "a.png")
    return folder


def _refusal(text: str, path: Path) -> None:
    assert f"{path}: non-finite weights ({FIRST_BAD})" in text, text
    assert SECOND_BAD not in text, text


# ------------------------------------------------------------------ the one reader


def test_the_reader_names_the_file_and_the_first_non_finite_key(nan_ckpt, tmp_path):
    assert set(nan_ckpt.parent.glob("*.ckpt")) == {nan_ckpt}
    with pytest.raises(CheckpointError) as info:
        read_run_checkpoint(nan_ckpt)
    _refusal(str(info.value), nan_ckpt)
    assert info.value.reason == f"non-finite weights ({FIRST_BAD})"
    inf = pair_checkpoint(tmp_path / "inf.ckpt", (SECOND_BAD,), float("-inf"))
    with pytest.raises(CheckpointError, match=rf"inf.ckpt: non-finite weights \({SECOND_BAD}\)"):
        read_run_checkpoint(inf)
    finite = pair_checkpoint(tmp_path / "finite.ckpt")
    checkpoint, config = read_run_checkpoint(finite)
    assert config["scale"] == 2 and FIRST_BAD in checkpoint["state_dict"]


# ------------------------------------------------------------------ every consumer


def test_evaluate_refuses_it_with_one_line_and_status_2(nan_ckpt, capsys):
    """The same ``reported`` wrapper as ``python -m taid_car.evaluate``'s main (the slow test
    below runs the command itself)."""
    from taid_car.errors import reported
    from taid_car.evaluate import run_evaluation

    with pytest.raises(SystemExit) as info, reported("taid_car.evaluate"):
        run_evaluation(compose_evaluate([f"ckpt_path={nan_ckpt}"]))
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("taid_car.evaluate: error: "), lines
    _refusal(lines[0], nan_ckpt)


@pytest.mark.slow
def test_the_evaluate_command_refuses_it_and_writes_no_table(nan_ckpt, tmp_path):
    run_dir = tmp_path / "eval"
    result = subprocess.run([sys.executable, "-m", "taid_car.evaluate", f"ckpt_path={nan_ckpt}",
                             f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"},
                            timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("taid_car.evaluate: error: "), result.stderr[-3000:]
    _refusal(errors[0], nan_ckpt)
    assert "Traceback" not in result.stderr and "nan" not in result.stdout.lower()
    assert not list(run_dir.glob("results.*"))


@pytest.mark.parametrize("command", ["roundtrip", "downscale", "upscale"])
def test_rescale_refuses_it_before_writing_anything(nan_ckpt, photos, tmp_path, caplog, command):
    from taid_car.rescale import main as rescale

    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="taid_car.rescale"):
        code = rescale([command, "--ckpt", str(nan_ckpt), "--input", str(photos), "--output", str(out),
                        "--device", "cpu", "--no-progress"])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    _refusal(errors[0], nan_ckpt)
    assert not out.exists()


def test_crops_refuses_the_runs_checkpoint(nan_ckpt, photos, tmp_path, capsys):
    from taid_car.crops import main as crops

    run = fake_run(tmp_path / "runs", "0_taid_x2", "taid & edsr_tiny", 2, {"Set5": (30.0, 0.9, 40.0, 29.0)})
    (run / "checkpoints").mkdir()
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(nan_ckpt.read_bytes())
    out = tmp_path / "figs"
    assert crops([str(run), "--image", str(photos / "a.png"), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    _refusal(err[0], last)
    assert not list(out.glob("*.png"))


def test_upscaler_init_from_refuses_it_and_leaves_the_upscaler_alone(nan_ckpt):
    from taid_car.models.edsr import build_edsr

    upscaler = build_edsr("tiny", scale=2)
    before = {k: v.clone() for k, v in upscaler.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        init_upscaler_from(upscaler, nan_ckpt, "edsr_tiny", 2)
    _refusal(str(info.value), nan_ckpt)
    assert all(torch.equal(before[k], v) for k, v in upscaler.state_dict().items())


def test_resume_refuses_it_through_lightnings_own_restore(nan_ckpt):
    from taid_car.training.checkpoints import AtomicCheckpointIO

    with pytest.raises(CheckpointError) as info:
        AtomicCheckpointIO().load_checkpoint(nan_ckpt)
    _refusal(str(info.value), nan_ckpt)


# ------------------------------------------------------------------ ckpt_path=last


def test_last_skips_dangling_links_folders_and_nan_and_takes_the_newest_good(nan_ckpt, tmp_path, caplog):
    from taid_car.training.checkpoints import latest_checkpoint

    folder = tmp_path / "checkpoints"
    older = pair_checkpoint(folder / "step2.ckpt")
    good = pair_checkpoint(folder / "step4.ckpt")
    diverged = folder / "step6.ckpt"
    diverged.write_bytes(nan_ckpt.read_bytes())
    dangling = folder / "last.ckpt"
    dangling.symlink_to(tmp_path / "gone" / "last.ckpt")
    (tmp_path / "a_folder").mkdir()
    (folder / "linked.ckpt").symlink_to(tmp_path / "a_folder")
    (folder / "plain.ckpt").mkdir()
    t = good.stat().st_mtime
    os.utime(older, (t - 10,) * 2)
    os.utime(diverged, (t + 10,) * 2)
    for name in ("last.ckpt", "linked.ckpt", "plain.ckpt"):  # newer than every good one (the link itself)
        os.utime(folder / name, (t + 20,) * 2, follow_symlinks=False)
    with caplog.at_level(logging.INFO, logger="taid_car.training.checkpoints"):
        assert latest_checkpoint(folder) == good
    text = caplog.text
    assert f"skipped {dangling} (a symlink to {tmp_path / 'gone' / 'last.ckpt'}, which does not exist)" in text
    assert f"skipped {folder / 'linked.ckpt'} (a symlink to {tmp_path / 'a_folder'}, a folder)" in text
    assert f"skipped {folder / 'plain.ckpt'} (a folder)" in text
    assert f"skipped {diverged} (non-finite weights ({FIRST_BAD}))" in text
    assert f"resuming from {good}" in text and str(older) not in text

    for path in (older, good):
        path.unlink()
    with pytest.raises(CheckpointNotFound, match=r"last.ckpt \(a symlink to .*gone/last.ckpt, which does not exist\)"):
        latest_checkpoint(folder)


def test_every_reader_names_a_dangling_link(tmp_path):
    link = tmp_path / "model.ckpt"
    link.symlink_to(tmp_path / "moved.ckpt")
    with pytest.raises(CheckpointNotFound, match=rf"checkpoint {link} is a symlink to .*moved.ckpt, which does not exist"):
        read_checkpoint_file(link)
    loop = tmp_path / "loop.ckpt"
    loop.symlink_to(loop)
    with pytest.raises(CheckpointNotFound, match=r"loop.ckpt is a symlink to .*loop.ckpt, which loops"):
        read_checkpoint_file(loop)
    with pytest.raises(CheckpointNotFound, match=r"checkpoint .*missing.ckpt does not exist$"):
        read_checkpoint_file(tmp_path / "missing.ckpt")


# ------------------------------------------------------------------ image panels


def _panels_pass(tmp_path: Path, gain: float) -> tuple[list[Path], object]:
    """One ``ImagePanels`` validation end at step 7 on a toy pair whose LR is ``avgpool·gain``."""
    from taid_car.training.callbacks import ImagePanels

    sets = {"val": [{"name": "rocket", "hr": torch.rand(3, 16, 16)}, {"name": "coins", "hr": torch.rand(3, 16, 16)}]}
    trainer = SimpleNamespace(global_step=7, sanity_checking=False, is_global_zero=True, loggers=[],
                              datamodule=SimpleNamespace(val_sets=sets, modcrop=2))
    down = ToyInvertible(2)
    with torch.no_grad():
        down.gain.fill_(gain)
    module = SimpleNamespace(scale=2, device=torch.device("cpu"), downscaler=down, upscaler=down.inverse())
    ImagePanels(every_n_steps=1, crop_size=16, output_dir=tmp_path).on_validation_epoch_end(trainer, module)
    return sorted((tmp_path / "panels").glob("*.png")) if (tmp_path / "panels").is_dir() else []


def test_a_panel_whose_outputs_are_not_finite_is_skipped_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="taid_car.training.callbacks"):
        assert _panels_pass(tmp_path / "nan", float("nan")) == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "taid_car.training.callbacks"]
    assert warnings == [f"panels: no panel of {name} at step 7: the model's LR and SR hold NaN or infinite values"
                        for name in ("rocket", "coins")]
    caplog.clear()
    written = _panels_pass(tmp_path / "ok", 1.0)
    assert [p.name for p in written] == ["step000007_coins.png", "step000007_rocket.png"]
    assert not caplog.records


@pytest.mark.slow
def test_skip_mode_with_panels_reaches_its_validation_and_stops_as_diverged(tmp_path):
    """lr 1e3 with on_nonfinite=skip: the outputs are NaN at the step-2 validation; the panels
    skip both images with a warning, then the non-finite validation score stops the run
    (TrainingDiverged: exit 3, one line) instead of a crash in the panels."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "taid_car.run", "model=taid", "scale=2", "optimizer.lr=1e3", "on_nonfinite=skip",
         "trainer.max_steps=4", "trainer.val_check_interval=2", "logger=none", "test=false", "baseline=false",
         "callbacks.panels.every_n_steps=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"},
        capture_output=True, text=True, timeout=300, check=False)
    logged = result.stdout + result.stderr
    assert result.returncode == 3, logged[-3000:]
    assert "Traceback" not in logged and "image holds NaN" not in logged
    assert "panels: no panel of rocket at step 2" in logged and "skipped (on_nonfinite=skip)" in logged
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("taid_car.run: error: training diverged by step 2: validation"), last
    assert "= nan" in last and "on_nonfinite=skip" not in last  # the remedy already in use is not offered
    assert not list(run_dir.glob("panels/*.png")) and not list(run_dir.glob("checkpoints/*.ckpt"))
