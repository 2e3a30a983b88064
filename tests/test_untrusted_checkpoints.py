"""A checkpoint file never runs code: not through pickle (every reader uses ``weights_only=True``)
and not through its saved config (only the suite's own modules are instantiated from it).

Each hostile file goes to ``evaluate ckpt_path=``, ``rescale downscale --ckpt``, ``run
ckpt_path=<file>`` / ``ckpt_path=last`` and ``upscaler.init_from=``: the marker file the payload
would create never appears, and each command ends with one error line and exit status 2.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taid_car.models.checkpoints import CheckpointError
from taid_car.models.trained import check_targets, load_pair


class _Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickle_payload(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "taid_car_config": {"model": {}}, "extra": _Payload(marker)}, path)
    return path


def _config_payload(path: Path, marker: Path) -> Path:
    """A ``weights_only``-safe checkpoint whose saved config would ``Path.touch`` the marker."""
    from omegaconf import OmegaConf

    from helpers import compose_run

    config = OmegaConf.to_container(compose_run(["model=bicubic", "scale=2"], path.parent / "cfg"), resolve=True)
    config["model"]["downscaler"] = {"_target_": "pathlib.Path.touch", "_args_": [str(marker)]}
    torch.save({"state_dict": {}, "taid_car_config": config}, path)
    return path


PAYLOADS = {"pickle": _pickle_payload, "config": _config_payload}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def _one_error_line(result: subprocess.CompletedProcess, prog: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert lines and lines[-1].startswith(f"{prog}: error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[-1]


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
@pytest.mark.slow
def test_a_hostile_checkpoint_runs_nothing_in_any_command(tmp_path, kind):
    marker = tmp_path / "marker"
    ckpt = PAYLOADS[kind](tmp_path / "evil.ckpt", marker)
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), (120, 60, 30)).save(images / "a.png")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(ckpt.read_bytes())
    quick = ["model=bicubic", "scale=2", "trainer.max_steps=2", "logger=none", "test=false", "baseline=false",
             "callbacks.panels=null", "trainer.enable_progress_bar=false"]
    commands = {
        "taid_car.evaluate": ["-m", "taid_car.evaluate", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"],
        "rescale": ["-m", "taid_car.rescale", "downscale", "--ckpt", str(ckpt), "--input", str(images),
                             "--output", str(tmp_path / "lr")],
        "taid_car.run": ["-m", "taid_car.run", *quick, "ckpt_path=last", f"hydra.run.dir={run_dir}"],
    }
    if kind == "pickle":  # the config payload is not instantiated by these two: pickle is what they could run
        commands["taid_car.run "] = ["-m", "taid_car.run", *quick, f"ckpt_path={ckpt}",
                                     f"hydra.run.dir={tmp_path / 'run2'}"]
        commands["taid_car.run  "] = ["-m", "taid_car.run", *quick, f"upscaler.init_from={ckpt}",
                                      f"hydra.run.dir={tmp_path / 'run3'}"]
    for prog, args in commands.items():
        line = _one_error_line(_run(args, Path(__file__).parents[1]), prog.strip())
        assert not marker.exists(), f"{prog}: the payload ran"
        assert "evil.ckpt" in line or "last.ckpt" in line, line


def test_pickled_objects_are_refused_in_process(tmp_path):
    marker = tmp_path / "marker"
    ckpt = _pickle_payload(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match=r"evil.ckpt: not a readable checkpoint \(.*system"):
        load_pair(ckpt)
    assert not marker.exists()
    assert pickle.dumps(_Payload(marker))  # the payload itself is a valid pickle


@pytest.mark.parametrize("target", [
    "pathlib.Path.touch", "builtins.open", "os.system", "taid_car.models.car.torch.load",
    "taid_car.models.car.os.system", "taid_car.training.checkpoints.save_atomically", "taid_car.nothing.Here", 7,
])
def test_only_the_suites_modules_may_be_built_from_a_saved_config(target):
    with pytest.raises(CheckpointError, match="is not one of the suite's modules"):
        check_targets({"net": {"_target_": target}}, "evil.ckpt: saved config")
    with pytest.raises(CheckpointError, match="is not one of the suite's modules"):  # at any depth
        check_targets({"_target_": "taid_car.models.car.CARDownscaler", "inner": [{"_target_": target}]}, "x")


def test_the_suites_own_targets_pass():
    check_targets({"_target_": "taid_car.models.car.CARDownscaler", "scale": 2}, "x")
    check_targets({"_target_": "taid_car.models.edsr.build_edsr", "preset": "tiny"}, "x")
    check_targets({"_target_": "taid_car.models.BicubicDownscaler"}, "x")
