"""A resumed run equals the same run left alone; a diverged run stops, says so and leaves no
non-finite resume point; one run per run directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from taid_car.data.sampling import PatchSampler, mix_seed

HERE = Path(__file__).parent
ROOT = HERE.parent


def _run(args: list[str], script: list[str] | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *(script or ["-m", "taid_car.run"]), *args],
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def _quick(run_dir: Path, steps: int, val_every: int, *extra: str) -> list[str]:
    return ["model=taid", "scale=2", f"trainer.max_steps={steps}", f"trainer.val_check_interval={val_every}",
            "logger=none", "test=false", "baseline=false", "callbacks.panels=null",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", *extra]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# ----------------------------------------------------------------------------- resume


def test_sampler_resumed_anywhere_continues_the_same_stream():
    """The keys after ``resume(k)`` are the uninterrupted stream's from batch k on, across epochs."""
    def stream(sampler, epochs):
        keys = []
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            keys += list(sampler)
        return keys

    full = stream(PatchSampler(23, 4, seed=7), 3)  # 5 whole batches per epoch (3 patches dropped)
    assert len(full) == 3 * 20 and len(set(full)) == len(full)
    for consumed in (0, 1, 4, 5, 6, 11):
        sampler = PatchSampler(23, 4, seed=7)
        sampler.resume(consumed)
        epoch = consumed // 5
        rest = []
        for e in range(epoch, 3):
            sampler.set_epoch(e)  # as Lightning does before each epoch
            rest += list(sampler)
        assert rest == full[consumed * 4:], consumed
    assert stream(PatchSampler(23, 4, seed=8), 1) != full[:20]
    assert mix_seed(1, 2) != mix_seed(2, 1) and 0 <= mix_seed(2**64 + 5) < 2**63


def test_patches_follow_their_keys_not_the_global_rng():
    from taid_car.data.datasets import InMemoryImage, TrainPatchDataset

    image = InMemoryImage("noise", torch.rand(3, 40, 40), False)
    dataset = TrainPatchDataset([image], 16, 2)
    torch.manual_seed(1)
    first = dataset[(0, 1234)]["hr"]
    torch.manual_seed(2)
    assert torch.equal(dataset[(0, 1234)]["hr"], first)
    assert not torch.equal(dataset[(0, 1235)]["hr"], first)


