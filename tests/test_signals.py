"""Signals tell the truth (issue 31): SIGTERM in any phase ends a command with one line naming the
phase, a resumable checkpoint when training, and exit status 143, as a scheduler expects (it was
0, with no results and no message); Ctrl-C exits 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taid_car import signals

HERE = Path(__file__).parent
ROOT = HERE.parent


def test_sigterm_outside_lightning_stops_at_once_with_143(capsys):
    reached = []
    with pytest.raises(SystemExit) as caught, signals.handled("prog", after="nothing kept"):
        signals.set_phase("reading images")
        os.kill(os.getpid(), signal.SIGTERM)
        reached.append("after the signal")  # never: the handler raises at once
    assert caught.value.code == 143 and not reached
    assert capsys.readouterr().err.strip() == "prog: stopped by SIGTERM while reading images; nothing kept"


def test_ctrl_c_exits_130_whatever_the_body_turned_it_into(capsys):
    """Lightning turns a KeyboardInterrupt into ``sys.exit(1)``: the status is still 130."""
    with pytest.raises(SystemExit) as caught, signals.handled("prog"):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            sys.exit(1)
    assert caught.value.code == 130
    assert capsys.readouterr().err.strip() == "prog: stopped by Ctrl-C (SIGINT) while starting"


def test_a_signal_recorded_inside_another_handler_stops_at_the_next_phase(capsys):
    """Inside a Lightning loop its handler calls ours as the one it found: ours only records, and
    ``stop_if_signalled`` between phases stops the command; status 143 even though the body
    swallowed nothing."""

    def lightning_like(signum, frame):
        previous(signum, frame)

    with pytest.raises(SystemExit) as caught, signals.handled("prog", after=lambda: "resume with: x"):
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lightning_like)
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received() == signal.SIGTERM  # recorded, not raised
        signal.signal(signal.SIGTERM, previous)
        signals.set_phase("testing")
        signals.stop_if_signalled()
    assert caught.value.code == 143
    assert capsys.readouterr().err.strip() == "prog: stopped by SIGTERM while testing; resume with: x"


def test_handlers_are_restored_and_other_errors_pass_through():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(ValueError, match="not a signal"), signals.handled("prog"):
        raise ValueError("not a signal")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert signals.received() is None


def _signal_run(run_dir: Path, at: str, extra: list[str], sig: str = "TERM") -> subprocess.CompletedProcess:
    overrides = ["model=bicubic", "scale=2", "trainer.max_steps=6", "trainer.val_check_interval=3", "logger=none",
                 "callbacks.panels=null", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", *extra]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, str(HERE / "_signal_run.py"), *overrides], cwd=ROOT,
                          env={**env, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "SIGNAL_AT": at,
                               "SEND_SIGNAL": sig, "PYTHONPATH": str(HERE)},
                          capture_output=True, text=True, timeout=300, check=False)


def _last_line(result: subprocess.CompletedProcess) -> str:
    return [line for line in result.stderr.splitlines() if line.strip()][-1]


@pytest.mark.slow
def test_sigterm_during_training_saves_a_resume_point_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    stopped = _signal_run(run_dir, "fit:2", ["test=false", "baseline=false"])
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert _last_line(stopped).startswith("taid_car.run: stopped by SIGTERM while training bicubic & edsr_tiny; "
                                          "resume with: python -m taid_car.run"), stopped.stderr[-3000:]
    saved = run_dir / "checkpoints" / "interrupted.ckpt"
    assert torch.load(saved, map_location="cpu", weights_only=False)["global_step"] == 2
    assert "stopped by SIGTERM at step 2: saved" in stopped.stdout + stopped.stderr
    resumed = subprocess.run([sys.executable, "-m", "taid_car.run", "model=bicubic", "scale=2", "trainer.max_steps=6",
                              "trainer.val_check_interval=3", "logger=none", "callbacks.panels=null", "test=false",
                              "baseline=false", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
                              "ckpt_path=last"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                             capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 6


@pytest.mark.slow
def test_sigterm_during_the_test_phase_exits_143_without_results(tmp_path):
    run_dir = tmp_path / "run"
    stopped = _signal_run(run_dir, "test:0", ["baseline=false"])
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert _last_line(stopped).startswith("taid_car.run: stopped by SIGTERM while testing bicubic & edsr_tiny"), \
        stopped.stderr[-3000:]
    assert not (run_dir / "results.json").exists()  # a partial test is no result


def _resume(run_dir: Path, args: list[str]) -> subprocess.CompletedProcess:
    """Run the command the stop line gave (``resume with: python -m taid_car.run ...``)."""
    assert args[:3] == ["python", "-m", "taid_car.run"], args
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}, check=False)


def _step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.slow
def test_sigterm_in_the_baseline_keeps_the_methods_results_and_the_resume_finishes_it(tmp_path):
    """``model=car``'s own results are written before its baseline starts; SIGTERM in the
    baseline's training stops with 143, the method's results kept; the command the stop line
    gives goes on with the baseline from its step 2 (not from scratch) and writes the gain."""
    import shlex

    run_dir = tmp_path / "run"
    stopped = _signal_run(run_dir, "baseline:2", ["model=car", "scale=4", "data.lr_patch_size=8"])
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    line = _last_line(stopped)
    assert "while training the baseline; resume with: python -m taid_car.run" in line, stopped.stderr[-3000:]
    assert (run_dir / "results.json").is_file() and (run_dir / "run.json").is_file()
    assert _step(run_dir / "baseline" / "checkpoints" / "interrupted.ckpt") == 2
    resumed = _resume(run_dir, shlex.split(line.split("resume with: ", 1)[1]))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "baseline" in (run_dir / "run.json").read_text()
    assert _step(run_dir / "baseline" / "checkpoints" / "last.ckpt") == 6
    said = resumed.stdout + resumed.stderr
    assert f"ckpt_path=last: resuming from {run_dir / 'baseline' / 'checkpoints' / 'interrupted.ckpt'}" in said


@pytest.mark.slow
def test_a_pretraining_stopped_part_way_goes_on_and_is_never_taken_as_finished(tmp_path):
    """SIGTERM at step 4 of a 6-step pretraining (its validation at step 3 wrote ``last.ckpt``):
    the resume goes on to step 6 from the state of step 4 before the method starts (any
    ``last.ckpt`` was taken as a finished pretraining)."""
    import shlex

    run_dir = tmp_path / "run"
    stopped = _signal_run(run_dir, "fit:4", ["model=car", "scale=4", "data.lr_patch_size=8", "baseline=false",
                                             "model.pretrain_steps=6", "test=false"])
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    line = _last_line(stopped)
    assert "while training the pretraining of the upscaler; resume with:" in line, stopped.stderr[-3000:]
    assert "ckpt_path=last" not in line  # the run's own checkpoints/ is empty: the same command goes on
    assert _step(run_dir / "pretrain" / "checkpoints" / "last.ckpt") == 3
    assert _step(run_dir / "pretrain" / "checkpoints" / "interrupted.ckpt") == 4
    resumed = _resume(run_dir, shlex.split(line.split("resume with: ", 1)[1]))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = resumed.stdout + resumed.stderr
    assert f"ckpt_path=last: resuming from {run_dir / 'pretrain' / 'checkpoints' / 'interrupted.ckpt'}" in said
    assert _step(run_dir / "pretrain" / "checkpoints" / "last.ckpt") == 6
    assert _step(run_dir / "checkpoints" / "last.ckpt") == 6


@pytest.mark.slow
def test_ctrl_c_during_training_exits_130(tmp_path):
    stopped = _signal_run(tmp_path / "run", "fit:2", ["test=false", "baseline=false"], sig="INT")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert _last_line(stopped).startswith("taid_car.run: stopped by Ctrl-C (SIGINT) while training"), \
        stopped.stderr[-3000:]
