"""8-bit LR quantiser: exact forward, straight-through and soft-round gradients, no gradient
outside [0, 1] (unless the old through-clamp rule is asked for), the out-of-range penalty."""

from __future__ import annotations

import pytest
import torch

from taid_car.models.quantize import Quantizer, out_of_range_penalty, quantize_8bit, soft_round


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
    with pytest.raises(ValueError, match="model.quantize='nearest'"):
        quantize_8bit(torch.zeros(1), "nearest")
    with pytest.raises(ValueError, match="must be one of ste, soft"):
        Quantizer("nearest")


OUTSIDE = torch.tensor([-0.5, -1e-3, 1 + 1e-3, 1.7], dtype=torch.float64)


@pytest.mark.parametrize("mode", ["ste", "soft"])
def test_no_gradient_reaches_values_outside_the_range(mode):
    """The rounding's surrogate gradient only where the clamp passes one: an LR value below 0 or
    above 1 gets exactly 0 from the quantiser, so the reconstruction loss cannot push it further."""
    inside = torch.tensor([1e-3, 0.25, 0.5, 0.999], dtype=torch.float64)
    x = torch.cat([OUTSIDE, inside]).requires_grad_()
    (quantize_8bit(x, mode) * torch.arange(1.0, 9.0, dtype=torch.float64)).sum().backward()
    assert torch.equal(x.grad[:4], torch.zeros(4, dtype=torch.float64))
    assert torch.all(x.grad[4:] > 0)


@pytest.mark.parametrize("mode", ["ste", "soft"])
def test_the_old_through_clamp_rule_passes_gradients_outside(mode):
    x = OUTSIDE.clone().requires_grad_()
    quantize_8bit(x, mode, through_clamp=True).sum().backward()
    assert torch.all(x.grad > 0)
    if mode == "ste":
        torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_out_of_range_penalty_is_zero_inside_and_pulls_values_back():
    inside = torch.rand(2, 3, 5, 7, requires_grad=True)
    penalty = out_of_range_penalty([inside])
    penalty.backward()
    assert penalty.item() == 0 and torch.equal(inside.grad, torch.zeros_like(inside))
    x = torch.tensor([-0.5, 0.5, 1.25], requires_grad=True)
    y = torch.tensor([[2.0, 0.0]], requires_grad=True)
    penalty = out_of_range_penalty([x, y])
    torch.testing.assert_close(penalty, torch.tensor((0.75 / 3 + 1.0 / 2) / 2))
    penalty.backward()
    # gradient descent moves each outside value towards [0, 1] and leaves the inside one alone
    torch.testing.assert_close(x.grad, torch.tensor([-1 / 6, 0.0, 1 / 6]))
    torch.testing.assert_close(y.grad, torch.tensor([[1 / 4, 0.0]]))
    with pytest.raises(ValueError, match="at least one"):
        out_of_range_penalty([])


def test_the_quantizer_object_applies_its_settings():
    x = OUTSIDE.clone().requires_grad_()
    Quantizer("ste", through_clamp=True)(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    torch.testing.assert_close(Quantizer("soft")(OUTSIDE), quantize_8bit(OUTSIDE))
