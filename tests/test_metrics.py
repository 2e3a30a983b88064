"""SR metrics: MATLAB Y conversion, gray handling, crop, PSNR/SSIM values, Metric accumulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from taid_car.metrics import (
    PSNRRGB,
    PSNRY,
    SSIMY,
    LRFidelity,
    detect_gray,
    psnr_rgb,
    psnr_y,
    rgb_to_y,
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


def test_metric_classes_average_per_image_across_batches():
    torch.manual_seed(0)
    hrs = torch.rand(5, 3, 24, 24, dtype=torch.float64)
    srs = (hrs + 0.05 * torch.randn_like(hrs)).clamp(0, 1)
    per_image = psnr_y(srs, hrs, crop_border=2)
    metric = PSNRY(crop_border=2)
    metric.update(srs[:2], hrs[:2])
    metric.update(srs[2:], hrs[2:])
    assert metric.compute().item() == pytest.approx(per_image.mean().item())
    for cls, fn in ((SSIMY, ssim_y), (PSNRRGB, psnr_rgb)):
        m = cls(crop_border=2)
        m.update(srs, hrs)
        assert m.compute().item() == pytest.approx(fn(srs, hrs, 2).mean().item())
    fidelity = LRFidelity()
    fidelity.update(srs, hrs)
    assert fidelity.compute().item() == pytest.approx(psnr_y(srs, hrs).mean().item())


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
