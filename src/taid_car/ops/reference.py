"""Pure-torch CAR resampler: the forced ``backend="torch"`` path (any device, any float dtype).

Differentiable through ordinary torch autograd, so its gradients are independent of the
hand-written backward of the compiled paths. It loops over the k² taps in Python (each step
is vectorised over B, C, h, w), so it is slow and its autograd graph holds O(k²·B·h·w)
indices; use it to check or on devices without a compiled backend.
"""

from __future__ import annotations

import math

import torch

from .common import lr_centers, reflect_pad


def adaptive_resample_torch(
    hr: torch.Tensor,
    kernels: torch.Tensor,
    offsets_h: torch.Tensor,
    offsets_v: torch.Tensor,
    scale: int,
) -> torch.Tensor:
    """CAR resampling of validated inputs. hr (B,C,H,W); others (B,k²,h,w) → (B,C,h,w).

    Offsets are in units of ``scale`` HR pixels. Bilinear weights use α = px − ⌊px⌋ taken
    before the corner indices are clamped to the padded image, as the authors do; ⌊·⌋ has
    zero derivative, so autograd yields d/dpx with that unclamped α.
    """
    B, C, H, W = hr.shape
    kk, h, w = kernels.shape[1:]
    k = math.isqrt(kk)
    p = k // 2
    xp = reflect_pad(hr, p)
    Hp, Wp = xp.shape[-2:]
    flat = xp.reshape(B, C, Hp * Wp)
    cx = lr_centers(w, W, hr.dtype, hr.device).view(1, 1, w)
    cy = lr_centers(h, H, hr.dtype, hr.device).view(1, h, 1)
    out = hr.new_zeros(B, C, h * w)
    for t in range(kk):
        ty, tx = divmod(t, k)
        px = cx + tx + offsets_h[:, t] * scale - 0.5  # (B,h,w)
        py = cy + ty + offsets_v[:, t] * scale - 0.5
        fx, fy = torch.floor(px), torch.floor(py)
        a = (px - fx).reshape(B, 1, h * w)
        b = (py - fy).reshape(B, 1, h * w)
        xl = fx.clamp(0, Wp - 1).long()
        xr = (xl + 1).clamp(max=Wp - 1)
        yt = fy.clamp(0, Hp - 1).long()
        yb = (yt + 1).clamp(max=Hp - 1)

        def tap(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
            idx = (yy * Wp + xx).reshape(B, 1, h * w).expand(B, C, h * w)
            return torch.gather(flat, 2, idx)

        v = (1 - a) * (1 - b) * tap(yt, xl) + a * (1 - b) * tap(yt, xr)
        v = v + (1 - a) * b * tap(yb, xl) + a * b * tap(yb, xr)
        out = out + kernels[:, t].reshape(B, 1, h * w) * v
    return out.view(B, C, h, w)
