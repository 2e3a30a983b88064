"""EDSR upscaler: presets, shapes, range convention, authors' key layout, errors."""

from __future__ import annotations

import pytest
import torch

from taid_car.models.edsr import DIV2K_RGB_MEAN, EDSR, EDSR_PRESETS, build_edsr


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_shapes_odd_non_square(scale):
    net = build_edsr("tiny", scale)
    assert net(torch.rand(2, 3, 7, 11)).shape == (2, 3, 7 * scale, 11 * scale)


def test_presets():
    assert EDSR_PRESETS["baseline"] == {"n_blocks": 16, "n_feats": 64, "res_scale": 1.0}
    assert EDSR_PRESETS["paper"] == {"n_blocks": 32, "n_feats": 256, "res_scale": 0.1}
    net = build_edsr("tiny", 2, n_blocks=1)
    assert len(net.body) == 2  # one ResBlock + the body conv
    with pytest.raises(ValueError, match="preset"):
        build_edsr("huge", 2)


@pytest.mark.parametrize("scale", [5, 6, 1])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match=f"got {scale}"):
        EDSR(scale)


def test_authors_key_layout_x4():
    keys = set(build_edsr("tiny", 4, n_blocks=2).state_dict())
    expected = {
        "sub_mean",
        "add_mean",
        "head.0",
        "body.0.body.0",
        "body.0.body.2",
        "body.1.body.0",
        "body.1.body.2",
        "body.2",
        "tail.0.0",
        "tail.0.2",
        "tail.1",
    }
    assert keys == {f"{n}.{p}" for n in expected for p in ("weight", "bias")}


@pytest.mark.parametrize("rgb_range", [1.0, 255.0])
def test_range_convention(rgb_range):
    """[0,1] in and out whatever rgb_range: with all convs zeroed the output is the mean."""
    net = EDSR(2, n_blocks=1, n_feats=8, rgb_range=rgb_range)
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    out = net(torch.rand(1, 3, 5, 6))
    assert torch.allclose(
        out, torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1).expand_as(out), atol=1e-6
    )
    assert torch.allclose(net.sub_mean.bias, -rgb_range * torch.tensor(DIV2K_RGB_MEAN))


def test_gradients_reach_all_parameters():
    net = build_edsr("tiny", 3)
    net(torch.rand(1, 3, 6, 5)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert "sub_mean.weight" not in dict(net.named_parameters())


def test_rejects_non_rgb():
    with pytest.raises(ValueError, match=r"\(B,3,h,w\)"):
        build_edsr("tiny", 2)(torch.rand(1, 1, 4, 4))
