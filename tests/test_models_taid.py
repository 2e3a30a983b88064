"""TAID encoder (downscaler) and decoder (upscaler): shapes, modes, skip, errors."""

from __future__ import annotations

import pytest
import torch

from taid_car.models.taid import TAIDDownscaler, TAIDEncoder, TAIDUpscaler
from taid_car.ops.imresize import bicubic_downscale


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("scale", "recursive"), [(2, False), (3, False), (4, False), (2, True), (4, True), (8, True)]
)
def test_shapes(scale, recursive):
    H, W = (scale * 5, scale * 7) if scale != 8 else (24, 40)  # odd LR sides, non-square
    down = TAIDDownscaler(scale, "tiny", recursive=recursive)
    up = TAIDUpscaler(scale, "tiny", recursive=recursive)
    lr = down(torch.rand(2, 3, H, W))
    assert lr.shape == (2, 3, H // scale, W // scale)
    assert up(lr).shape == (2, 3, H, W)


def test_recursive_weight_sharing():
    shared = TAIDDownscaler(8, recursive=True, share_weights=True)
    separate = TAIDDownscaler(8, recursive=True, share_weights=False)
    assert n_params(separate) == 3 * n_params(shared)
    assert n_params(shared) == n_params(TAIDDownscaler(2))
    assert n_params(TAIDUpscaler(4, recursive=True, share_weights=False)) == 2 * n_params(
        TAIDUpscaler(2)
    )


@pytest.mark.parametrize("skip", ["bicubic", "area", "none"])
def test_skip_is_the_output_of_a_zeroed_net(skip):
    enc = TAIDEncoder(2, n_blocks=1, n_feats=8, skip=skip)
    for p in enc.parameters():
        torch.nn.init.zeros_(p)
    hr = torch.rand(1, 3, 10, 14)
    expected = {
        "bicubic": bicubic_downscale(hr, 2),
        "area": torch.nn.functional.avg_pool2d(hr, 2),
        "none": torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1).expand(1, 3, 5, 7),
    }[skip]
    assert torch.allclose(enc(hr), expected, atol=1e-6)


def test_gradients_reach_all_parameters():
    down, up = TAIDDownscaler(4, recursive=True, share_weights=False), TAIDUpscaler(4)
    hr = torch.rand(1, 3, 16, 20)
    up(down(hr)).sub(hr).abs().mean().backward()
    for name, p in [*down.named_parameters(), *up.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_errors():
    with pytest.raises(ValueError, match="power-of-2 scale, got 3"):
        TAIDDownscaler(3, recursive=True)
    with pytest.raises(ValueError, match="got 5"):
        TAIDUpscaler(5)
    with pytest.raises(ValueError, match="skip"):
        TAIDDownscaler(2, skip="nearest")
    with pytest.raises(ValueError, match="preset"):
        TAIDDownscaler(2, preset="huge")
    with pytest.raises(ValueError, match="argument"):
        TAIDUpscaler(2, width=3)
    with pytest.raises(ValueError, match=r"multiples of 4.*\(1, 3, 18, 20\)"):
        TAIDDownscaler(4)(torch.rand(1, 3, 18, 20))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        TAIDDownscaler(2)(torch.rand(1, 1, 8, 8))
