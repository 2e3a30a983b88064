"""CAR offset regularisers and TAID guidance loss on hand-made inputs."""

from __future__ import annotations

import math

import pytest
import torch

from taid_car.models.regularizers import (
    offset_magnitude_loss,
    offset_tv_loss,
    taid_guidance_loss,
    tap_distance_weights,
)
from taid_car.ops.imresize import bicubic_downscale


def test_tap_weights():
    w = tap_distance_weights(3)
    assert w[4] == 0  # centre tap
    assert torch.allclose(w[0], torch.tensor(math.sqrt(2) / 3))
    assert torch.allclose(w[1], torch.tensor(1 / 3))
    assert torch.equal(w, w.flip(0))  # symmetric about the centre
    legacy = tap_distance_weights(3, legacy_centre=True)  # centre at k/2 = 1.5
    assert torch.allclose(legacy[4], torch.tensor(math.sqrt(0.5) / 3))
    assert legacy[0] > legacy[8]


def test_offset_magnitude_zero_offsets():
    oh = torch.zeros(2, 49, 3, 5, requires_grad=True)
    ov = torch.zeros(2, 49, 3, 5, requires_grad=True)
    loss = offset_magnitude_loss(oh, ov, k=7)
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(oh.grad, torch.zeros_like(oh)) and torch.equal(ov.grad, torch.zeros_like(ov))


def test_offset_magnitude_hand_value():
    oh, ov = torch.zeros(1, 9, 2, 2), torch.zeros(1, 9, 2, 2)
    oh[0, 0, 1, 1], ov[0, 0, 1, 1] = 0.6, 0.8  # corner tap, |offset| = 1
    assert torch.allclose(offset_magnitude_loss(oh, ov), torch.tensor(math.sqrt(2) / 3 / 4))
    oh[0, 0, 1, 1], ov[0, 0, 1, 1] = 0.0, 0.0
    oh[0, 4, 0, 0] = 1.0  # centre tap costs nothing
    assert offset_magnitude_loss(oh, ov).item() == 0
    assert offset_magnitude_loss(oh, ov, legacy_centre=True).item() > 0
    with pytest.raises(ValueError, match="k = 4"):
        offset_magnitude_loss(oh, ov, k=4)


def test_tv_constant_offsets_is_zero():
    k = torch.rand(2, 16, 4, 6)
    o = torch.full((2, 16, 4, 6), 0.3)
    for d in ("cross", "all"):
        assert offset_tv_loss(k, o, -o, directions=d).item() == 0


def test_tv_hand_value():
    kernels = torch.tensor([0.5, 0.25, 1.0]).view(1, 1, 1, 3)
    ov = torch.tensor([0.0, 1.0, 3.0]).view(1, 1, 1, 3)
    oh = torch.zeros_like(ov)
    # |1-0|*0.5 + |3-1|*0.25 = 1
    assert torch.allclose(offset_tv_loss(kernels, oh, ov), torch.tensor(1.0))
    assert torch.allclose(
        offset_tv_loss(kernels, oh, ov, reduction="per_pixel"), torch.tensor(1 / 3)
    )
    # "cross" ignores Δh along the width; "all" counts it
    assert offset_tv_loss(kernels, ov, oh).item() == 0
    assert torch.allclose(offset_tv_loss(kernels, ov, ov, directions="all"), torch.tensor(2.0))
    # vertical differences of Δh, weighted by the upper pixel's kernel, divided by B
    k2 = torch.tensor([0.5, 0.2]).view(1, 1, 2, 1).repeat(2, 1, 1, 1)
    oh2 = torch.tensor([0.0, -1.0]).view(1, 1, 2, 1).repeat(2, 1, 1, 1)
    assert torch.allclose(offset_tv_loss(k2, oh2, torch.zeros_like(oh2)), torch.tensor(0.5))


def test_tv_errors():
    a = torch.rand(1, 9, 3, 3)
    with pytest.raises(ValueError, match="directions"):
        offset_tv_loss(a, a, a, directions="diag")
    with pytest.raises(ValueError, match="reduction"):
        offset_tv_loss(a, a, a, reduction="mean")
    with pytest.raises(ValueError, match="one shape"):
        offset_tv_loss(a, a, torch.rand(1, 9, 3, 4))
    with pytest.raises(ValueError, match="k²"):
        offset_tv_loss(*(torch.rand(1, 8, 3, 3),) * 3)


def test_taid_guidance():
    hr = torch.rand(2, 3, 12, 16)
    lr = bicubic_downscale(hr, 4)
    assert taid_guidance_loss(lr, hr, 4).item() == pytest.approx(0, abs=1e-7)
    assert taid_guidance_loss(lr + 0.1, hr, 4).item() == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        taid_guidance_loss(lr, hr, 2)
