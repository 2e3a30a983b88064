"""The one downscaler contract (forward, regularizers, size_multiple) and how the Rescaler uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from taid_car.models import EDSR, BicubicDownscaler, CARDownscaler, TAIDDownscaler
from taid_car.models.downscaler import Downscaler, crop_multiple
from taid_car.models.quantize import quantize_8bit
from taid_car.models.regularizers import offset_magnitude_loss, offset_tv_loss, taid_guidance_loss
from taid_car.models.rescaler import Rescaler, resolve_loss_weights

DOWNSCALERS = {
    "bicubic": lambda s: BicubicDownscaler(s),
    "car": lambda s: CARDownscaler(s, preset="small"),
    "taid": lambda s: TAIDDownscaler(s, preset="tiny"),
}


@pytest.mark.parametrize("name", sorted(DOWNSCALERS))
def test_every_downscaler_keeps_the_contract(name):
    down = DOWNSCALERS[name](2).train()
    assert isinstance(down, Downscaler)
    hr = torch.rand(2, 3, 24, 40)
    lr = down(hr)
    assert lr.shape == (2, 3, 12, 20)
    terms = down.regularizers(hr, quantize_8bit(lr))
    assert set(terms) == set(down.regularizer_names)
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    assert down.size_multiple % down.scale == 0
    assert crop_multiple(down) == down.size_multiple


def test_car_regularizers_are_those_of_its_own_maps():
    car = CARDownscaler(2, preset="small").train()
    hr = torch.rand(1, 3, 16, 24)
    lr = car(hr)
    maps = car._maps[1]
    terms = car.regularizers(hr, lr)
    assert car._maps is None  # freed once read
    assert torch.equal(terms["offset_magnitude"], offset_magnitude_loss(maps.offsets_h, maps.offsets_v))
    assert torch.equal(terms["offset_tv"], offset_tv_loss(maps.kernels, maps.offsets_h, maps.offsets_v))
    with torch.no_grad():  # no maps kept in evaluation: recomputed, same values
        car.eval()
        car(hr)
        again = car.regularizers(hr, lr)
    torch.testing.assert_close(again["offset_tv"], terms["offset_tv"])


def test_taid_guidance_is_its_regularizer():
    taid = TAIDDownscaler(2)
    hr = torch.rand(1, 3, 16, 16)
    lr = quantize_8bit(taid(hr))
    assert torch.equal(taid.regularizers(hr, lr)["guidance"], taid_guidance_loss(lr, hr, 2))


def test_a_weight_for_a_term_the_model_does_not_produce_is_an_error():
    """An offset weight on a TAID run used to be dropped silently."""
    with pytest.raises(ValueError, match=r"offset_tv=0.005.*TAIDDownscaler does not produce.*'guidance'"):
        resolve_loss_weights({"l1": 1, "offset_tv": 0.005}, TAIDDownscaler(2))
    with pytest.raises(ValueError, match="guidance=1.0.*CARDownscaler"):
        Rescaler(CARDownscaler(2, preset="small"), EDSR(2, n_blocks=1, n_feats=8), 2,
                 loss_weights={"guidance": 1.0})
    assert resolve_loss_weights({"offset_tv": 0}, BicubicDownscaler(2)) == {"l1": 1.0, "out_of_range": 0.0}
    assert resolve_loss_weights(None, CARDownscaler(2, preset="small")) == {
        "l1": 1.0, "out_of_range": 0.0, "offset_magnitude": 0.0, "offset_tv": 0.0}


def test_rescaler_sums_the_weighted_terms_the_downscaler_returns():
    torch.manual_seed(0)
    rescaler = Rescaler(CARDownscaler(2, preset="small"), EDSR(2, n_blocks=1, n_feats=8), 2,
                        loss_weights={"l1": 1.0, "offset_magnitude": 0.5, "offset_tv": 0.0})
    hr = torch.rand(2, 3, 16, 16)
    terms = rescaler.compute_losses(hr)
    assert set(terms) == {"l1", "offset_magnitude", "loss"}  # zero-weight terms are not in the loss
    torch.testing.assert_close(terms["loss"], terms["l1"] + 0.5 * terms["offset_magnitude"])


def test_rescaler_refuses_a_module_without_the_contract():
    with pytest.raises(TypeError, match="must be a taid_car.models.downscaler.Downscaler"):
        Rescaler(torch.nn.AvgPool2d(2), EDSR(2, n_blocks=1, n_feats=8), 2)


def test_out_of_range_covers_every_image_the_run_rounds_and_the_run_quantizer_rounds_inside():
    """The penalty is taken on the unrounded LR and on a recursion's unrounded intermediate LR,
    and the recursion rounds its intermediate levels with the run's own quantiser."""
    torch.manual_seed(0)
    down = TAIDDownscaler(4, recursive=True, n_blocks=1, n_feats=8)
    rescaler = Rescaler(down, EDSR(4, n_blocks=1, n_feats=8), 4, quantize_through_clamp=True,
                        loss_weights={"l1": 1.0, "out_of_range": 2.0, "guidance": 0.0})
    assert down.quantizer is rescaler.quantizer and rescaler.quantizer.through_clamp
    hr = torch.rand(2, 3, 16, 20) * 3 - 1  # far outside [0, 1]: every level leaves the range
    terms = rescaler.compute_losses(hr)
    encoder = down.net.nets[0]
    level1 = encoder(hr)
    level2 = encoder(quantize_8bit(level1))
    expected = ((F.relu(level1 - 1) + F.relu(-level1)).mean() + (F.relu(level2 - 1) + F.relu(-level2)).mean()) / 2
    assert expected > 1e-3
    torch.testing.assert_close(terms["out_of_range"], expected)
    torch.testing.assert_close(terms["loss"], terms["l1"] + 2.0 * expected)
    assert down.net.unmapped == [] and down.net.outputs == []  # freed after use


def test_car_with_its_authors_kernels_never_leaves_the_range_so_the_penalty_is_idle():
    """clamp-normalised kernels are convex weights: CAR's LR of a [0,1] image stays in [0,1]
    (to float rounding), so ``out_of_range`` changes nothing for the default CAR."""
    torch.manual_seed(0)
    down = CARDownscaler(2, preset="small")
    rescaler = Rescaler(down, EDSR(2, n_blocks=1, n_feats=8), 2, loss_weights={"out_of_range": 1.0})
    hr = torch.rand(2, 3, 24, 32)
    hr[:, :, :8] = 1.0  # saturated areas too
    hr[:, :, -8:] = 0.0
    lr = down(hr)
    assert float(lr.min()) >= -1e-6 and float(lr.max()) <= 1 + 1e-6
    assert float(rescaler.compute_losses(hr)["out_of_range"]) < 1e-7
