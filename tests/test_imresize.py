"""MATLAB-exact bicubic: Keys weights, hand-checked values, and an independent loop port."""

from __future__ import annotations

import math

import pytest
import torch

from taid_car.ops.imresize import bicubic_downscale, bicubic_upscale, cubic, imresize


def test_keys_kernel_values():
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5, -1.5], dtype=torch.float64)
    # Keys (1981) with a = -0.5, evaluated by hand.
    expected = torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625, -0.0625], dtype=torch.float64)
    torch.testing.assert_close(cubic(x), expected)


def test_keys_kernel_partition_of_unity():
    offsets = torch.linspace(0, 1, 17, dtype=torch.float64)
    taps = torch.arange(-2, 3, dtype=torch.float64)
    sums = cubic(offsets[:, None] - taps[None, :]).sum(1)
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_hand_checked_shrink():
    # imresize([1 2 3 4], 0.5): u = 1.5, kernel width 8, weights 0.5*cubic(0.5*(u - i)),
    # taps -2..5 mirrored onto [3 2 1 1 2 3 4 4] -> 1.4609375 (MATLAB prints 1.4609 3.5391).
    row = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    out = imresize(row, size=(1, 2))
    torch.testing.assert_close(out, torch.tensor([[1.4609375, 3.5390625]], dtype=torch.float64))


def test_hand_checked_enlarge():
    # imresize([1 2 3 4], 2), first output: u = 0.75, taps -1..2 -> pixels [2 1 1 2] with
    # weights cubic([1.75 0.75 -0.25 -1.25]) = [-0.0234375 0.2265625 0.8671875 -0.0703125].
    row = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    out = imresize(row, size=(1, 8))
    assert out[0, 0].item() == pytest.approx(0.90625, abs=1e-12)
    assert out[0, -1].item() == pytest.approx(5 - 0.90625, abs=1e-12)  # mirror symmetry


def _matlab_contributions(in_len: int, out_len: int, scale: float):
    """Literal port of MATLAB's imresize>contributions (1-based indices), with plain loops."""
    kernel_width = 4.0 / scale if scale < 1 else 4.0
    rows = []
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - kernel_width / 2)
        taps = math.ceil(kernel_width) + 2
        idx = [left + p for p in range(taps)]
        if scale < 1:
            w = [scale * float(cubic(torch.tensor(scale * (u - i), dtype=torch.float64))) for i in idx]
        else:
            w = [float(cubic(torch.tensor(u - i, dtype=torch.float64))) for i in idx]
        total = sum(w)
        w = [v / total for v in w]
        aux = list(range(1, in_len + 1)) + list(range(in_len, 0, -1))
        idx = [aux[(i - 1) % len(aux)] for i in idx]
        rows.append([(i, v) for i, v in zip(idx, w) if v != 0])
    return rows


def _loop_resize_1d(signal: list[float], out_len: int, scale: float) -> list[float]:
    rows = _matlab_contributions(len(signal), out_len, scale)
    return [sum(v * signal[i - 1] for i, v in row) for row in rows]


@pytest.mark.parametrize(
    "shape,size",
    [((13, 22), (5, 11)), ((20, 36), (10, 18)), ((24, 9), (6, 3)), ((7, 5), (21, 15)), ((9, 10), (17, 25))],
)
def test_matches_independent_loop_port(shape, size):
    torch.manual_seed(1)
    image = torch.rand(*shape, dtype=torch.float64)
    out = imresize(image, size=size)
    # Loop port: rows first, then columns (MATLAB's order for equal or row-smaller scales).
    scale_h, scale_w = size[0] / shape[0], size[1] / shape[1]
    first, second = ("rows", "cols") if scale_h <= scale_w else ("cols", "rows")
    data = image.tolist()
    for which in (first, second):
        if which == "rows":
            cols = [list(c) for c in zip(*data)]
            cols = [_loop_resize_1d(c, size[0], scale_h) for c in cols]
            data = [list(r) for r in zip(*cols)]
        else:
            data = [_loop_resize_1d(r, size[1], scale_w) for r in data]
    torch.testing.assert_close(out, torch.tensor(data, dtype=torch.float64), rtol=0, atol=1e-12)


def test_scale_argument_and_output_size():
    image = torch.rand(2, 3, 17, 30)
    assert imresize(image, 0.25).shape == (2, 3, 5, 8)  # ceil(17/4), ceil(30/4)
    assert imresize(image, 2).shape == (2, 3, 34, 60)
    assert imresize(image, (0.5, 1.0)).shape == (2, 3, 9, 30)


def test_constant_image_is_preserved_and_dtype_kept():
    for dtype in (torch.float32, torch.float64):
        image = torch.full((1, 3, 15, 21), 0.3, dtype=dtype)
        out = imresize(image, size=(5, 7))
        assert out.dtype == dtype
        torch.testing.assert_close(out, torch.full_like(out, 0.3))


def test_batched_equals_per_image():
    images = torch.rand(3, 2, 16, 12, dtype=torch.float64)
    batched = imresize(images, size=(4, 3))
    for b in range(3):
        torch.testing.assert_close(batched[b], imresize(images[b], size=(4, 3)))


def test_differentiable_gradcheck():
    image = torch.rand(1, 2, 9, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: imresize(x, size=(3, 4)), (image,))
    assert torch.autograd.gradcheck(lambda x: imresize(x, size=(14, 11)), (image,))


def test_bicubic_helpers_round_trip_shapes():
    hr = torch.rand(2, 3, 24, 36)
    lr = bicubic_downscale(hr, 4)
    assert lr.shape == (2, 3, 6, 9)
    assert bicubic_upscale(lr, 4).shape == hr.shape
    with pytest.raises(ValueError, match="25x36 is not a multiple of scale 4"):
        bicubic_downscale(torch.rand(1, 3, 25, 36), 4)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="floating-point"):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), 0.5)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(torch.zeros(4, 4), 0.5, size=(2, 2))
    with pytest.raises(ValueError, match=r"\(..., H, W\)"):
        imresize(torch.zeros(4), 0.5)


@pytest.mark.gpu
def test_gpu_matches_cpu():
    image = torch.rand(2, 3, 40, 52)
    torch.testing.assert_close(imresize(image.cuda(), 0.25).cpu(), imresize(image, 0.25), atol=1e-5, rtol=1e-5)
