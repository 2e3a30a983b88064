"""SR metrics: MATLAB Y conversion, gray handling, crop, PSNR/SSIM values."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import taid_car.scoring.metrics as metrics_module
from taid_car.scoring.metrics import (
    detect_gray,
    gaussian_window,
    psnr_rgb,
    psnr_y,
    rgb_to_y,
    score_pair,
    score_pairs,
    ssim,
    ssim_y,
)


def _rgb(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(1, 3, 1, 1)


def test_rgb_to_y_matches_matlab_values():
    # MATLAB rgb2ycbcr(uint8): white -> 235, black -> 16, pure red -> round(16 + 65.481) = 81.
    assert rgb_to_y(_rgb([255, 255, 255])).item() == 235
    assert rgb_to_y(_rgb([0, 0, 0])).item() == 16
    assert rgb_to_y(_rgb([255, 0, 0])).item() == 81
    assert rgb_to_y(_rgb([0, 255, 0])).item() == 145  # 16 + 128.553 = 144.553
    assert rgb_to_y(_rgb([0, 0, 255])).item() == 41  # 16 + 24.966


def test_one_gray_level_everywhere_gives_48_13_db():
    gray = torch.randint(1, 254, (1, 1, 16, 16)).double().expand(1, 3, 16, 16) / 255
    brighter = gray + 1 / 255
    assert detect_gray(gray).item()
    # scored on gray values: every pixel differs by exactly one level -> 20 log10(255)
    assert psnr_y(brighter, gray).item() == pytest.approx(20 * math.log10(255), abs=1e-9)
    # forcing the colour path (Y of a replicated gray) changes the figure, as the design warns
    assert psnr_y(brighter, gray, is_gray=False).item() != pytest.approx(20 * math.log10(255), abs=0.01)


def test_output_is_quantised_before_scoring():
    hr = torch.rand(1, 3, 20, 20, dtype=torch.float64)
    hr8 = (hr * 255).round() / 255
    nudged = hr8 + 0.4 / 255  # rounds back to the same 8-bit values
    assert math.isinf(psnr_y(nudged, hr8).item())
    assert math.isinf(psnr_rgb(nudged, hr8).item())


def test_crop_border_removes_edge_errors():
    hr = torch.rand(1, 3, 20, 24, dtype=torch.float64)
    sr = hr.clone()
    sr[..., :3, :] = 0  # damage a 3-px band at the top
    assert math.isfinite(psnr_y(sr, hr, crop_border=2).item())
    assert math.isinf(psnr_y(sr, hr, crop_border=3).item())


def test_psnr_rgb_known_value():
    hr = torch.full((1, 3, 8, 8), 100 / 255, dtype=torch.float64)
    sr = torch.full((1, 3, 8, 8), 110 / 255, dtype=torch.float64)
    assert psnr_rgb(sr, hr).item() == pytest.approx(10 * math.log10(255**2 / 100))


def _ssim_direct(x: np.ndarray, y: np.ndarray) -> float:
    """ssim_index.m transcribed with an explicit 2-D window and 'valid' filtering."""
    ax = np.arange(11) - 5
    win = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 1.5**2))
    win /= win.sum()

    def filt(img):
        h, w = img.shape
        out = np.empty((h - 10, w - 10))
        for i in range(h - 10):
            for j in range(w - 10):
                out[i, j] = (win * img[i : i + 11, j : j + 11]).sum()
        return out

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(smap.mean())


def test_ssim_matches_direct_transcription_and_skimage():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (23, 31)).astype(np.float64)
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255).round()
    ours = ssim(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None]).item()
    assert ours == pytest.approx(_ssim_direct(x, y), abs=1e-12)
    sk = structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ours == pytest.approx(sk, abs=1e-9)


def test_ssim_identical_is_one_and_too_small_is_an_error():
    img = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(ssim_y(img, img), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="11x11"):
        ssim_y(img, img, crop_border=3)


def test_explicit_gray_flags_per_image():
    hr = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    sr = (hr + 0.02).clamp(0, 1)
    both = psnr_y(sr, hr, is_gray=[True, False])
    assert both[0].item() == pytest.approx(psnr_y(sr[:1], hr[:1], is_gray=True).item())
    assert both[1].item() == pytest.approx(psnr_y(sr[1:], hr[1:], is_gray=False).item())


def test_bad_shapes_are_reported():
    with pytest.raises(ValueError, match=r"differ in shape"):
        psnr_y(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match=r"RGB \(B,3,H,W\)"):
        psnr_y(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="float image"):
        psnr_y(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="is_gray has 3 entries"):
        psnr_y(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), is_gray=[True, False, True])


# ------------------------------------------------------------------ separable SSIM, score_pair


def _ssim_conv2d_reference(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The SSIM this module used to compute: statistics by one full 11x11 float64 conv2d
    with the 2-D ``fspecial`` window, valid region, per-image mean. x, y: (B,1,H,W)."""
    g = gaussian_window(11, 1.5)
    window = (g[:, None] * g[None, :]).view(1, 1, 11, 11)
    x, y = x.double(), y.double()
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return smap.flatten(1).mean(1)


@pytest.mark.parametrize("shape", [(1, 11, 11), (2, 23, 31), (3, 37, 29), (1, 101, 77), (1, 17, 113)])
def test_separable_ssim_equals_full_2d_conv2d(shape):
    b, h, w = shape
    gen = torch.Generator().manual_seed(h * 1000 + w)
    x = torch.randint(0, 256, (b, 1, h, w), generator=gen).double()
    y = (x + 25 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 255).round()
    ours = ssim(x, y)
    assert ours.shape == (b,) and ours.dtype == torch.float64
    torch.testing.assert_close(ours, _ssim_conv2d_reference(x, y), rtol=0, atol=1e-12)


