"""MATLAB-exact bicubic ``imresize`` for batched torch tensors (CPU and GPU, differentiable).

Reproduces MATLAB's ``imresize(I, scale, 'bicubic')``:

* Keys cubic convolution kernel with a = -0.5;
* antialiasing when shrinking: the kernel is stretched by ``1/scale`` (width ``4/scale``)
  and its height scaled by ``scale``;
* output pixel ``x`` (1-based) maps to input ``u = x/scale + 0.5*(1 - 1/scale)``;
* symmetric border handling (``aux = [1..n, n..1]`` index mirroring);
* each row of weights normalised to sum to 1;
* dimensions resized one after another, the one with the smaller scale first (ties: rows first).

Each 1-D pass is a dense matrix product with an (out x in) weight matrix in which mirrored
taps are folded back onto their source pixel, so the result is linear in the image and
autograd differentiates it for free. No off-the-shelf library is exact here: PIL and
``torch.nn.functional.interpolate(antialias=True)`` renormalise truncated kernels at the
border instead of mirroring, and ``resize-right`` differs in its support rule.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

KEYS_A = -0.5


def cubic(x: torch.Tensor, a: float = KEYS_A) -> torch.Tensor:
    """Keys cubic convolution kernel, support [-2, 2]; ``a = -0.5`` as in MATLAB."""
    absx = x.abs()
    absx2 = absx * absx
    absx3 = absx2 * absx
    near = (a + 2) * absx3 - (a + 3) * absx2 + 1
    far = a * absx3 - 5 * a * absx2 + 8 * a * absx - 4 * a
    return torch.where(absx <= 1, near, torch.where(absx <= 2, far, torch.zeros_like(x)))


def _output_size(in_size: int, scale: float) -> int:
    return math.ceil(in_size * scale)


@lru_cache(maxsize=64)
def _weights_cached(in_size: int, out_size: int, scale: float, antialias: bool) -> torch.Tensor:
    """Dense (out_size, in_size) float64 resampling matrix for one dimension (CPU)."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel_width = kernel_width / scale
    x = torch.arange(1, out_size + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based
    dist = u[:, None] - indices
    if scale < 1 and antialias:
        weights = scale * cubic(dist * scale)
    else:
        weights = cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric (mirror) padding: aux = [1..n, n..1], index taken modulo 2n.
    period = 2 * in_size
    idx0 = torch.remainder(indices.long() - 1, period)
    idx0 = torch.where(idx0 < in_size, idx0, period - 1 - idx0)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    matrix.scatter_add_(1, idx0, weights)
    return matrix


def resize_weights(
    in_size: int,
    out_size: int,
    scale: float,
    antialias: bool = True,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(out_size, in_size) matrix ``M`` such that ``resized = M @ signal`` along one dimension.

    ``scale`` is output/input (``<1`` shrinks). Rows sum to 1.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"imresize: sizes must be positive, got in={in_size}, out={out_size}")
    matrix = _weights_cached(int(in_size), int(out_size), float(scale), bool(antialias))
    return matrix.to(device=device, dtype=dtype)


def _resolve_sizes(
    height: int, width: int, scale: float | tuple[float, float] | None, size: tuple[int, int] | None
) -> tuple[tuple[float, float], tuple[int, int]]:
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of `scale` or `size`")
    if scale is not None:
        sh, sw = (scale, scale) if isinstance(scale, (int, float)) else scale
        if sh <= 0 or sw <= 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        return (float(sh), float(sw)), (_output_size(height, sh), _output_size(width, sw))
    out_h, out_w = size
    if out_h < 1 or out_w < 1:
        raise ValueError(f"imresize: output size must be positive, got {size}")
    # MATLAB derives the scale from the requested size when only the size is given.
    return (out_h / height, out_w / width), (int(out_h), int(out_w))


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"imresize: expected a torch.Tensor, got {type(image).__name__}")
    if image.ndim < 2:
        raise ValueError(f"imresize: expected (..., H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(
            f"imresize: expected a floating-point image, got {image.dtype}; "
            "convert 8-bit data with .float() / 255 first"
        )


def _passes(height: int, width: int, scales: tuple[float, float]) -> list[int]:
    """Order of 1-D passes as MATLAB does it: smaller scale first, rows first on ties."""
    return [0, 1] if scales[0] <= scales[1] else [1, 0]


def _resize_dim(image: torch.Tensor, dim: int, matrix: torch.Tensor) -> torch.Tensor:
    if dim == 0:  # rows (H): (..., H, W) -> (..., out_h, W)
        return torch.matmul(matrix, image)
    return torch.matmul(image, matrix.transpose(0, 1))


def imresize(
    image: torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """MATLAB ``imresize(image, scale, 'bicubic')`` on a float tensor.

    Args:
        image: (..., H, W) floating tensor, any range (values are not clamped), e.g. (B,C,H,W).
        scale: output/input factor, e.g. ``1/4`` to shrink by 4; or a (scale_h, scale_w) pair.
        size: (out_h, out_w) instead of ``scale``.
        antialias: widen the kernel when shrinking (MATLAB's default ``true``).

    Returns:
        (..., ceil(H*scale), ceil(W*scale)) tensor, same dtype and device; differentiable.
    """
    _check_image(image)
    height, width = image.shape[-2:]
    scales, out_sizes = _resolve_sizes(height, width, scale, size)
    compute_dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    result = image.to(compute_dtype)
    for dim in _passes(height, width, scales):
        in_size = result.shape[-2 + dim]
        matrix = resize_weights(
            in_size, out_sizes[dim], scales[dim], antialias, device=image.device, dtype=compute_dtype
        )
        result = _resize_dim(result, dim, matrix)
    return result.to(image.dtype)


def bicubic_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """HR (..., H, W) -> LR (..., H/scale, W/scale) by MATLAB bicubic; H, W multiples of ``scale``."""
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(
            f"bicubic_downscale: HR size {height}x{width} is not a multiple of scale {scale}"
        )
    return imresize(hr, size=(height // scale, width // scale))


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR (..., h, w) -> (..., h*scale, w*scale) by MATLAB bicubic."""
    height, width = lr.shape[-2:]
    return imresize(lr, size=(height * scale, width * scale))
