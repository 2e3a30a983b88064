"""A literal float64 reference of the CAR resampler, the helpers the other ops tests share,
and the checks that the reference itself is right (anchors, gradcheck).

``ref_resample`` transcribes docs/DESIGN.md "The CAR resampler" tap by tap with advanced
indexing and differentiates with torch autograd; it shares no code with ``taid_car.ops``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from taid_car.ops import adaptive_resample


def ref_resample(hr, kernels, offsets_h, offsets_v, scale):
    """hr (B,C,H,W), kernels/offsets (B,k²,h,w) → (B,C,h,w), computed as written in the spec."""
    B, C, H, W = hr.shape
    kk, h, w = kernels.shape[1:]
    k = math.isqrt(kk)
    p = k // 2
    xp = F.pad(hr, (p, p, p, p), mode="reflect")
    Hp, Wp = H + 2 * p, W + 2 * p
    j = torch.arange(w, dtype=hr.dtype).view(1, 1, w)
    i = torch.arange(h, dtype=hr.dtype).view(1, h, 1)
    bidx = torch.arange(B).view(B, 1, 1)
    out = torch.zeros(B, h, w, C, dtype=hr.dtype)
    for ty in range(k):
        for tx in range(k):
            t = ty * k + tx
            px = (j + 0.5) / w * W + tx + scale * offsets_h[:, t] - 0.5
            py = (i + 0.5) / h * H + ty + scale * offsets_v[:, t] - 0.5
            alpha = px - torch.floor(px)
            beta = py - torch.floor(py)
            xl = torch.clamp(torch.floor(px).long(), 0, Wp - 1)
            xr = torch.clamp(xl + 1, 0, Wp - 1)
            yt = torch.clamp(torch.floor(py).long(), 0, Hp - 1)
            yb = torch.clamp(yt + 1, 0, Hp - 1)
            a, b = alpha[..., None], beta[..., None]  # (B,h,w,1)
            v = (
                (1 - a) * (1 - b) * xp[bidx, :, yt, xl]
                + a * (1 - b) * xp[bidx, :, yt, xr]
                + (1 - a) * b * xp[bidx, :, yb, xl]
                + a * b * xp[bidx, :, yb, xr]
            )  # (B,h,w,C)
            out = out + kernels[:, t, :, :, None] * v
    return out.permute(0, 3, 1, 2)


def make_inputs(B, C, H, W, s, k=None, dtype=torch.float64, saturate=False, seed=0):
    """Random HR in [0,1], positive normalised kernels, offsets in (-1,1) (or exactly ±1 on
    about half the taps with ``saturate``, so samples leave the padded image and clamp)."""
    g = torch.Generator().manual_seed(seed)
    k = 3 * s + 1 if k is None else k
    h, w = H // s, W // s
    hr = torch.rand(B, C, H, W, generator=g, dtype=dtype)
    kernels = torch.rand(B, k * k, h, w, generator=g, dtype=dtype) + 0.05
    kernels = kernels / kernels.sum(1, keepdim=True)
    offs = [torch.rand(B, k * k, h, w, generator=g, dtype=dtype) * 2 - 1 for _ in range(2)]
    if saturate:
        for o in offs:
            m = torch.rand(o.shape, generator=g) < 0.5
            o[m] = torch.sign(o[m])
    return hr, kernels, offs[0], offs[1]


def grads_of(fn, inputs, grad_out=None, need_hr=True):
    """Output and gradients of all four inputs (hr grad None unless ``need_hr``)."""
    xs = [
        t.detach().clone().requires_grad_(need_hr if n == 0 else True) for n, t in enumerate(inputs)
    ]
    out = fn(*xs)
    if grad_out is None:
        grad_out = torch.randn(
            out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype
        )
    out.backward(grad_out.to(out.dtype))
    return out.detach(), [x.grad for x in xs], grad_out


def assert_all_close(got, want, atol, rtol=0.0, what=""):
    out_g, grads_g = got
    out_w, grads_w = want
    torch.testing.assert_close(
        out_g, out_w.to(out_g.dtype), atol=atol, rtol=rtol, msg=f"{what} forward"
    )
    for name, a, b in zip(("hr", "kernels", "offsets_h", "offsets_v"), grads_g, grads_w):
        if a is None and b is None:
            continue
        assert a is not None and b is not None, f"{what} d{name}: one side is None"
        torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=rtol, msg=f"{what} d{name}")


# ----------------------------------------------------------------------------- the reference


@pytest.mark.parametrize("s", [2, 3, 4])
def test_reference_center_tap_is_bilinear_downsampling(s):
    """One-hot centre tap, zero offsets: samples the LR pixel centres (j+0.5)s-0.5, i.e.
    torch's non-antialiased bilinear downsampling (a 2x2 mean at even s, a pixel at odd s)."""
    hr, kernels, oh, ov = make_inputs(2, 3, 8 * s, 6 * s, s)
    k = 3 * s + 1
    kernels = torch.zeros_like(kernels)
    kernels[:, (k // 2) * k + k // 2] = 1
    want = F.interpolate(hr, scale_factor=1 / s, mode="bilinear", align_corners=False)
    for fn in (
        ref_resample,
        lambda *a: adaptive_resample(*a, backend="torch"),
        lambda *a: adaptive_resample(*a, backend="cpu"),
    ):
        torch.testing.assert_close(fn(hr, kernels, oh * 0, ov * 0, s), want, atol=1e-12, rtol=0)


def test_reference_offset_unit_is_scale():
    """Δh = 1 moves every sample right by s HR pixels (interior pixels, no clamping)."""
    s = 2
    hr, kernels, oh, ov = make_inputs(1, 2, 16, 24, s)
    k = 3 * s + 1
    kernels = torch.zeros_like(kernels)
    kernels[:, (k // 2) * k + k // 2] = 1
    base = ref_resample(hr, kernels, oh * 0, ov * 0, s)
    shifted = ref_resample(hr, kernels, oh * 0 + 1, ov * 0, s)
    torch.testing.assert_close(shifted[..., :-1], base[..., 1:], atol=1e-12, rtol=0)


def test_reference_left_clamp_follows_authors():
    """px in [-1,0): ⌊px⌋=-1 clamps xL to 0 while α = px+1 and xR = 1 (the authors' kernel)."""
    s = 2
    hr, kernels, oh, ov = make_inputs(1, 1, 8, 8, s, k=3)  # p = 1
    kernels = torch.zeros_like(kernels)
    kernels[:, 0] = 1  # tap (0,0): px = 2j + 0.5 + 2Δh
    oh = torch.full_like(oh, -0.5)  # px = 2j - 0.5 → j=0: px = -0.5, α = 0.5
    ov = torch.full_like(ov, 0.25)  # py = 2i + 1 → β = 0
    out = ref_resample(hr, kernels, oh, ov, s)
    xp = F.pad(hr, (1, 1, 1, 1), mode="reflect")
    torch.testing.assert_close(out[0, 0, 0, 0], 0.5 * xp[0, 0, 1, 0] + 0.5 * xp[0, 0, 1, 1])


def test_reference_gradcheck():
    inputs = [t.requires_grad_() for t in make_inputs(1, 2, 6, 8, 2, k=3)]
    assert torch.autograd.gradcheck(lambda *a: ref_resample(*a, 2), inputs, fast_mode=True)


def test_torch_backend_gradcheck():
    inputs = [t.requires_grad_() for t in make_inputs(1, 2, 6, 8, 2, k=3, seed=1)]
    fn = lambda *a: adaptive_resample(*a, 2, backend="torch")
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)
