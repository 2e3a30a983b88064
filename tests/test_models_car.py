"""CAR kernel-generation net and downscaler: layout, shapes, ranges, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from helpers import authors_dsn_keys
from taid_car.models.car import (
    CAR_PRESETS,
    CARDownscaler,
    KernelGenerationNet,
    car_geometry,
    kernel_size_for,
)

SMALL = CAR_PRESETS["small"]

# HR sizes that are odd multiples of the net's stride (8, or 12 at x3), non-square.
SHAPES = {2: (24, 40), 3: (36, 60), 4: (24, 40), 8: (24, 40)}


def test_state_dict_keys_match_authors_layout():
    net = KernelGenerationNet(4, **SMALL)
    assert set(net.state_dict()) == authors_dsn_keys(SMALL["n_res_blocks"])


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_paper_widths_shapes(scale):
    sd = KernelGenerationNet(scale).state_dict()
    k2 = kernel_size_for(scale) ** 2
    r = 8 // scale
    assert sd["ds_1.1.weight"].shape == (64, 3, 5, 5)
    assert sd["ds_2.downsample.1.weight"].shape == (128, 256, 1, 1)
    assert sd["ds_8.downsample.1.weight"].shape == (256, 512, 1, 1)
    assert sd["kernels_trunk.9.upsample.0.weight"].shape == (256 * r * r, 256, 1, 1)
    assert sd["kernels_weight.4.weight"].shape == (k2, 256, 3, 3)
    assert sd["offsets_v_generation.4.bias"].shape == (k2,)
    assert len([k for k in sd if k.startswith("res_4.")]) == 5 * 4
    # the fixed mean shift is a buffer, never a trainable parameter
    assert "sub_mean.weight" not in dict(KernelGenerationNet(scale).named_parameters())


def test_pixel_unshuffle_matches_authors_reshape():
    x = torch.randn(2, 3, 8, 12)
    b, c, h, w, s = *x.shape, 2
    theirs = (
        x.reshape(b, c, h // s, s, w // s, s)
        .permute(0, 1, 3, 5, 2, 4)
        .reshape(b, c * s * s, h // s, w // s)
    )
    assert torch.equal(torch.nn.PixelUnshuffle(s)(x), theirs)


def test_geometry():
    assert car_geometry(2) == ((2, 2, 2), 4)
    assert car_geometry(8) == ((2, 2, 2), 1)
    assert car_geometry(3) == ((2, 3, 2), 4)
    assert kernel_size_for(3) == 10


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_kernel_net_outputs(scale):
    net = KernelGenerationNet(scale, **SMALL)
    raw = {}
    net.kernels_weight.register_forward_hook(lambda m, i, o: raw.setdefault("w", o.detach()))
    H, W = SHAPES[scale]
    kernels, oh, ov = net(torch.rand(2, 3, H, W))
    k2 = (3 * scale + 1) ** 2
    for t in (kernels, oh, ov):
        assert t.shape == (2, k2, H // scale, W // scale)
    assert torch.allclose(kernels.sum(1), torch.ones(()), atol=1e-5)
    clamped = raw["w"].clamp(1e-6, 1)
    assert clamped.min() >= 1e-6 and clamped.max() <= 1
    assert torch.allclose(kernels, clamped / clamped.sum(1, keepdim=True), atol=1e-6)
    assert oh.abs().max() <= 1 and ov.abs().max() <= 1


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscaler_shapes_and_gradients(scale):
    car = CARDownscaler(scale, "small")
    H, W = SHAPES[scale]
    hr = torch.rand(2, 3, H, W, requires_grad=True)
    out = car.forward_with_aux(hr)
    assert out.lr.shape == (2, 3, H // scale, W // scale)
    assert out.kernels.shape[1] == car.k_size**2 == (3 * scale + 1) ** 2
    # equal up to float rounding: numba's OpenMP start-up can change torch's thread count after
    # the first call when OMP_NUM_THREADS and NUMBA_NUM_THREADS differ, and convs sum differently
    torch.testing.assert_close(car(hr), out.lr, rtol=0, atol=1e-6)
    # convex combination of bilinear samples of a [0,1] image stays in [0,1]
    assert out.lr.min() >= -1e-5 and out.lr.max() <= 1 + 1e-5
    (out.lr * torch.randn_like(out.lr)).sum().backward()
    assert hr.grad is not None and hr.grad.abs().sum() > 0
    for name, p in car.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_scale_is_refused():
    with pytest.raises(ValueError, match=r"scale 5.*supported scales are \(2, 3, 4, 6, 8, 12\)"):
        CARDownscaler(5, "small")
    with pytest.raises(ValueError, match="scale"):
        KernelGenerationNet(2.0)  # type: ignore[arg-type]


def test_bad_shape_is_refused_with_the_shape():
    car = CARDownscaler(2, "small")
    with pytest.raises(ValueError, match=r"multiples of 8.*\(1, 3, 20, 40\)"):
        car(torch.rand(1, 3, 20, 40))
    with pytest.raises(ValueError, match=r"multiples of 12.*\(1, 3, 24, 30\)"):
        CARDownscaler(3, "small")(torch.rand(1, 3, 24, 30))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        car(torch.rand(1, 1, 16, 16))


def test_bad_preset_and_width():
    with pytest.raises(ValueError, match="preset"):
        CARDownscaler(2, "huge")
    with pytest.raises(ValueError, match="width"):
        CARDownscaler(2, "small", depth=3)


def test_width_override():
    car = CARDownscaler(2, "small", trunk=8)
    assert car.kernel_net.kernels_weight[1].weight.shape == (8, 8, 3, 3)


def test_pad_input():
    torch.manual_seed(0)
    plain = KernelGenerationNet(2, **SMALL)
    padded = KernelGenerationNet(2, pad_input=True, **SMALL)
    padded.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 24, 40)
    for a, b in zip(plain(x), padded(x)):  # aligned input: identical
        assert torch.equal(a, b)
    k, oh, ov = padded(torch.rand(1, 3, 22, 34))  # multiples of 2, not of 8
    assert k.shape == oh.shape == ov.shape == (1, 49, 11, 17)
    assert torch.allclose(k.sum(1), torch.ones(()), atol=1e-5)
    car = CARDownscaler(2, "small", pad_input=True)
    assert car(torch.rand(1, 3, 22, 34)).shape == (1, 3, 11, 17)
    with pytest.raises(ValueError, match=r"multiples of the scale 2.*\(1, 3, 21, 34\)"):
        car(torch.rand(1, 3, 21, 34))


def test_softmax_kernel_norm_keeps_every_tap_alive():
    """The ablation's normalisation: a softmax over the taps, so no tap is cut off from the gradient."""
    torch.manual_seed(0)
    clamp = CARDownscaler(4, "small")
    soft = CARDownscaler(4, "small", kernel_norm="softmax")
    soft.load_state_dict(clamp.state_dict())  # no extra parameters: same weights, other kernels
    raw = {}
    soft.kernel_net.kernels_weight.register_forward_hook(lambda m, i, o: raw.setdefault("w", o))
    hr = torch.rand(1, 3, *SHAPES[4])
    kernels = soft.forward_with_aux(hr).kernels
    assert torch.allclose(kernels, torch.softmax(raw["w"], 1)) and kernels.min() > 0
    kernels.retain_grad()
    raw["w"].retain_grad()
    (kernels * torch.randn_like(kernels)).sum().backward()
    assert (raw["w"].grad != 0).float().mean() > 0.99
    assert not torch.allclose(kernels, clamp.forward_with_aux(hr).kernels)
    with pytest.raises(ValueError, match="kernel_norm"):
        CARDownscaler(4, "small", kernel_norm="relu")
