"""CAR's kernel prior: positive stand-ins for bicubic, and a kernel net that starts at them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taid_car.models.car import CAR_PRESETS, PRIOR_PEAK, CARDownscaler, KernelGenerationNet
from taid_car.models.kernel_prior import (
    KERNEL_PRIORS,
    SIGNED_PRIORS,
    _nnls,
    bicubic_pixel_weights,
    effective_pixel_kernel_1d,
    prior_kernel_1d,
    prior_kernel_2d,
    tap_to_pixel_matrix,
)
from taid_car.models.quantize import quantize_8bit
from taid_car.ops.imresize import bicubic_downscale, resize_weights
from taid_car.ops.reference import adaptive_resample_torch
from taid_car.scoring.metrics import psnr_y

SMALL = CAR_PRESETS["small"]
SCALES = [2, 3, 4, 8]
POSITIVE = [kind for kind in KERNEL_PRIORS if kind not in SIGNED_PRIORS]


@pytest.mark.parametrize("scale", SCALES)
def test_bicubic_pixel_weights_are_a_row_of_matlabs_matrix(scale):
    offsets, weights = bicubic_pixel_weights(scale)
    n, i = 16 * scale, 8  # an interior LR pixel: no border mirroring
    matrix = resize_weights(n, n // scale, 1 / scale, dtype=torch.float64).numpy()
    pixels = np.round(offsets + (i + 0.5) * scale - 0.5).astype(int)
    np.testing.assert_allclose(matrix[i, pixels], weights, atol=1e-12)
    assert matrix[i].sum() == pytest.approx(matrix[i, pixels].sum())  # nothing outside the support


@pytest.mark.parametrize("scale", SCALES)
def test_tap_matrix_is_the_resamplers_geometry(scale):
    """A 1-D tap profile applied by the float64 reference resampler (offsets 0) equals A @ K.

    The kernel is non-zero on the centre column only (weights ``taps`` down it) and the HR image
    is one horizontal line, so the LR pixel reads the vertical profile's weight on that line.
    """
    k = 3 * scale + 1
    offsets, _ = bicubic_pixel_weights(scale)
    taps = torch.rand(k, dtype=torch.float64)
    n, i = 16 * scale, 8
    kernel = torch.zeros(k, k, dtype=torch.float64)
    kernel[:, k // 2] = taps
    kernels = kernel.reshape(1, k * k, 1, 1).expand(1, k * k, n // scale, n // scale).contiguous()
    zeros = torch.zeros_like(kernels)
    expected = tap_to_pixel_matrix(scale, k, offsets) @ taps.numpy()
    pixels = np.round(offsets + (i + 0.5) * scale - 0.5).astype(int)
    for pixel, weight in zip(pixels, expected):
        hr = torch.zeros(1, 1, n, n, dtype=torch.float64)
        hr[0, 0, pixel, :] = 1
        lr = adaptive_resample_torch(hr, kernels, zeros, zeros, scale)
        assert lr[0, 0, i, i].item() == pytest.approx(float(weight), abs=1e-12)


def test_nnls_matches_scipy():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(16, 13)), rng.normal(size=16)
    np.testing.assert_allclose(_nnls(a, b, iterations=20000), scipy_optimize.nnls(a, b)[0], atol=1e-6)


@pytest.mark.parametrize("kind", POSITIVE)
@pytest.mark.parametrize("scale", SCALES)
def test_prior_is_positive_normalised_symmetric_and_close_to_bicubic(kind, scale):
    k = 3 * scale + 1
    one = prior_kernel_1d(kind, scale, k)
    assert one.shape == (k,) and one.min() >= 0 and one.sum() == pytest.approx(1)
    if k % 2:  # even scales: odd k, centred taps
        np.testing.assert_allclose(one, one[::-1], atol=1e-9)
    bicubic, effective = effective_pixel_kernel_1d(kind, scale, k)
    # close to bicubic on the HR pixels: the error is its negative lobes it cannot follow
    negative_lobes = np.sum(np.minimum(bicubic, 0) ** 2)
    assert np.sum((effective - bicubic) ** 2) < 4 * negative_lobes + 1e-3
    two = prior_kernel_2d(kind, scale, k)
    assert two.shape == (k * k,) and two.sum().item() == pytest.approx(1, abs=1e-6)
    assert two.min() > 1e-4 * two.max()  # the floor: no tap starts dead under CAR's clamp


def test_unknown_prior_is_refused():
    with pytest.raises(ValueError, match="kernel prior"):
        prior_kernel_1d("lanczos", 4, 13)
    with pytest.raises(ValueError, match="kernel_prior"):
        KernelGenerationNet(4, kernel_prior="lanczos", **SMALL)


@pytest.mark.parametrize("norm", ["clamp", "softmax"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_kernel_net_starts_at_the_prior_with_zero_offsets(norm, scale):
    net = KernelGenerationNet(scale, kernel_norm=norm, kernel_prior="bicubic", **SMALL)
    H, W = {3: (36, 60)}.get(scale, (24, 40))
    kernels, oh, ov = net(torch.rand(2, 3, H, W))
    prior = prior_kernel_2d("bicubic", scale, 3 * scale + 1).view(1, -1, 1, 1)
    torch.testing.assert_close(kernels, prior.expand_as(kernels), atol=1e-6, rtol=1e-5)
    assert torch.equal(oh, torch.zeros_like(oh)) and torch.equal(ov, torch.zeros_like(ov))
    if norm == "clamp":
        assert net.prior_raw.max().item() == pytest.approx(PRIOR_PEAK)
        assert net.prior_raw.min().item() > 1e-6  # every tap above the clamp: trainable


def test_prior_keeps_the_authors_state_dict_and_trains_away_from_it():
    from helpers import authors_dsn_keys

    car = CARDownscaler(4, "small", kernel_prior="gaussian")
    assert set(car.kernel_net.state_dict()) == authors_dsn_keys(SMALL["n_res_blocks"])
    hr = torch.rand(2, 3, 24, 40)
    out = car.forward_with_aux(hr)
    (out.lr * torch.randn_like(out.lr)).sum().backward()
    heads = [car.kernel_net.kernels_weight[4], car.kernel_net.offsets_h_generation[4]]
    assert all(h.weight.grad.abs().sum() > 0 for h in heads)  # the zero-initialised convs learn
    torch.optim.SGD(car.parameters(), lr=1.0).step()
    moved = car.forward_with_aux(hr)
    assert not torch.allclose(moved.kernels, out.kernels) and moved.offsets_h.abs().max() > 0


@pytest.mark.parametrize("scale", [2, 4])
def test_lr_at_step_zero_is_close_to_bicubic(scale):
    """The point of the prior: an LR within ~40 dB of bicubic's at step 0 (authors' init: ~27 dB)."""
    from taid_car.data.sample import sample_split

    hr = sample_split("test")[0].tensor[:, :96, :128].unsqueeze(0)
    reference = quantize_8bit(bicubic_downscale(hr, scale))
    with torch.no_grad():
        prior = quantize_8bit(CARDownscaler(scale, "small", kernel_prior="bicubic")(hr))
        authors = quantize_8bit(CARDownscaler(scale, "small")(hr))
    assert psnr_y(prior, reference).item() > 35
    assert psnr_y(prior, reference).item() > psnr_y(authors, reference).item() + 5


def test_signed_norm_and_prior_reproduce_bicubic_at_step_zero():
    """The positivity ablation: signed kernels can start at bicubic itself, negative lobes included."""
    from taid_car.data.sample import sample_split

    hr = sample_split("test")[0].tensor[:, :96, :128].unsqueeze(0)
    car = CARDownscaler(2, "small", kernel_norm="signed", kernel_prior="bicubic_signed")
    with torch.no_grad():
        out = car.forward_with_aux(hr)
        reference = quantize_8bit(bicubic_downscale(hr, 2))
    assert out.kernels.min() < 0  # negative lobes
    assert psnr_y(quantize_8bit(out.lr), reference).item() > 50
    net = KernelGenerationNet(4, kernel_norm="signed", **SMALL)  # random raw weights: still sum to 1
    kernels = net(torch.rand(1, 3, 24, 40)).kernels
    torch.testing.assert_close(kernels.sum(1), torch.ones_like(kernels[:, 0]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="needs kernel_norm=signed"):
        KernelGenerationNet(4, kernel_prior="bicubic_signed", **SMALL)