def _pair(b: int, h: int, w: int, gray: list[bool], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hr = torch.rand(b, 3, h, w, generator=gen)
    for i, g in enumerate(gray):
        if g:
            hr[i] = hr[i, :1].expand(3, h, w)
    sr = (hr + 0.04 * torch.randn(hr.shape, generator=gen)).clamp(0, 1)
    return sr, hr


@pytest.mark.parametrize("gray", [[False], [True], [True, False, True], [False, False]])
@pytest.mark.parametrize("crop", [0, 4])
def test_score_pair_equals_the_separate_functions_exactly(gray, crop):
    sr, hr = _pair(len(gray), 41, 37, gray)
    flags = torch.tensor(gray)
    scores = score_pair(sr, hr, crop, flags)
    assert list(scores) == ["psnr_y", "ssim_y", "psnr_rgb"]
    assert torch.equal(scores["psnr_y"], psnr_y(sr, hr, crop, flags))
    assert torch.equal(scores["ssim_y"], ssim_y(sr, hr, crop, flags))
    assert torch.equal(scores["psnr_rgb"], psnr_rgb(sr, hr, crop))
    for value in scores.values():
        assert value.shape == (len(gray),) and value.dtype == torch.float64
    # gray detected from the HR when not given
    detected = score_pair(sr, hr, crop)
    assert all(torch.equal(detected[k], scores[k]) for k in scores)


def test_score_pairs_shares_the_target_and_matches_score_pair():
    sr, hr = _pair(2, 48, 40, [True, False], seed=1)
    other = (hr + 0.08 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    rows = score_pairs([sr, other], hr, 3)
    assert len(rows) == 2 and score_pairs([], hr, 3) == []
    for pred, row in zip((sr, other), rows):
        single = score_pair(pred, hr, 3)
        for key in ("psnr_y", "ssim_y", "psnr_rgb"):
            torch.testing.assert_close(row[key], single[key], rtol=0, atol=1e-15)
        assert torch.equal(row["psnr_y"], single["psnr_y"]) and torch.equal(row["psnr_rgb"], single["psnr_rgb"])


def test_score_pair_gray_image_scored_on_gray_value():
    gray = torch.randint(1, 254, (1, 1, 24, 24)).double().expand(1, 3, 24, 24) / 255
    brighter = gray + 1 / 255
    scores = score_pair(brighter, gray)
    assert scores["psnr_y"].item() == pytest.approx(20 * math.log10(255), abs=1e-9)
    assert scores["psnr_rgb"].item() == pytest.approx(20 * math.log10(255), abs=1e-9)
    forced = score_pair(brighter, gray, is_gray=False)
    assert forced["psnr_y"].item() != pytest.approx(20 * math.log10(255), abs=0.01)


def test_only_the_needed_conversion_is_computed(monkeypatch):
    calls = {"y": 0, "gray": 0}
    real_y, real_gray = metrics_module.rgb_to_y, metrics_module.rgb_to_gray

    def count_y(x):
        calls["y"] += x.shape[0]
        return real_y(x)

    def count_gray(x):
        calls["gray"] += x.shape[0]
        return real_gray(x)

    monkeypatch.setattr(metrics_module, "rgb_to_y", count_y)
    monkeypatch.setattr(metrics_module, "rgb_to_gray", count_gray)
    sr, hr = _pair(3, 16, 16, [False, True, False])
    for gray, expect in (([False] * 3, {"y": 6, "gray": 0}), ([True] * 3, {"y": 0, "gray": 6})):
        calls.update(y=0, gray=0)
        score_pair(sr, hr, 0, gray)
        assert calls == expect  # pred and target, 3 images each
    calls.update(y=0, gray=0)
    mixed = score_pair(sr, hr, 0, [False, True, False])
    assert calls["gray"] == 2  # the gray image only, of pred and target
    for i, g in enumerate([False, True, False]):
        single = score_pair(sr[i], hr[i], 0, g)
        assert all(torch.equal(mixed[k][i : i + 1], single[k]) for k in single)


def test_scoring_does_not_modify_inputs_and_checks_sizes():
    sr, hr = _pair(1, 20, 20, [False])
    sr64, hr64 = sr.double() * 1.2 - 0.1, hr.double()  # out of range: clamped, on a copy
    before = sr64.clone(), hr64.clone()
    score_pair(sr64, hr64, 2)
    ssim(sr64[:, :1], hr64[:, :1])
    assert torch.equal(sr64, before[0]) and torch.equal(hr64, before[1])
    with pytest.raises(ValueError, match="11x11"):
        score_pair(sr, hr, 5)
    with pytest.raises(ValueError, match="differ in shape"):
        score_pair(sr, hr[..., :-1])
    with pytest.raises(ValueError, match="single-channel"):
        ssim(sr, hr)


def test_importing_metrics_pulls_in_no_training_stack():
    code = (
        "import json, sys\n"
        "import taid_car.scoring.metrics as m\n"
        "heavy = ('lightning', 'pytorch_lightning', 'wandb', 'torchmetrics')\n"
        "before = sorted(n for n in sys.modules if n.split('.')[0] in heavy)\n"
        "print(json.dumps(before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"import taid_car.scoring.metrics imported {loaded}"
