"""8-bit LR quantiser: exact forward, straight-through and soft-round gradients."""

from __future__ import annotations

import pytest
import torch

from taid_car.models.quantize import quantize_8bit, soft_round


@pytest.mark.parametrize("mode", ["ste", "soft"])
def test_forward_is_what_an_8bit_png_holds(mode):
    x = torch.tensor([-0.2, 0.0, 0.3 / 255, 0.6 / 255, 100.4 / 255, 200.7 / 255, 1.0, 1.3])
    expected = torch.tensor([0.0, 0.0, 0.0, 1 / 255, 100 / 255, 201 / 255, 1.0, 1.0])
    torch.testing.assert_close(quantize_8bit(x, mode), expected)


def test_straight_through_gradient_is_identity():
    x = torch.rand(2, 3, 4, 5, requires_grad=True)
    quantize_8bit(x, "ste").sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_soft_round_gradient_peaks_between_levels():
    x = torch.tensor([10.0, 10.25, 10.5], requires_grad=True)
    soft_round(x, alpha=4.0).sum().backward()
    grad = x.grad
    assert grad[0] < grad[1] < grad[2]  # flat at the levels, steepest where rounding jumps
    assert torch.all(grad > 0)
    ys = soft_round(torch.tensor([3.0, 3.5, 4.0]), 4.0)
    torch.testing.assert_close(ys, torch.tensor([3.0, 3.5, 4.0]))


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="quantize mode"):
        quantize_8bit(torch.zeros(1), "nearest")
