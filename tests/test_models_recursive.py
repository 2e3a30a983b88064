"""Extreme factors by recursion (TAD's ×128): level counts, 8-bit intermediate LRs, crops,
bicubic at the full factor, TAID's end-to-end recursive mode, skipping images too small."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from taid_car.data.datasets import BenchmarkDataset, NoImageLargeEnough, benchmark_min_size
from taid_car.data.io import ImageError
from taid_car.data.sources import open_test_sets
from taid_car.errors import ConfigError
from taid_car.models.bicubic import BicubicDownscaler, BicubicUpscaler
from taid_car.models.downscaler import Downscaler, crop_multiple
from taid_car.models.edsr import EDSR
from taid_car.models.recursive import RecursiveDownscaler, recursion_levels, recursive_pair
from taid_car.models.taid import TAIDDownscaler, TAIDUpscaler
from taid_car.models.trained import TrainedPair
from taid_car.ops.imresize import bicubic_downscale
from taid_car.scoring.pipeline import rescale_and_score


class CountingHalver(Downscaler):
    """×2 by 2x2 averaging plus a small offset (so its outputs are off the 8-bit grid); records
    every input it sees."""

    def __init__(self) -> None:
        super().__init__(2)
        self.inputs: list[torch.Tensor] = []

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        self.inputs.append(hr)
        return torch.nn.functional.avg_pool2d(hr, 2) + 0.3 / 255


@pytest.mark.parametrize(("scale", "unit", "levels"), [(2, 2, 1), (8, 2, 3), (128, 2, 7), (16, 4, 2), (9, 3, 2)])
def test_recursion_levels(scale, unit, levels):
    assert recursion_levels(scale, unit) == levels


@pytest.mark.parametrize(("scale", "unit"), [(12, 2), (8, 4), (1, 2), (4, 8)])
def test_unreachable_factor_is_a_config_error_naming_both(scale, unit):
    with pytest.raises(ConfigError, match=f"x{scale}"):
        recursion_levels(scale, unit)


@pytest.mark.parametrize("levels", [1, 3, 5])
def test_downscaler_applied_once_per_level_with_8bit_intermediate_lr(levels):
    unit = CountingHalver()
    down = RecursiveDownscaler(unit, levels)
    hr = torch.rand(2, 3, 96, 160)
    lr = down(hr)
    assert down.scale == 2**levels and down.levels == levels
    assert len(unit.inputs) == levels
    assert lr.shape == (2, 3, 96 // 2**levels, 160 // 2**levels)
    for level, seen in enumerate(unit.inputs[1:], start=1):  # what every later level sees is a PNG
        assert seen.shape[-1] == 160 // 2**level
        assert torch.equal(seen * 255, (seen * 255).round())
    assert not torch.equal(lr * 255, (lr * 255).round())  # the last level is left to the caller


def test_crop_multiple_covers_every_level():
    # a x2 unit needing multiples of 8 (as CAR does) applied 3 times: level 3 sees HR/4
    class NeedsEight(CountingHalver):
        size_multiple = 8

    assert crop_multiple(RecursiveDownscaler(NeedsEight(), 3)) == 32
    assert crop_multiple(RecursiveDownscaler(TAIDDownscaler(2), 7)) == 128


def test_bicubic_parts_use_the_full_factor_and_learned_upscalers_recurse():
    down, up = recursive_pair(BicubicDownscaler(2), EDSR(2, n_blocks=1, n_feats=4), 16)
    assert type(down) is BicubicDownscaler and down.scale == 16
    hr = torch.rand(1, 3, 64, 48)
    assert torch.equal(down(hr), bicubic_downscale(hr, 16))
    assert up(down(hr)).shape == hr.shape
    down, up = recursive_pair(BicubicDownscaler(2), BicubicUpscaler(2), 8)
    assert isinstance(up, BicubicUpscaler) and up.scale == 8
    same = recursive_pair(BicubicDownscaler(2), BicubicUpscaler(2), 2)
    assert same[0].scale == 2 and isinstance(same[1], BicubicUpscaler)


def test_intermediate_sr_is_clamped_to_an_image_range():
    class Overshoot(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inputs = []

        def forward(self, x):
            self.inputs.append(x)
            return torch.nn.functional.interpolate(x, scale_factor=2) * 3 - 1

    unit = Overshoot()
    _, up = recursive_pair(TAIDDownscaler(2), unit, 8)
    up(torch.rand(1, 3, 4, 5))
    assert len(unit.inputs) == 3
    assert all(float(x.min()) >= 0 and float(x.max()) <= 1 for x in unit.inputs[1:])


def test_trained_pair_at_scale_labels_and_rescales():
    pair = TrainedPair("taid & taid_tiny", 2, TAIDDownscaler(2), TAIDUpscaler(2), {}).to("cpu")
    deep = pair.at_scale(32)
    assert deep.scale == 32 and deep.method == "taid & taid_tiny (x2 applied 5 times)"
    assert deep.crop == 32 and pair.at_scale(2) is pair
    hr = torch.rand(1, 3, 96, 128)  # the smallest HR scored at x32: 75 px, rounded up to 96
    out = rescale_and_score(deep.downscaler, deep.upscaler, hr, 32, False)
    assert out.lr.shape == (1, 3, 3, 4) and out.sr.shape == hr.shape
    # the recursion's weights are the pair's own: one x2 encoder, shared by every level
    assert deep.downscaler.unit is pair.downscaler
    with pytest.raises(ConfigError, match="power of x2"):
        pair.at_scale(24)


def test_taid_recursive_training_quantises_between_levels_and_guides_every_level():
    torch.manual_seed(0)
    down = TAIDDownscaler(8, recursive=True)
    assert len(down.net.nets) == 1 and down.net.levels == 3  # one shared x2 encoder
    hr = torch.rand(2, 3, 32, 40)
    lr = down(hr)
    assert lr.shape == (2, 3, 4, 5)
    intermediate = down.net.outputs[:-1]
    assert len(intermediate) == 2
    assert all(torch.equal(x * 255, (x * 255).round()) for x in intermediate)
    terms = down.regularizers(hr, lr)
    expected = sum(
        torch.nn.functional.l1_loss(out, bicubic_downscale(hr, 2 ** (i + 1)))
        for i, out in enumerate([*intermediate, lr])
    ) / 3
    assert torch.allclose(terms["guidance"], expected)
    terms["guidance"].backward()  # the straight-through rounding lets every level's gradient through
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in down.parameters() if p.requires_grad)
    assert down.net.outputs == []  # freed after use
    unshared = TAIDDownscaler(8, recursive=True, share_weights=False)
    assert len(unshared.net.nets) == 3 and len(TAIDUpscaler(8, recursive=True, share_weights=False).net.nets) == 3


def test_taid_checkpoint_keys_are_those_of_earlier_versions():
    # runs trained before the recursion moved to models/recursive.py must still load
    keys = set(TAIDDownscaler(2).state_dict()) | {f"up.{k}" for k in TAIDUpscaler(2).state_dict()}
    assert "net.nets.0.head.weight" in keys and "up.net.nets.0.head.0.weight" in keys


# ------------------------------------------------------------------ images too small for a factor


def _folder(tmp_path, sizes: dict[str, tuple[int, int]]):
    folder = tmp_path / "set"
    folder.mkdir()
    for name, (h, w) in sizes.items():
        Image.fromarray(np.zeros((h, w, 3), np.uint8), "RGB").save(folder / f"{name}.png")
    return folder


def test_min_size_gives_a_three_pixel_lr_at_x128():
    # 128-pixel border on each side plus an 11x11 SSIM window, rounded up to a multiple of 128
    assert benchmark_min_size(128, 128) == 384
    assert benchmark_min_size(8, 8) == 32 and benchmark_min_size(2, 2) == 16


def test_images_too_small_are_skipped_and_named(tmp_path):
    folder = _folder(tmp_path, {"big": (400, 520), "small": (383, 900), "tiny": (100, 100)})
    with pytest.raises(ImageError, match="small.png"):
        BenchmarkDataset(folder, 128, name="S")
    with pytest.warns(UserWarning, match=r"S at x128: 2 of 3 .*384x384 .*small \(383x900\), tiny \(100x100\)"):
        dataset = BenchmarkDataset(folder, 128, name="S", skip_small=True)
    assert dataset.names == ["big"] and len(dataset) == 1
    assert dataset[0]["hr"].shape == (3, 384, 512)  # cropped to multiples of 128
    assert [p.stem for p, _ in dataset.skipped] == ["small", "tiny"]


def test_a_set_with_no_image_large_enough_is_left_out(tmp_path):
    small = _folder(tmp_path, {"a": (200, 200)})
    with pytest.raises(NoImageLargeEnough, match="every image"):
        BenchmarkDataset(small, 128, skip_small=True)
    (tmp_path / "big").mkdir()
    Image.fromarray(np.zeros((512, 512, 3), np.uint8), "RGB").save(tmp_path / "big" / "x.png")
    data = {"test_sets": {"small": str(small), "big": str(tmp_path / "big")}, "root": None}
    with pytest.warns(UserWarning, match="small at x128"):
        sets = open_test_sets(data, 128, skip_small=True)
    assert list(sets) == ["big"]


def test_an_unreadable_file_is_not_skipped_as_small(tmp_path):
    folder = _folder(tmp_path, {"big": (400, 400)})
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="broken.png"):
        BenchmarkDataset(folder, 128, skip_small=True)


# ------------------------------------------------------------------ evaluate levels=, rescale --scale


@pytest.fixture(scope="module")
def taid_x2_ckpt(tmp_path_factory):
    from helpers import compose_run
    from taid_car.run import train

    out = tmp_path_factory.mktemp("taid_x2")
    cfg = compose_run(["model=taid", "scale=2", "upscaler=taid_tiny", "logger=none", "trainer.max_steps=1",
                       "trainer.val_check_interval=1", "test=false", "trainer.enable_progress_bar=false"], out)
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def test_evaluate_levels_apply_a_x2_checkpoint_recursively(taid_x2_ckpt):
    from helpers import compose_evaluate as _compose
    from taid_car.evaluate import run_evaluation

    cfg = _compose([f"ckpt_path={taid_x2_ckpt}", "levels=[1,3,8]"])
    with pytest.warns(UserWarning, match="sample at x256"):
        results = run_evaluation(cfg)  # the sample images (<= 512 px) cannot go to x256: left out
    assert [(r.scale, r.method) for r in results] == [
        (2, "taid & taid_tiny"), (8, "taid & taid_tiny (x2 applied 3 times)")]
    assert results[1].images == 4 and results[1].bicubic_psnr_y < results[0].bicubic_psnr_y
    with pytest.raises(ConfigError, match="levels"):
        run_evaluation(_compose([f"ckpt_path={taid_x2_ckpt}", "levels=[0]"]))


def test_rescale_scale_option(taid_x2_ckpt, tmp_path):
    from taid_car.rescale import main

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 100, 3), dtype=np.uint8), "RGB").save(
        folder / "a.png")
    common = ["--device", "cpu", "--no-progress", "--ckpt", str(taid_x2_ckpt)]
    assert main(["downscale", "--scale", "8", "--input", str(folder), "--output", str(tmp_path / "lr"), *common]) == 0
    with Image.open(tmp_path / "lr" / "a.png") as lr:
        assert lr.size == (12, 8) and lr.text["taid_car:scale"] == "8"  # HR cropped to 64x96
    # the LR says x8: upscaling it at the checkpoint's own x2 is refused, --scale 8 restores it
    assert main(["upscale", "--input", str(tmp_path / "lr"), "--output", str(tmp_path / "sr"), *common]) == 2
    assert main(["upscale", "--scale", "8", "--input", str(tmp_path / "lr"), "--output", str(tmp_path / "sr"),
                 *common]) == 0
    with Image.open(tmp_path / "sr" / "a.png") as sr:
        assert sr.size == (96, 64)
    assert main(["downscale", "--scale", "6", "--input", str(folder), "--output", str(tmp_path / "x"), *common]) == 2
