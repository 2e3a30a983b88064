"""Mistakes around checkpoints and training images end ``run`` / ``evaluate`` with one line naming
the file or key and what to do (exit 2), never a traceback; a checkpoint that cannot be written
says why (no space, a file-size limit) instead of torch's internal writer error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
QUICK = ["model=bicubic", "scale=2", "trainer.max_steps=2", "trainer.val_check_interval=2", "logger=none",
         "test=false", "baseline=false", "callbacks.panels=null", "trainer.enable_progress_bar=false"]


def _cli(module: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300, check=False)


def _error_line(result: subprocess.CompletedProcess, prog: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"{prog}: error: "), result.stderr[-3000:]
    return lines[-1]


def _images(folder: Path, count: int = 2, broken: bool = False) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        if broken:
            (folder / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        else:
            Image.new("RGB", (64, 64), (30 * i, 90, 160)).save(folder / f"img{i}.png")
    return folder


@pytest.mark.slow
def test_checkpoint_mistakes_are_one_line(tmp_path):
    """A missing ckpt_path, ckpt_path=last with nothing to load, evaluate on a torch file that is
    not the suite's, and an upscaler.init_from of another scale."""
    missing = tmp_path / "nope.ckpt"
    line = _error_line(_cli("taid_car.run", [*QUICK, f"ckpt_path={missing}", f"hydra.run.dir={tmp_path / 'a'}"]),
                       "taid_car.run")
    assert f"checkpoint {missing} does not exist" in line

    line = _error_line(_cli("taid_car.run", [*QUICK, "ckpt_path=last", f"hydra.run.dir={tmp_path / 'b'}"]),
                       "taid_car.run")
    assert "ckpt_path=last: no checkpoint to resume from in" in line and "no *.ckpt files" in line

    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.ones(3)}, foreign)
    line = _error_line(_cli("taid_car.evaluate", [f"ckpt_path={foreign}", f"hydra.run.dir={tmp_path / 'c'}"]),
                       "taid_car.evaluate")
    assert f"{foreign}: not a taid_car checkpoint (no 'taid_car_config' entry)" in line

    x2 = tmp_path / "x2"
    trained = _cli("taid_car.run", [*QUICK, f"hydra.run.dir={x2}"])
    assert trained.returncode == 0, trained.stderr[-3000:]
    line = _error_line(_cli("taid_car.run", [*QUICK, "scale=4", f"upscaler.init_from={x2}/checkpoints/last.ckpt",
                                             f"hydra.run.dir={tmp_path / 'd'}"]), "taid_car.run")
    assert "that checkpoint was trained with upscaler=edsr_tiny scale=2; this run is upscaler=edsr_tiny scale=4" in line


@pytest.mark.slow
def test_training_image_mistakes_are_one_line(tmp_path):
    """``data.on_error=skip`` with every image unreadable, and a misspelt ``on_error``."""
    bad = _images(tmp_path / "bad", broken=True)
    data = ["data=folder", f"data.train={bad}", "~data.val_sets", f"+data.val_sets={{v: {_images(tmp_path / 'val', 1)}}}"]
    line = _error_line(_cli("taid_car.run", [*QUICK, *data, "data.on_error=skip", f"hydra.run.dir={tmp_path / 'a'}"]),
                       "taid_car.run")
    assert f"{bad}: no training image left: all 2 cannot be read (bad0.png (" in line
    line = _error_line(_cli("taid_car.run", [*QUICK, *data, "data.on_error=ignore", f"hydra.run.dir={tmp_path / 'b'}"]),
                       "taid_car.run")
    assert "data.on_error='ignore': must be one of raise, skip" in line


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_says_why(tmp_path):
    """A file-size limit (as a full disk would) during a save: the error names the file and the
    system's reason, the previous checkpoint stays, no temporary file is left."""
    script = textwrap.dedent(f"""
        import resource, torch
        from pathlib import Path
        from taid_car.training.checkpoints import save_atomically
        target = Path({str(tmp_path)!r}) / "last.ckpt"
        save_atomically({{"state_dict": {{"w": torch.ones(4)}}}}, target)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            save_atomically({{"state_dict": {{"w": torch.ones(200_000)}}}}, target)
        except Exception as err:
            print(type(err).__name__, err)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.startswith(f"CheckpointWriteError could not write checkpoint {tmp_path / 'last.ckpt'}: File too large"), out
    assert "inline_container" not in out and "resume with ckpt_path=last" in out
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]["w"].numel() == 4
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_write_error_is_a_user_error_for_the_cli():
    from taid_car.errors import user_error
    from taid_car.training.checkpoints import CheckpointWriteError, _write_error

    err = _write_error(Path("run/checkpoints/last.ckpt"), OSError(28, "No space left on device"))
    assert isinstance(err, CheckpointWriteError) and user_error(RuntimeError("wrapped").with_traceback(None)) is None
    assert str(err).startswith("could not write checkpoint run/checkpoints/last.ckpt: No space left on device (errno 28)")