@pytest.mark.slow
def test_a_killed_and_resumed_run_ends_with_the_weights_of_the_run_left_alone(tmp_path):
    """40 steps straight vs 20 steps, SIGKILL, ``ckpt_path=last`` to 40 (TAID x2, seed 0, CPU; the
    sample set's 18 batches per epoch put the resume point mid-epoch): max |Δw| = 0."""
    straight = _run(_quick(tmp_path / "straight", 40, 20))
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed_dir = tmp_path / "killed"
    # saves 1 and 2 are step 20's best and last; the 3rd (step 40's) is killed halfway
    killed = _run(_quick(killed_dir, 40, 20), [str(HERE / "_kill_during_save.py")],
                  KILL_AT_SAVE="3", PYTHONPATH=str(HERE))
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert torch.load(killed_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20
    resumed = _run(_quick(killed_dir, 40, 20, "ckpt_path=last"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removed 1 temporary file(s) left by interrupted saves" in resumed.stdout + resumed.stderr
    assert not list((killed_dir / "checkpoints").glob(".*.tmp"))
    a, b = _weights(tmp_path / "straight" / "checkpoints" / "last.ckpt"), _weights(killed_dir / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0


# ----------------------------------------------------------------------------- divergence


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_and_no_resume_point(tmp_path):
    """The issue's command (lr 1e3): exit 3, the last line names the non-finite loss and the step,
    no traceback, and nothing non-finite saved (no interrupted.ckpt, no psnrnan checkpoint)."""
    run_dir = tmp_path / "run"
    result = _run(["optimizer.lr=1e3", "trainer.max_steps=20", "trainer.val_check_interval=10",
                   "callbacks.panels=null", "baseline=false", "logger=csv", f"hydra.run.dir={run_dir}"])
    assert result.returncode == 3, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("taid_car.run: error: training diverged at step "), last
    assert "non-finite loss: l1=nan" in last and "loss=nan" in last and "gradient clipping" in last
    assert "Traceback" not in result.stderr
    assert not list(run_dir.glob("checkpoints/*.ckpt")) and not (run_dir / "results.json").exists()


def _rescaler(on_nonfinite: str):
    from functools import partial

    from taid_car.models import BicubicDownscaler
    from taid_car.models.edsr import build_edsr
    from taid_car.models.rescaler import Rescaler

    return Rescaler(BicubicDownscaler(2), build_edsr("tiny", scale=2), 2, optimizer=partial(torch.optim.SGD, lr=0.1),
                    on_nonfinite=on_nonfinite, max_skipped_in_row=2)


def _fit_with_nan_at(model, bad_steps: set[int], steps: int = 6, **trainer_args):
    import lightning as L
    from torch.utils.data import DataLoader

    class Batches(torch.utils.data.Dataset):
        def __len__(self):
            return steps

        def __getitem__(self, i):
            hr = torch.rand(3, 16, 16)
            if i in bad_steps:
                hr[0, 0, 0] = float("nan")
            return {"hr": hr, "name": str(i), "is_gray": False}

    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", **trainer_args)
    trainer.fit(model, train_dataloaders=DataLoader(Batches(), batch_size=1))
    return trainer


def test_skip_mode_drops_the_bad_steps_update_and_counts_it():
    from taid_car.errors import TrainingDiverged

    model = _rescaler("skip")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _fit_with_nan_at(model, {0, 3}, gradient_clip_val=10)
    assert model.skipped_steps == 2 and trainer.global_step == 6
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(TrainingDiverged, match=r"diverged at step 3 after 2 skipped step\(s\) in a row"):
        _fit_with_nan_at(_rescaler("skip"), {0, 1, 2})  # a third in a row stops


def test_stop_mode_names_the_step_and_the_terms():
    from taid_car.errors import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"training diverged at step 2: non-finite loss: l1=nan, loss=nan"):
        _fit_with_nan_at(_rescaler("stop"), {1})


def test_non_finite_weights_are_never_saved(tmp_path):
    from taid_car.training.checkpoints import AtomicCheckpointIO, NonFiniteCheckpoint

    with pytest.raises(NonFiniteCheckpoint, match=r"refusing to save .*x.ckpt: its weights are not finite \(b\)"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"a": torch.ones(2), "b": torch.tensor([float("inf")])}},
                                             tmp_path / "x.ckpt")
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- run directory


@pytest.mark.slow
def test_a_second_run_in_a_held_run_directory_is_refused(tmp_path):
    """Two runs started together on one hydra.run.dir (the first held at its first step until the
    second has been answered): the second is refused in one line (exit 2) before Hydra writes
    anything, and the first finishes with its results intact."""
    run_dir, release = tmp_path / "run", tmp_path / "release"
    args = ["model=bicubic", "scale=2", "trainer.max_steps=4", "trainer.val_check_interval=2", "logger=none",
            "baseline=false", "callbacks.panels=null", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PAUSE_UNTIL": str(release), "PYTHONPATH": str(HERE)}
    first = subprocess.Popen([sys.executable, str(HERE / "_paused_run.py"), *args, "seed=1"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "paused").exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert (run_dir / "paused").exists(), first.stderr.read() if first.poll() is not None else "timeout"
        second = _run([*args, "seed=2"])
    finally:
        release.touch()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("taid_car.run: error: "), lines
    assert f"{run_dir} is in use by another run (pid {first.pid})" in lines[0]
    assert "seed=1" in (run_dir / ".hydra" / "overrides.yaml").read_text()  # not overwritten by the refused run
    assert "seed=2" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert (run_dir / "results.json").is_file()
    assert not list(run_dir.glob("checkpoints/*-v1.ckpt"))


@pytest.mark.slow
def test_a_run_directory_that_cannot_be_written_is_one_line(tmp_path):
    if os.geteuid() == 0:
        target = Path("/proc/taid_car_run")  # root ignores permission bits: use a place nobody can write
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "run"
    result = _run(["model=bicubic", "scale=2", "trainer.max_steps=1", "logger=none", f"hydra.run.dir={target}"])
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"taid_car.run: error: cannot use {target} as the run directory")
    assert "give a writable hydra.run.dir" in lines[0]


def test_the_lock_is_per_process_and_released(tmp_path):
    from taid_car.rundir import RunDirInUse, held_run_dir, hold_run_dir, holds_run_dir, release_run_dir

    code = ("import sys, time; from taid_car.rundir import hold_run_dir; hold_run_dir(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirInUse, match=rf"{tmp_path} is in use by another run \(pid {holder.pid}\)"):
            hold_run_dir(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    with held_run_dir(tmp_path):  # the dead holder's lock went with it
        assert holds_run_dir(tmp_path)
        with held_run_dir(tmp_path):  # re-entrant in one process
            pass
        assert holds_run_dir(tmp_path)
    assert not holds_run_dir(tmp_path)
    release_run_dir(tmp_path)  # nothing held: nothing happens
