"""Fixed antialiasing kernels that CAR's kernel net can start from (a *kernel prior*).

CAR samples tap (ty, tx) of LR pixel (i, j) bilinearly at HR position ``c + (ty - p, tx - p)``
(offsets zero), where ``c = ((i+0.5)s - 0.5, (j+0.5)s - 0.5)`` is the LR pixel's centre in HR
pixels and ``p = k // 2``. For even s that centre falls between two HR pixels, so each tap
averages two neighbours per axis: a tap kernel ``K`` acts on the HR pixels as ``A @ K`` with
``A`` the bilinear matrix of :func:`tap_to_pixel_matrix`.

Bicubic (MATLAB, antialiased) cannot be matched exactly: it has negative lobes and CAR's
kernels are positive. Two positive stand-ins, both separable (outer product of one 1-D kernel):

* ``bicubic``: the non-negative least-squares fit of ``A @ K`` to the 1-D bicubic weights;
* ``gaussian``: a sampled Gaussian whose σ minimises the same squared error.

For the ablation that drops CAR's positivity (``kernel_norm=signed``), ``bicubic_signed`` is the
unconstrained least-squares fit, negative lobes included.

A floor added to the 2-D kernel keeps every tap above CAR's clamp (1e-6), so no tap starts
without a gradient.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from taid_car.ops.imresize import cubic

KERNEL_PRIORS = ("bicubic", "gaussian", "bicubic_signed")

#: Priors with negative taps: only for CAR's ``signed`` kernel norm (an ablation: CAR's are positive).
SIGNED_PRIORS = ("bicubic_signed",)

#: Floor added to every tap of the 2-D prior, relative to its peak (keeps outer taps trainable).
PRIOR_FLOOR = 1e-3


def bicubic_pixel_weights(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR pixel offsets from the LR centre, MATLAB antialiased bicubic weights there), 1-D.

    Offsets are half-integers for even ``scale`` and integers for odd; weights sum to 1.
    """
    half = 2 * scale  # support of the stretched Keys kernel: |e| < 2s
    centre = scale / 2 - 0.5  # LR pixel 0's centre in HR pixel coordinates
    pixels = np.arange(math.floor(centre - half), math.ceil(centre + half) + 1)
    offsets = pixels - centre
    keep = np.abs(offsets) < half
    offsets = offsets[keep]
    weights = cubic(torch.from_numpy(offsets / scale)).numpy() / scale
    return offsets, weights / weights.sum()


def tap_to_pixel_matrix(scale: int, k: int, offsets: np.ndarray) -> np.ndarray:
    """(len(offsets), k) matrix: HR pixel weight per unit weight of each CAR tap (1-D, no offsets)."""
    p = k // 2
    centre = scale / 2 - 0.5
    matrix = np.zeros((len(offsets), k))
    index = {round(float(e) * 2): n for n, e in enumerate(offsets)}  # offsets are multiples of 1/2
    for tap in range(k):
        pos = centre + tap - p
        left = math.floor(pos)
        alpha = pos - left
        for pixel, weight in ((left, 1 - alpha), (left + 1, alpha)):
            row = index.get(round((pixel - centre) * 2))
            if row is not None and weight > 0:
                matrix[row, tap] += weight
    return matrix


def _nnls(matrix: np.ndarray, target: np.ndarray, iterations: int = 5000) -> np.ndarray:
    """Non-negative least squares by projected gradient (tiny problems; exact enough here)."""
    x = np.full(matrix.shape[1], 1.0 / matrix.shape[1])
    step = 1.0 / np.linalg.norm(matrix, 2) ** 2
    for _ in range(iterations):
        x = np.maximum(x - step * matrix.T @ (matrix @ x - target), 0.0)
    return x


def prior_kernel_1d(kind: str, scale: int, k: int) -> np.ndarray:
    """(k,) 1-D tap weights (sum 1) of prior ``kind`` (:data:`KERNEL_PRIORS`) at ``scale``;
    non-negative except for :data:`SIGNED_PRIORS`."""
    if kind not in KERNEL_PRIORS:
        raise ValueError(f"unknown kernel prior {kind!r}; choose one of {KERNEL_PRIORS} (or null)")
    offsets, target = bicubic_pixel_weights(scale)
    matrix = tap_to_pixel_matrix(scale, k, offsets)
    taps = np.arange(k) - k // 2
    if kind == "bicubic":
        weights = _nnls(matrix, target)
    elif kind == "bicubic_signed":
        weights = np.linalg.lstsq(matrix, target, rcond=None)[0]
    else:
        sigmas = np.linspace(0.2, 2.0 * scale, 2000)
        errors = [np.sum((matrix @ _gaussian(taps, s) - target) ** 2) for s in sigmas]
        weights = _gaussian(taps, float(sigmas[int(np.argmin(errors))]))
    return weights / weights.sum()


def _gaussian(taps: np.ndarray, sigma: float) -> np.ndarray:
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    return weights / weights.sum()


def prior_kernel_2d(kind: str, scale: int, k: int) -> torch.Tensor:
    """(k², ) prior kernel, tap t = ty·k + tx, summing to 1 (float32).

    The outer product of the 1-D kernel; positive priors get :data:`PRIOR_FLOOR` times the peak
    added on every tap (all taps > 0).
    """
    one = prior_kernel_1d(kind, scale, k)
    two = np.outer(one, one)
    if kind not in SIGNED_PRIORS:
        two = two + PRIOR_FLOOR * two.max()
    return torch.from_numpy((two / two.sum()).reshape(-1)).float()


def effective_pixel_kernel_1d(kind: str, scale: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(bicubic 1-D weights on HR pixels, the prior's 1-D weights on the same pixels)."""
    offsets, target = bicubic_pixel_weights(scale)
    return target, tap_to_pixel_matrix(scale, k, offsets) @ prior_kernel_1d(kind, scale, k)
