"""What the commands say when the user's input is at fault: symlinks at output names, images
too small for a downscaler on one side, the key a bad factor came from, why a run has no
results, and no verdict after a smoke run."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from helpers import compose_evaluate as _compose
from helpers import compose_run, failed_job, fake_run
from taid_car.errors import UsageError
from taid_car.rescale import main as rescale

COMMON = ["--device", "cpu", "--no-progress"]


@pytest.fixture(autouse=True)
def _rescale_log(caplog):
    caplog.set_level(logging.INFO, logger="taid_car.rescale")


def checkpoint(folder: Path, model: str, scale: int, upscaler: str = "edsr_tiny") -> Path:
    """A ``taid_car.run``-style checkpoint of a freshly built (untrained) pair: no training."""
    cfg = compose_run([f"model={model}", f"upscaler={upscaler}", f"scale={scale}"], folder / f"{model}_x{scale}")
    downscaler, up = instantiate(cfg.model.downscaler), instantiate(cfg.upscaler.net)
    state = {f"downscaler.{k}": v for k, v in downscaler.state_dict().items()}
    state |= {f"upscaler.{k}": v for k, v in up.state_dict().items()}
    path = folder / f"{model}_{upscaler}_x{scale}.ckpt"
    torch.save({"taid_car_config": OmegaConf.to_container(cfg, resolve=True), "state_dict": state}, path)
    return path


def png(path: Path, h: int, w: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(h * 7919 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


@pytest.fixture(scope="module")
def bicubic_ckpt(tmp_path_factory) -> Path:
    return checkpoint(tmp_path_factory.mktemp("bicubic"), "bicubic", 2, "bicubic")


@pytest.fixture
def photos(tmp_path) -> Path:
    """``a.png`` and ``baby.png``, 32x32."""
    png(tmp_path / "in" / "a.png", 32, 32)
    png(tmp_path / "in" / "baby.png", 32, 32)
    return tmp_path / "in"


def run(command: str, ckpt: Path, source: Path, output: Path | None, *extra: str) -> int:
    argv = [command, "--ckpt", str(ckpt), "--input", str(source), *COMMON, *extra]
    return rescale(argv + (["--output", str(output)] if output is not None else []))


# ------------------------------------------------------------------ 1. symlinks at output names


def test_a_dangling_symlink_at_a_downscale_output_is_refused_before_anything_is_written(
    bicubic_ckpt, photos, tmp_path, caplog
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "baby.png").symlink_to(tmp_path / "missing" / "x.png")
    assert run("downscale", bicubic_ckpt, photos, out) == 2  # used to crash with a traceback after a.png
    assert "baby.png (a symlink to" in caplog.text and "which does not exist" in caplog.text
    assert "pass --overwrite" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["baby.png"] and (out / "baby.png").is_symlink()

    assert run("downscale", bicubic_ckpt, photos, out, "--overwrite") == 0
    assert not (out / "baby.png").is_symlink() and Image.open(out / "baby.png").size == (16, 16)
    assert not (tmp_path / "missing").exists()  # nothing written where the link pointed


def test_overwrite_replaces_a_symlink_instead_of_writing_through_it(bicubic_ckpt, photos, tmp_path):
    outside = tmp_path / "elsewhere" / "keep.png"
    outside.parent.mkdir()
    outside.write_bytes(b"not to be touched")
    out = tmp_path / "out"
    out.mkdir()
    (out / "baby.png").symlink_to(outside)
    assert run("downscale", bicubic_ckpt, photos, out) == 2
    assert run("downscale", bicubic_ckpt, photos, out, "--overwrite") == 0
    assert outside.read_bytes() == b"not to be touched"  # used to be overwritten through the link
    assert not (out / "baby.png").is_symlink()


def test_roundtrip_result_files_behind_dangling_symlinks(bicubic_ckpt, photos, tmp_path, caplog):
    out = tmp_path / "res"
    out.mkdir()
    (out / "roundtrip.md").symlink_to(tmp_path / "gone.md")
    assert run("roundtrip", bicubic_ckpt, photos, out) == 2  # used to crash after writing roundtrip.csv
    assert "roundtrip.md (a symlink to" in caplog.text
    assert not (out / "roundtrip.csv").exists()
    (out / "roundtrip.csv").symlink_to(tmp_path / "outside.csv")
    assert run("roundtrip", bicubic_ckpt, photos, out, "--overwrite") == 0
    for name in ("roundtrip.csv", "roundtrip.md"):
        assert (out / name).is_file() and not (out / name).is_symlink()
    assert not (tmp_path / "outside.csv").exists() and not (tmp_path / "gone.md").exists()


def test_upscale_output_behind_a_dangling_symlink(bicubic_ckpt, photos, tmp_path, caplog):
    out = tmp_path / "sr"
    out.mkdir()
    (out / "a.png").symlink_to(tmp_path / "nowhere.png")
    assert run("upscale", bicubic_ckpt, photos, out) == 2
    assert "a.png (a symlink to" in caplog.text and not (out / "baby.png").exists()
    assert run("upscale", bicubic_ckpt, photos, out, "--overwrite") == 0
    assert not (out / "a.png").is_symlink() and not (tmp_path / "nowhere.png").exists()


def test_a_symlink_loop_at_an_output_name_is_refused_then_replaced(bicubic_ckpt, photos, tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / "baby.png").symlink_to("baby.png")  # itself: Path.resolve used to raise "Symlink loop"
    assert run("downscale", bicubic_ckpt, photos, out) == 2
    assert "baby.png (a symlink to baby.png" in caplog.text
    assert run("downscale", bicubic_ckpt, photos, out, "--overwrite") == 0
    assert not (out / "baby.png").is_symlink() and (out / "baby.png").is_file()


def test_output_folder_behind_a_dangling_symlink_or_a_folder_at_a_file_name(bicubic_ckpt, photos, tmp_path, caplog):
    link = tmp_path / "lr"
    link.symlink_to(tmp_path / "no_folder")
    assert run("downscale", bicubic_ckpt, photos, link) == 2
    assert f"--output {link} (a symlink to" in caplog.text and "create that folder" in caplog.text
    out = tmp_path / "out"
    (out / "a.png").mkdir(parents=True)
    assert run("downscale", bicubic_ckpt, photos, out, "--overwrite") == 2
    assert "a.png is a folder" in caplog.text and not (out / "baby.png").exists()


# ------------------------------------------------------------------ 2. one side far smaller than the other


def _downscaler(model: str, scale: int, **kwargs):
    from taid_car.models.car import CARDownscaler

    if kwargs:
        return CARDownscaler(scale, preset="small", **kwargs).eval()
    return instantiate(compose_run([f"model={model}", f"scale={scale}"]).model.downscaler).eval()


def _recursive(model: str, scale: int, levels: int):
    from taid_car.models.recursive import RecursiveDownscaler

    return RecursiveDownscaler(_downscaler(model, scale), levels).eval()


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: _downscaler("bicubic", 2), 2),
        (lambda: _downscaler("bicubic", 4), 4),
        (lambda: _downscaler("taid", 2), 2),
        (lambda: _downscaler("taid", 4), 4),
        (lambda: _downscaler("car", 2), 16),
        (lambda: _downscaler("car", 3), 24),
        (lambda: _downscaler("car", 4), 16),
        (lambda: _downscaler("car", 2, pad_input=True), 10),
        (lambda: _downscaler("car", 4, pad_input=True), 12),
        (lambda: _recursive("car", 2, 3), 64),
        (lambda: _recursive("taid", 2, 3), 8),
    ],
    ids=["bicubic-x2", "bicubic-x4", "taid-x2", "taid-x4", "car-x2", "car-x3", "car-x4", "car-pad-x2",
         "car-pad-x4", "car-x2-3-levels", "taid-x2-3-levels"],
)
def test_minimum_side_is_what_each_downscaler_really_takes(build, expected):
    """Measured, not assumed: each downscaler runs on a strip whose short side is the minimum (in
    both orientations) and fails one crop step below it."""
    from taid_car.models.downscaler import crop_multiple

    downscaler = build()
    need, why = downscaler.minimum_side()
    assert need == expected and bool(why) == (need > crop_multiple(downscaler))
    step = downscaler.scale if getattr(getattr(downscaler, "kernel_net", None), "pad_input", False) else crop_multiple(downscaler)
    long = 4 * need
    with torch.no_grad():
        for shape in ((need, long), (long, need)):
            assert downscaler(torch.rand(1, 3, *shape)).shape[-2:] == (shape[0] // downscaler.scale,
                                                                       shape[1] // downscaler.scale)
        if need - step >= step:
            with pytest.raises((RuntimeError, ValueError)):
                downscaler(torch.rand(1, 3, need - step, long))


@pytest.fixture(scope="module")
def car_ckpts(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("car")
    return {scale: checkpoint(folder, "car", scale) for scale in (2, 4)}


@pytest.fixture
def strips(tmp_path) -> Path:
    """``wide.png`` 8x4000 and ``tall.png`` 4000x8 (HxW) beside a 32x32 ``ok.png``."""
    png(tmp_path / "strips" / "wide.png", 8, 4000)
    png(tmp_path / "strips" / "tall.png", 4000, 8)
    png(tmp_path / "strips" / "ok.png", 32, 32)
    return tmp_path / "strips"


@pytest.mark.parametrize("scale", [2, 4])
def test_car_downscale_names_a_strip_too_thin_for_its_kernel_net(car_ckpts, strips, tmp_path, caplog, scale):
    assert run("downscale", car_ckpts[scale], strips, tmp_path / "lr") == 0
    assert sorted(p.name for p in (tmp_path / "lr").iterdir()) == ["ok.png"]
    assert "Padding size" not in caplog.text  # the raw torch error these used to be skipped with
    for name, size in (("wide.png", "8x4000"), ("tall.png", "4000x8")):
        assert f"{name}: image is {size} (HxW), smaller than the 16x16 needed for x{scale} downscaling" in caplog.text
    assert f"CAR's kernel net at x{scale} needs HR sides of at least 16 px" in caplog.text
    caplog.clear()
    assert run("downscale", car_ckpts[scale], strips, tmp_path / "lr2", "--on-error", "fail") == 1
    assert "tall.png" in caplog.text and "--on-error fail" in caplog.text and not (tmp_path / "lr2").exists()


def test_car_roundtrip_and_recursion_name_the_side_every_level_needs(car_ckpts, tmp_path, caplog):
    png(tmp_path / "hr" / "thin.png", 32, 256)  # enough for x8 scoring (32 px) but not for 3 CAR levels
    png(tmp_path / "hr" / "ok.png", 64, 64)
    for command, output in (("roundtrip", None), ("downscale", tmp_path / "lr8")):
        caplog.clear()
        assert run(command, car_ckpts[2], tmp_path / "hr", output, "--scale", "8") == 0
        assert "Padding size" not in caplog.text
        assert "thin.png: image is 32x256 (HxW), smaller than the 64x64 needed for x8" in caplog.text
        assert "the x2 pair applied 3 times needs HR sides of at least 64 px" in caplog.text
    caplog.clear()
    png(tmp_path / "strips" / "wide.png", 8, 4000)
    assert run("roundtrip", car_ckpts[4], tmp_path / "strips", None) == 1
    assert "wide.png: image is 8x4000 (HxW), smaller than the 24x24 needed for x4 round trip" in caplog.text


@pytest.mark.parametrize("model", ["taid", "bicubic"])
def test_taid_and_bicubic_take_a_strip_and_roundtrip_names_its_size(tmp_path, strips, caplog, model):
    """Neither has a minimum of its own (zero-padded convs; MATLAB bicubic): a strip downscales,
    and the round trip refuses it for the SSIM window with its size."""
    ckpt = checkpoint(tmp_path, model, 2, "edsr_tiny" if model == "taid" else "bicubic")
    assert run("downscale", ckpt, strips, tmp_path / "lr") == 0
    assert Image.open(tmp_path / "lr" / "wide.png").size == (2000, 4)
    assert run("roundtrip", ckpt, strips, None) == 0
    assert "wide.png: image is 8x4000 (HxW), smaller than the 16x16 needed for x2 round trip scoring" in caplog.text
    assert "Padding size" not in caplog.text


def _evaluate_cfg(root: Path, ckpt: Path, *overrides: str):
    return _compose(["data=benchmark", f"data_root={root}", "data.test_sets=[Mine]", f"ckpt_path={ckpt}", *overrides])


def test_evaluate_names_an_image_too_small_for_the_recursed_car(car_ckpts, tmp_path):
    from taid_car.data.io import ImageError
    from taid_car.evaluate import run_evaluation

    png(tmp_path / "sets" / "Mine" / "mid.png", 32, 4000)  # x8 scoring takes 32 px; 3 CAR x2 levels need 64
    png(tmp_path / "sets" / "Mine" / "ok.png", 64, 64)
    with pytest.warns(UserWarning, match=r"1 of 2 image\(s\) smaller than the 64x64 px HR .* skipped: mid \(32x4000\)"):
        (result,) = run_evaluation(_evaluate_cfg(tmp_path / "sets", car_ckpts[2], "levels=[3]"))
    assert result.scale == 8 and result.images == 1 and [r["name"] for r in result.per_image] == ["ok"]
    with pytest.raises(ImageError, match=r"mid.png: image is 32x4000 \(HxW\), smaller than the 64x64 needed for "
                                         r"car & edsr_tiny \(x2 applied 3 times\) at x8.*skip_small=true"):
        run_evaluation(_evaluate_cfg(tmp_path / "sets", car_ckpts[2], "levels=[3]", "skip_small=false"))


# ------------------------------------------------------------------ 3. the key a bad factor came from


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scale=0"], "scale=0: the downscaling factor"),
        (["scale=abc"], "scale='abc': the downscaling factor"),
        (["scales=[0]"], "scales=[0]: 0 is not a downscaling factor"),
        (["scale=2", "scales=[2,x]"], "scales=[2, 'x']: 'x' is not"),
        (["scales=4"], "scales=4: give a list of factors, e.g. 'scales=[2,4]'"),
    ],
)
def test_evaluate_names_the_scale_key_that_was_typed(overrides, message):
    from taid_car.evaluate import run_evaluation

    with pytest.raises(UsageError) as info:
        run_evaluation(_compose(overrides), overrides)
    assert str(info.value).startswith(message)
    with pytest.raises(UsageError, match=f"^{message.split('=')[0]}="):  # the config alone tells it too
        run_evaluation(_compose(overrides))


def test_evaluate_scale_0_on_the_command_line_is_named_scale(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    res = subprocess.run([sys.executable, "-m", "taid_car.evaluate", "scale=0", f"hydra.run.dir={tmp_path}/r"],
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("taid_car.evaluate: error: scale=0:") and "scales" not in last


# ------------------------------------------------------------------ 4. why a run has no results


def test_compare_says_why_each_run_has_no_results(tmp_path):
    from taid_car.compare import compare

    root = tmp_path / "multirun"
    fake_run(root, "0_bicubic_x2", "bicubic & edsr_tiny", 2, {"Set5": (33.0, 0.93, float("inf"), 33.0)})
    failed = failed_job(root, "1_car_x2", ["model=car", "scale=2"])
    (failed / "failed.txt").write_text("ImageError: data/Set5/baby.png: truncated file\n  more detail\n")
    interrupted = failed_job(root, "2_taid_x2", ["model=taid", "scale=2"])
    (interrupted / "checkpoints").mkdir()
    (interrupted / "checkpoints" / "periodic.ckpt").write_bytes(b"x")
    untested = failed_job(root, "3_taid_x4", ["model=taid", "scale=4", "test=false"])
    (untested / ".hydra" / "config.yaml").write_text("scale: 4\ntest: false\n")
    (untested / "checkpoints").mkdir()
    (untested / "checkpoints" / "last.ckpt").write_bytes(b"x")
    failed_job(root, "4_car_x4", ["model=car", "scale=4"])
    (root / "4_car_x4" / "run.log").write_text("")
    (root / "4_car_x4" / ".lock").write_text("123\n")  # the run-directory lock is bookkeeping too

    md = compare([root], console=None)["md"].read_text()
    assert ("1_car_x2: no results.json: the job failed: ImageError: data/Set5/baby.png: truncated file "
            "more detail [overrides: model=car scale=2]") in md
    assert (f"2_taid_x2: no results.json: interrupted or still running (checkpoints/periodic.ckpt); resume it "
            f"with its overrides and ckpt_path=last hydra.run.dir={interrupted.resolve()}") in md
    assert "3_taid_x4: no results.json: run with test=false" in md and "taid_car.evaluate ckpt_path=" in md
    assert "4_car_x4: no results.json: the job wrote nothing but its config" in md and "see run.log" in md


def test_compare_with_no_finished_run_says_so_in_one_line(tmp_path, capsys):
    from taid_car.compare import main

    failed = failed_job(tmp_path / "sweep", "0_car_x2", ["model=car"])
    (failed / "failed.txt").write_text("ValueError: boom\n")
    failed_job(tmp_path / "sweep", "1_taid_x2", ["model=taid"])
    assert main([str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("taid_car.compare: error: none of the 2 run(s)")
    assert "0_car_x2: no results.json: the job failed: ValueError: boom" in err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "is empty: not started yet?" in capsys.readouterr().err


# ------------------------------------------------------------------ 5. no verdict after a smoke run


def _result(method: str, psnr: float):
    from taid_car.scoring.results import SetResult

    return SetResult(method=method, set_name="sample", scale=4, images=1, psnr_y=psnr, ssim_y=0.8,
                     psnr_rgb=psnr, lr_psnr_y=40.0, bicubic_psnr_y=27.0, bicubic_ssim_y=0.7)


def test_gain_lines_give_no_verdict_after_a_few_steps_or_a_fast_dev_run():
    from taid_car.training.baseline import MIN_VERDICT_STEPS, gain_lines

    learned, base = [_result("car & edsr_tiny", 28.4)], [_result("bicubic & edsr_tiny", 28.1)]
    (line,) = gain_lines(learned, base, steps=1)
    assert "(same upscaler, same 1 step): +0.30 dB PSNR-Y" in line and "helped" not in line
    assert line.endswith(f"no verdict after 1 step: the difference says nothing yet (a verdict needs at least "
                         f"{MIN_VERDICT_STEPS} training steps).")
    (line,) = gain_lines(learned, base, steps=2000, fast_dev_run=True)
    assert "no verdict after 2000 steps: trainer.fast_dev_run" in line
    assert gain_lines(learned, base, steps=MIN_VERDICT_STEPS)[0].endswith("the learned downscaler helped.")
    assert gain_lines(learned, base)[0].endswith("helped.")  # steps unknown: judged as before


def test_fast_dev_run_prints_the_difference_without_a_verdict(tmp_path, capsys):
    from taid_car.run import train

    outcome = train(compose_run(["model=taid", "scale=2", "debug=fast_dev_run"], tmp_path))
    assert outcome["baseline"]
    printed = capsys.readouterr().out
    line = next(text for text in printed.splitlines() if text.startswith("sample x2: taid & edsr_tiny"))
    assert "dB PSNR-Y" in line and "no verdict after 1 step" in line and "help" not in line
    assert "no verdict after 1 step" in (tmp_path / "results.md").read_text()
