"""Training regularisers: CAR's offset-magnitude and kernel-weighted offset-TV losses, TAID guidance.

Shapes: ``kernels``, ``offsets_h``, ``offsets_v`` are (B,k²,h,w) as produced by
:class:`taid_car.models.car.KernelGenerationNet` (tap t = ty·k + tx, row-major over the k×k
grid; offsets in units of s HR pixels, in [-1,1]; kernels sum to 1 over the taps).

Source. The CAR paper's own weights are unverified; the definitions and the default weights
(0.001 offset, 0.005 TV) follow the third-party MindSpore re-implementation of CAR (Huawei,
2022: ``car_utils/loss.py`` classes ``OffsetLoss`` and ``TvLoss``; weights set in its
``train.py`` as ``TvLoss(0.005)``, ``OffsetLoss(kernel_size, offsetloss_weight=0.001)``).
Differences from it are listed per function; the weights are applied by the caller, not here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from taid_car.ops.imresize import bicubic_downscale

TV_DIRECTIONS = ("cross", "all")
TV_REDUCTIONS = ("per_image", "per_pixel")


def _check_maps(**maps: torch.Tensor) -> tuple[int, ...]:
    shapes = {name: tuple(t.shape) for name, t in maps.items()}
    first = next(iter(shapes.values()))
    if any(len(s) != 4 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f"expected 4-D maps (B,k²,h,w) of one shape, got {shapes}")
    k = math.isqrt(first[1])
    if k * k != first[1]:
        raise ValueError(f"channel count must be k² (a square), got shapes {shapes}")
    return first


def tap_distance_weights(
    k: int, legacy_centre: bool = False, device=None, dtype=None
) -> torch.Tensor:
    """(k²,) distance of each tap from the kernel centre divided by k (t = ty·k + tx).

    The centre is tap (k-1)/2 (weight 0 there). ``legacy_centre=True`` uses k/2 as the
    MindSpore code does, which is half a tap off: the centre tap gets weight ≈ 0.71/k and
    the top-left taps weigh more than the bottom-right ones.
    """
    c = k / 2 if legacy_centre else (k - 1) / 2
    r = torch.arange(k, device=device, dtype=dtype or torch.float32) - c
    return torch.sqrt(r.view(k, 1) ** 2 + r.view(1, k) ** 2).flatten() / k


def _safe_norm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sqrt(x² + y²) with gradient 0 (not NaN) where both are 0."""
    r2 = x * x + y * y
    pos = r2 > 0
    return torch.where(
        pos, torch.sqrt(torch.where(pos, r2, torch.ones_like(r2))), torch.zeros_like(r2)
    )


def offset_magnitude_loss(
    offsets_h: torch.Tensor,
    offsets_v: torch.Tensor,
    k: int | None = None,
    legacy_centre: bool = False,
) -> torch.Tensor:
    """Σ_t w_t · ‖(Δh_t, Δv_t)‖₂, summed over taps, averaged over batch and LR pixels.

    w_t is the tap's distance from the kernel centre over k (:func:`tap_distance_weights`), so
    outer taps are pushed harder to stay on their grid position. Same normalisation as the
    MindSpore ``OffsetLoss`` (sum / (B·h·w)); offsets in units of s. Returns a scalar ≥ 0;
    zero offsets give exactly 0 with zero gradient.

    Args:
        offsets_h, offsets_v: (B,k²,h,w).
        k: kernel side; inferred from the channel count when None (checked when given).
        legacy_centre: reproduce the re-implementation's off-by-half centre (see above).
    """
    b, kk, h, w = _check_maps(offsets_h=offsets_h, offsets_v=offsets_v)
    if k is None:
        k = math.isqrt(kk)
    if k * k != kk:
        raise ValueError(f"k = {k} does not match the offsets' {kk} channels (need k² = {kk})")
    weight = tap_distance_weights(k, legacy_centre, offsets_h.device, offsets_h.dtype)
    loss = _safe_norm(offsets_h, offsets_v) * weight.view(1, kk, 1, 1)
    return loss.sum() / (b * h * w)


def offset_tv_loss(
    kernels: torch.Tensor,
    offsets_h: torch.Tensor,
    offsets_v: torch.Tensor,
    directions: str = "cross",
    reduction: str = "per_image",
) -> torch.Tensor:
    """Kernel-weighted total variation of the offset maps (anisotropic, L1).

    Each absolute difference between neighbouring LR pixels of one tap's offset is weighted by
    that tap's kernel value at the first (left / top) pixel of the pair, so taps that matter
    are kept smooth and near-zero taps are free.

    Args:
        kernels, offsets_h, offsets_v: (B,k²,h,w).
        directions: ``"cross"`` (default, as the MindSpore ``TvLoss``): Δv differenced along
            the width and Δh along the height; ``"all"``: both maps along both axes.
        reduction: ``"per_image"`` (default, as MindSpore): sum over taps and pixels divided by
            B, so it grows with the patch area; ``"per_pixel"``: divided by B·h·w instead.

    Returns a scalar ≥ 0; constant offset maps give 0.
    """
    if directions not in TV_DIRECTIONS:
        raise ValueError(f"directions must be one of {TV_DIRECTIONS}, got {directions!r}")
    if reduction not in TV_REDUCTIONS:
        raise ValueError(f"reduction must be one of {TV_REDUCTIONS}, got {reduction!r}")
    b, _, h, w = _check_maps(kernels=kernels, offsets_h=offsets_h, offsets_v=offsets_v)

    def along_w(o: torch.Tensor) -> torch.Tensor:
        return ((o[..., 1:] - o[..., :-1]).abs() * kernels[..., :-1]).sum()

    def along_h(o: torch.Tensor) -> torch.Tensor:
        return ((o[..., 1:, :] - o[..., :-1, :]).abs() * kernels[..., :-1, :]).sum()

    total = along_w(offsets_v) + along_h(offsets_h)
    if directions == "all":
        total = total + along_w(offsets_h) + along_h(offsets_v)
    return total / (b if reduction == "per_image" else b * h * w)


def taid_guidance_loss(lr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    """TAID guidance: mean L1 between the learned LR (B,C,H/s,W/s) and MATLAB-bicubic(HR).

    The bicubic target is computed without gradient (it depends on the HR only).
    """
    with torch.no_grad():
        target = bicubic_downscale(hr, scale)
    if target.shape != lr.shape:
        raise ValueError(
            f"LR shape {tuple(lr.shape)} does not match bicubic(HR, {scale}) shape {tuple(target.shape)}"
        )
    return F.l1_loss(lr, target)
