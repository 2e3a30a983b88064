"""Geometry shared by every backend of the CAR adaptive resampler.

Conventions (see docs/DESIGN.md, "The CAR resampler"): HR ``x`` is (B,C,H,W), kernels and
offsets are (B,k²,h,w) with h = H//s, w = W//s; the HR image is reflection-padded by
p = k//2 and sample positions are in padded pixel coordinates.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def lr_centers(n_lr: int, n_hr: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Centres ``(j + 0.5) / n_lr * n_hr`` of the LR pixels in HR pixel units, shape (n_lr,).

    Evaluated exactly as the authors' kernel does, in ``dtype`` with IEEE-rounded division
    (numpy on the host: torch may turn a division by a scalar into a multiplication by its
    reciprocal, which differs by one ulp for about 8% of the pixels in float32).
    """
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    j = np.arange(n_lr, dtype=np_dtype)
    c = (j + np_dtype(0.5)) / np_dtype(n_lr) * np_dtype(n_hr)
    return torch.from_numpy(c).to(device)


def reflect_pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """Reflection-pad (B,C,H,W) by ``p`` on every side → (B,C,H+2p,W+2p), contiguous."""
    if p == 0:
        return x.contiguous()
    return F.pad(x, (p, p, p, p), mode="reflect").contiguous()


def fold_reflect_pad(grad_padded: torch.Tensor, like: torch.Tensor, p: int) -> torch.Tensor:
    """Adjoint of :func:`reflect_pad`: fold (B,C,H+2p,W+2p) gradients back onto (B,C,H,W)."""
    if p == 0:
        return grad_padded
    return torch.ops.aten.reflection_pad2d_backward(
        grad_padded, grad_padded.new_empty(like.shape), [p, p, p, p]
    )
