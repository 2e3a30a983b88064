"""Every entry point owns its run directory (issue 31): ``evaluate`` takes the lock and refuses a
folder that holds results unless ``add_results=true``; a refused run or evaluation writes nothing
there, Hydra's ``.hydra/`` included; a folder it cannot create is one line; a checkpoint resumed in
another run directory than the one that wrote it (a copied run) starts a new W&B run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers import compose_run
from taid_car.rundir import RunDirHoldsResults, held_results, refuse_held_results

ROOT = Path(__file__).parents[1]


def _cli(module: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          env={**env, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"},
                          capture_output=True, text=True, timeout=300, check=False)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_held_results_lists_results_and_checkpoints(tmp_path):
    assert held_results(tmp_path) == []
    (tmp_path / "results.json").write_text("[]")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert held_results(tmp_path) == ["results.json", "checkpoints/last.ckpt"]
    with pytest.raises(RunDirHoldsResults, match=r"already holds a run \(results.json, checkpoints/last.ckpt\): "
                                                 r"resume it with ckpt_path=last, or give another hydra.run.dir"):
        refuse_held_results(tmp_path, allowed=False, what="a run", remedy="resume it with ckpt_path=last")
    assert refuse_held_results(tmp_path, allowed=True, what="a run", remedy="") == held_results(tmp_path)


@pytest.mark.slow
def test_two_evaluations_into_one_folder_lose_nothing(tmp_path):
    """The second is refused before Hydra writes (its ``.hydra/`` untouched); with
    ``add_results=true`` its rows are added beside the first's, whose config is kept; the same
    rows again are refused."""
    folder = tmp_path / "eval"
    first = _cli("taid_car.evaluate", [f"hydra.run.dir={folder}", "progress=false"])
    assert first.returncode == 0, first.stderr[-2000:]
    before = _snapshot(folder)

    second = _cli("taid_car.evaluate", [f"hydra.run.dir={folder}", "progress=false", "scale=2"])
    assert second.returncode == 2, second.stderr[-2000:]
    last = [line for line in second.stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"taid_car.evaluate: error: {folder} already holds results (results.json")
    assert "add_results=true" in last
    assert _snapshot(folder) == before  # nothing rewritten, .hydra/overrides.yaml included

    added = _cli("taid_car.evaluate", [f"hydra.run.dir={folder}", "progress=false", "scale=2", "add_results=true"])
    assert added.returncode == 0, added.stderr[-2000:]
    rows = (folder / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and ",4," in rows[1] and ",2," in rows[2], rows
    assert (folder / ".hydra" / "overrides.yaml").read_bytes() == before[".hydra/overrides.yaml"]
    assert [p.name for p in (folder / ".hydra").glob("added_*")], "the added evaluation's config is kept"

    again = _cli("taid_car.evaluate", [f"hydra.run.dir={folder}", "progress=false", "scale=2", "add_results=true"])
    assert again.returncode == 2
    assert "already holds bicubic & bicubic x2 on sample" in again.stderr
    assert len((folder / "results.csv").read_text().splitlines()) == 3


@pytest.mark.slow
def test_refused_run_leaves_the_finished_run_as_it_was(tmp_path):
    """A run started on a folder that holds a finished run is refused before Hydra writes its
    ``.hydra/`` (the finished run's overrides were rewritten before)."""
    folder = tmp_path / "done"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("- model=car\n")
    (folder / "results.json").write_text("[]")
    (folder / "run.log").write_text("the finished run's log\n")
    before = _snapshot(folder)
    result = _cli("taid_car.run", ["model=bicubic", "logger=none", f"hydra.run.dir={folder}"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"taid_car.run: error: {folder} already holds a run (results.json)" in result.stderr
    assert _snapshot(folder) == before


@pytest.mark.slow
def test_evaluate_into_a_folder_it_cannot_create_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = _cli("taid_car.evaluate", [f"hydra.run.dir={blocker / 'eval'}", "progress=false"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"taid_car.evaluate: error: cannot use {blocker / 'eval'} as the run directory")


def test_evaluate_add_results_refuses_a_file_that_is_not_results(tmp_path):
    from taid_car.errors import UsageError
    from taid_car.evaluate import with_earlier_results
    from taid_car.scoring.results import SetResult

    row = SetResult("m", "Set5", 2, 5, 30.0, 0.9, 29.0, 40.0)
    assert with_earlier_results([row], tmp_path) == [row]  # nothing there yet
    (tmp_path / "results.json").write_text('{"not": "rows"}')
    with pytest.raises(UsageError, match="is not a results file of this suite"):
        with_earlier_results([row], tmp_path)


def _checkpoint_from(run_dir: Path, tmp_path: Path) -> Path:
    cfg = OmegaConf.to_container(compose_run(["model=bicubic", "scale=2"], run_dir), resolve=True)
    path = run_dir / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "taid_car_config": cfg, "taid_car_wandb_id": "abc123",
                "taid_car_run_dir": str(run_dir.resolve())}, path)
    return path


def test_a_copied_run_directory_starts_a_new_wandb_run(tmp_path):
    """The checkpoint records the run directory that wrote it: resumed there it continues its W&B
    run; resumed from a copy of that directory it starts a new one, naming its source."""
    import shutil

    from taid_car.run import prepare_resume

    original = tmp_path / "original"
    _checkpoint_from(original, tmp_path)
    cfg = compose_run(["model=bicubic", "scale=2", "ckpt_path=last"], original)
    prepare_resume(cfg)
    assert cfg.logger.wandb.id == "abc123" and "resumed_from" not in cfg

    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    cfg = compose_run(["model=bicubic", "scale=2", "ckpt_path=last"], copy)
    prepare_resume(cfg)
    assert cfg.logger.wandb.id is None
    assert cfg.resumed_from == str((copy / "checkpoints" / "last.ckpt").resolve())


def test_ckpt_path_auto_starts_a_fresh_run_and_resumes_a_saved_one(tmp_path):
    """``ckpt_path=auto`` (for jobs a scheduler requeues with the same command): no checkpoint in
    the run's ``checkpoints/`` yet, the run starts; one there, it resumes from it, as ``last``."""
    from taid_car.run import prepare_resume

    run_dir = tmp_path / "run"
    cfg = compose_run(["model=bicubic", "scale=2", "ckpt_path=auto"], run_dir)
    prepare_resume(cfg)
    assert cfg.ckpt_path is None

    saved = _checkpoint_from(run_dir, tmp_path)
    cfg = compose_run(["model=bicubic", "scale=2", "ckpt_path=auto"], run_dir)
    prepare_resume(cfg)
    assert cfg.ckpt_path == str(saved) and cfg.logger.wandb.id == "abc123"
