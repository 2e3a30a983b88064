"""The comparison command: table logic on hand-written run files, then a tiny real multirun."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from PIL import Image

from helpers import compose_run, failed_job, fake_run
from taid_car.compare import compare, comparison_rows, format_count, format_seconds, main
from taid_car.crops import aligned_box, load_pair, render
from taid_car.crops import main as crops_main
from taid_car.data.io import read_image
from taid_car.ops.imresize import bicubic_downscale
from taid_car.run import train
from taid_car.runs import NoRunsError, collect_runs, read_metrics_csv
from taid_car.runs import tested_checkpoint as checkpoint_tested_with
from taid_car.scoring.metrics import psnr_y


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


@pytest.fixture
def fake_multirun(tmp_path) -> Path:
    root = tmp_path / "multirun"
    fake_run(
        root,
        "0_car_x2",
        "car & edsr_tiny",
        2,
        {"Set14": (30.0, 0.90, 35.0, 29.0), "Set5": (34.0, 0.95, 36.0, 33.0)},
        curves=[
            "epoch,step,train/loss,val/psnr_y",
            "0,0,0.5,",
            "0,0,,20.0",
            "0,9,0.2,",
            "0,9,,25.0",
        ],
    )
    fake_run(
        root,
        "1_bicubic_x2",
        "bicubic & edsr_tiny",
        2,
        {"Set5": (35.0, 0.96, math.inf, 33.0)},
        params=(0, 950),
        seconds=7200.0,
    )
    fake_run(root, "10_taid_x4", "taid & edsr_tiny", 4, {"Set5": (28.0, 0.80, 33.0, 27.5)}, pretrain_steps=50)
    failed_job(root, "2_car_x4", ["model=car", "scale=4"])
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def _colour_result(psnr_rgb: float, psnr_y: float, fidelity: float) -> dict:
    return {"method": "taid_color & gray_to_color", "set_name": "Set5", "scale": 1, "images": 5, "task": "colorize",
            "psnr_rgb": psnr_rgb, "ssim_rgb": 0.95, "psnr_y": psnr_y, "ssim_y": 0.99, "lr_psnr_y": fidelity,
            "lr_ssim_y": 0.8, "per_image": []}


def test_a_colour_sweep_is_ranked_on_its_headline_psnr_rgb(tmp_path):
    root = tmp_path / "multirun"
    # PSNR-Y orders them the other way round: the ranking must follow the task's headline
    for name, rgb, y, fidelity in (("g0.01", 37.3, 41.0, 22.6), ("g0.2", 36.1, 44.0, 31.7), ("gray", 21.1, 45.1, math.inf)):
        fake_run(root, name, "taid_color & gray_to_color", 1, {}, results=[_colour_result(rgb, y, fidelity)])
    written = compare([root], tmp_path / "report")
    rows = read_csv(written["csv"])
    assert [r["run"] for r in rows] == ["g0.01", "g0.2", "gray"] and {r["task"] for r in rows} == {"colorize"}
    assert rows[0]["headline"] == rows[0]["psnr_rgb"] == "37.3"
    md = written["md"].read_text()
    assert "PSNR-RGB descending" in md and "gray vs plain gray (dB)" in md and "gray SSIM vs plain gray" in md
    assert "Gain vs bicubic" not in md and "Bicubic PSNR-Y" not in md
    assert written["bars"].name == "psnr_rgb_per_set.png"
    assert_png(written["bars"])


def test_rows_sorted_by_set_scale_then_metric(fake_multirun):
    runs, base = collect_runs([fake_multirun])
    assert base == fake_multirun.resolve()
    assert [r.name for r in runs] == ["0_car_x2", "1_bicubic_x2", "2_car_x4", "10_taid_x4"]
    rows = comparison_rows(runs)
    assert [(r["set_name"], r["scale"], r["run"]) for r in rows] == [
        ("Set5", 2, "1_bicubic_x2"),
        ("Set5", 2, "0_car_x2"),
        ("Set5", 4, "10_taid_x4"),
        ("Set14", 2, "0_car_x2"),
    ]
    assert rows[1]["gain_psnr_y"] == pytest.approx(1.0)
    assert rows[1]["params_total"] == 2_501_000 and rows[1]["steps"] == 100
    by_lr = comparison_rows(runs, metric="lr_psnr_y")
    assert by_lr[0]["run"] == "1_bicubic_x2"  # inf first
    by_ssim = comparison_rows(runs, metric="ssim_y")
    assert [r["run"] for r in by_ssim][:2] == ["1_bicubic_x2", "0_car_x2"]


def test_formatting_helpers():
    assert [format_count(n) for n in (0, 950, 89_123, 1_523_000, None)] == [
        "0",
        "950",
        "89.1k",
        "1.52M",
        "–",
    ]
    assert [format_seconds(s) for s in (42, 210, 7560, None)] == ["42 s", "3.5 min", "2.1 h", "–"]


def test_fake_multirun_report(fake_multirun, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([str(fake_multirun), "--output", str(out)]) == 0
    rows = read_csv(out / "comparison.csv")
    assert len(rows) == 4 and rows[0]["lr_psnr_y"] == "inf" and rows[0]["params_downscaler"] == "0"
    md = (out / "comparison.md").read_text()
    assert "| Set5 | x2 | bicubic & edsr_tiny | 1_bicubic_x2 | 35.00 | 0.9600 | +2.00 | 33.00 | ∞ |" in md
    assert "0 + 950" in md and "1.0k + 2.50M" in md and "2.0 h" in md and "90 s" in md
    assert "| 100 (+50 bicubic pretraining) |" in md and rows[2]["pretrain_steps"] == "50"
    assert "2_car_x4: no results.json" in md and "model=car scale=4" in md
    assert "1_bicubic_x2" in md.split("## Notes")[1]  # no curves for it, said so
    assert_png(out / "psnr_y_per_set.png")
    assert_png(out / "training_curves.png")
    printed = capsys.readouterr().out
    assert "failed 2_car_x4" in printed and "Comparison of 3 finished runs" in printed


def test_several_run_dirs_default_to_their_common_parent(fake_multirun):
    written = compare([fake_multirun / "0_car_x2", fake_multirun / "10_taid_x4"], metric="ssim_y")
    assert written["md"] == fake_multirun.resolve() / "comparison.md"
    assert {r["run"] for r in read_csv(written["csv"])} == {"0_car_x2", "10_taid_x4"}
    assert_png(fake_multirun / "ssim_y_per_set.png")


def test_metrics_csv_versions_are_merged(tmp_path):
    for version, text in [
        (0, "step,train/loss\n0,1.0\n1,0.9\n"),
        (1, "step,train/loss\n1,0.8\n2,0.7\n"),
    ]:
        (tmp_path / "csv" / f"version_{version}").mkdir(parents=True)
        (tmp_path / "csv" / f"version_{version}" / "metrics.csv").write_text(text)
    assert read_metrics_csv(tmp_path)["train/loss"] == [(0.0, 1.0), (1.0, 0.8), (2.0, 0.7)]


def test_tested_checkpoint_is_the_kept_one_never_the_resume_point(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").touch()
    (folder / "periodic.ckpt").touch()
    (folder / "interrupted.ckpt").touch()
    assert checkpoint_tested_with(tmp_path / "run").name == "last.ckpt"
    (folder / "step750-psnr29.10.ckpt").touch()
    assert checkpoint_tested_with(tmp_path / "run").name == "step750-psnr29.10.ckpt"
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint_tested_with(tmp_path / "empty")


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    assert main([str(tmp_path / "empty")]) == 2
    assert "no runs found" in capsys.readouterr().err
    with pytest.raises(NoRunsError, match="not a directory"):
        collect_runs([tmp_path / "missing"])
    failed_job(tmp_path / "only_failed", "0_car_x2", ["model=car"])
    assert main([str(tmp_path / "only_failed")]) == 2
    assert "0_car_x2: no results.json" in capsys.readouterr().err
    assert not (tmp_path / "only_failed" / "comparison.md").exists()


# --- a tiny real multirun: two trained jobs and one failed -------------------------------------

REAL_OVERRIDES = [
    "scale=2",
    "logger=csv",
    "trainer.max_steps=2",
    "trainer.val_check_interval=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "data.batch_size=2",
]
SETS = ("tiny_a", "tiny_b")  # two small benchmark sets: the table gets a row per set


def write_tiny_images(folder: Path, seed: int, count: int = 2, size: int = 48) -> Path:
    """Smooth random RGB PNGs, small enough that validating and testing take a moment."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    grid = np.linspace(0, 4 * np.pi, size)
    for i in range(count):
        phase = rng.uniform(0, np.pi, 3)
        wave = np.sin(grid[:, None, None] + phase) * np.cos(grid[None, :, None] * (i + 1) + phase)
        image = 127.5 + 100 * wave + rng.normal(0, 8, (size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def tiny_data(cfg: DictConfig, images: Path) -> DictConfig:
    """Point the job at the tiny folders (train patches, one val set, two test sets)."""
    with open_dict(cfg):
        cfg.data.train = str(images / "train")
        cfg.data.val_sets = {"tiny_val": str(images / "val")}
        cfg.data.test_sets = {name: str(images / name) for name in SETS}
    return cfg


@pytest.fixture(scope="module")
def real_multirun(tmp_path_factory) -> Path:
    """Jobs ``0_bicubic_x2``, ``1_taid_x2`` (2 steps each, as a multirun); ``2_car_x2`` failed."""
    images = tmp_path_factory.mktemp("images")
    for seed, name in enumerate(("train", "val", *SETS)):
        write_tiny_images(images / name, seed, count=4 if name == "train" else 2)
    root = tmp_path_factory.mktemp("multirun")
    for num, model in enumerate(["bicubic", "taid"]):
        cfg = compose_run([f"model={model}", *REAL_OVERRIDES], root / f"{num}_{model}_x2")
        train(tiny_data(cfg, images), multirun=True)
    GlobalHydra.instance().clear()
    failed_job(root, "2_car_x2", ["model=car", "scale=2"])
    return root


@pytest.mark.slow
def test_real_multirun_comparison(real_multirun, capsys):
    assert main([str(real_multirun)]) == 0
    rows = read_csv(real_multirun / "comparison.csv")
    assert [(r["set_name"], r["scale"]) for r in rows] == [("tiny_a", "2")] * 2 + [
        ("tiny_b", "2")
    ] * 2
    for same_set in (rows[:2], rows[2:]):
        assert {r["method"] for r in same_set} == {"bicubic & edsr_tiny", "taid & edsr_tiny"}
        assert float(same_set[0]["psnr_y"]) >= float(same_set[1]["psnr_y"])
    for row in rows:
        assert row["steps"] == "2" and float(row["train_seconds"]) > 0
        assert int(row["params_upscaler"]) > 0
        gain = float(row["psnr_y"]) - float(row["bicubic_psnr_y"])
        assert float(row["gain_psnr_y"]) == pytest.approx(gain)
    for row in rows:
        if row["method"].startswith("bicubic"):  # fixed bicubic: no weights, LR identical
            assert row["params_downscaler"] == "0" and row["lr_psnr_y"] == "inf"
        else:
            assert int(row["params_downscaler"]) > 0 and math.isfinite(float(row["lr_psnr_y"]))

    md = (real_multirun / "comparison.md").read_text()
    assert "2 of 3 runs finished" in md and "| tiny_b | x2 | taid & edsr_tiny | 1_taid_x2 |" in md
    assert "## Failed runs" in md and "2_car_x2: no results.json" in md
    assert "[overrides: model=car scale=2]" in md
    assert "## Notes" not in md  # both trained runs have train/loss and val/psnr_y curves
    assert_png(real_multirun / "psnr_y_per_set.png")
    assert_png(real_multirun / "training_curves.png")
    printed = capsys.readouterr().out
    assert "PSNR-Y (dB)" in printed and "failed 2_car_x2" in printed


@pytest.mark.slow
def test_real_run_without_csv_logs_is_left_out_of_the_curves(real_multirun, tmp_path):
    """A run directory listed alone (here a copy without its csv/ logs) still gets a table."""
    run = tmp_path / "0_bicubic_x2"
    shutil.copytree(
        real_multirun / "0_bicubic_x2", run, ignore=shutil.ignore_patterns("csv", "checkpoints")
    )
    written = compare([run])
    assert "curves" not in written and not (run / "training_curves.png").exists()
    assert "no training curves" in written["md"].read_text()
    assert [r["set_name"] for r in read_csv(written["csv"])] == list(SETS)


# ---------------------------------------------------------------------------------------------
# Side-by-side crops of the same tiny multirun (taid_car.crops)


def test_aligned_box_snaps_to_the_scale_and_stays_inside():
    assert aligned_box((5, 7, 30), 4, 40, 48) == (4, 4, 28)
    assert aligned_box((100, 100, 96), 2, 40, 48) == (0, 8, 40)  # too big and too far: clipped
    assert aligned_box((0, 0, 1), 4, 40, 48) == (0, 0, 4)


@pytest.mark.slow
def test_crops_of_a_real_multirun(real_multirun, tmp_path):
    image = write_tiny_images(tmp_path / "img", seed=7, count=1, size=44) / "img0.png"
    runs = [run for run in collect_runs([real_multirun])[0] if not run.failed]
    hr = read_image(image).tensor[None, :, :40, :40]
    renditions = render(hr, False, 2, [load_pair(run) for run in runs])
    assert [r.method for r in renditions] == ["Bicubic & Bicubic", "bicubic & edsr_tiny", "taid & edsr_tiny"]
    reference, bicubic_run, taid_run = renditions
    assert torch.equal(bicubic_run.lr, reference.lr) and math.isinf(bicubic_run.lr_psnr_y)
    assert math.isfinite(taid_run.lr_psnr_y) and taid_run.sr.shape == hr.shape
    expected = psnr_y(reference.sr, hr, crop_border=2)
    assert reference.psnr_y == pytest.approx(float(expected))

    out = tmp_path / "figs"
    assert crops_main([str(real_multirun), "--image", str(image), "--box", "3", "5", "20", "--output", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["crops_x2_img0.png"]
    assert_png(out / "crops_x2_img0.png")

    # through one given channel: every run's LR and the reference's stored alike, a file of its own
    from taid_car.channel import build_channel

    jpeg = build_channel({"name": "jpeg", "quality": 50})
    reference, bicubic_run, _ = render(hr, False, 2, [load_pair(run).through(jpeg) for run in runs], jpeg)
    assert torch.equal(bicubic_run.lr, reference.lr)
    assert torch.equal(reference.lr, jpeg.code(bicubic_downscale(hr, 2)).lr)
    assert crops_main([str(real_multirun), "--image", str(image), "--output", str(out),
                       "--channel", "jpeg", "--quality", "50"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["crops_x2_img0.png", "crops_x2_img0_jpeg_q50_420.png"]
    assert crops_main([str(real_multirun), "--image", str(image), "--output", str(out), "--quality", "50"]) == 2


def test_crops_errors_name_the_problem(real_multirun, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    assert crops_main([str(real_multirun), "--image", str(bad)]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert crops_main([str(tmp_path), "--image", str(bad)]) == 2
    assert "no runs found" in capsys.readouterr().err
