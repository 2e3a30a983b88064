"""Super-resolution metrics under the standard protocol (Y channel, 8 bit, border crop).

Conventions, shared by every function here:

* images are RGB tensors ``(B, 3, H, W)`` (or ``(3, H, W)``), float, range [0, 1];
* they are first quantised as an 8-bit PNG would hold them: ``round(clamp(x, 0, 1) * 255)``;
* luminance is MATLAB's ``rgb2ycbcr`` on uint8 input, which returns uint8:
  ``Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255)`` with R, G, B in 0..255;
* a *grayscale* HR image (e.g. Set14 ``bridge``) is scored on its own gray values, as MATLAB
  scripts do for single-channel files, not on the range-compressed Y of a replicated image
  (that would shift PSNR by about 1.3 dB). The SR's gray value is
  ``round((65.481 R + 128.553 G + 24.966 B) / 219)``, which is exact for replicated channels;
* ``crop_border`` pixels (the scale, by convention) are removed from every side;
* PSNR uses peak 255; SSIM (Wang et al. 2004) an 11x11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, data range 255, averaged over the valid (unpadded) region;
* scores are per image, and a set's score is the mean over its images.

:func:`score_pair` gives every score of one SR/HR pair at once (each image quantised and
converted once); :func:`psnr_y`, :func:`ssim_y` and :func:`psnr_rgb` give one score each and
return exactly the same values. Only the conversion an image needs is computed (Y for colour
images, the gray value for gray ones). This module imports nothing but torch (training
accumulates the per-image scores in :class:`taid_car.models.rescaler.PerImageMean`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Y_WEIGHTS = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr, for RGB in [0, 1]

__all__ = [
    "Y_WEIGHTS",
    "detect_gray",
    "gaussian_window",
    "psnr_from_mse",
    "psnr_rgb",
    "psnr_y",
    "quantize_uint8",
    "rgb_to_gray",
    "rgb_to_y",
    "score_pair",
    "score_pairs",
    "scoring_channel",
    "ssim",
    "ssim_rgb",
    "ssim_y",
]


def _as_batch(image: torch.Tensor, name: str) -> torch.Tensor:
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"{name}: expected RGB (B,3,H,W) or (3,H,W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"{name}: expected a float image in [0,1], got dtype {image.dtype}")
    return image


def quantize_uint8(image: torch.Tensor) -> torch.Tensor:
    """[0,1] float -> integer-valued float64 in 0..255, as an 8-bit file would store it."""
    # a fresh float64 copy (even of a float64 image), so the in-place ops never touch the input
    return image.detach().to(torch.float64, copy=True).clamp_(0, 1).mul_(255).round_()


def _weighted_rgb(rgb255: torch.Tensor) -> torch.Tensor:
    # ((w0 R + w1 G) + w2 B), the same operations in the same order as the plain expression
    r, g, b = rgb255.unbind(dim=1)
    out = r * Y_WEIGHTS[0]
    out += g * Y_WEIGHTS[1]
    out += b * Y_WEIGHTS[2]
    return out.unsqueeze(1)


def rgb_to_y(rgb255: torch.Tensor) -> torch.Tensor:
    """MATLAB ``rgb2ycbcr`` luma of 0..255 RGB (B,3,H,W) -> (B,1,H,W) integers in 16..235."""
    return _weighted_rgb(rgb255).div_(255).add_(16).round_()


def rgb_to_gray(rgb255: torch.Tensor) -> torch.Tensor:
    """Luma without offset/range compression -> (B,1,H,W) integers in 0..255 (exact on gray)."""
    return _weighted_rgb(rgb255).div_(219).round_()


def detect_gray(hr: torch.Tensor) -> torch.Tensor:
    """(B,) bool: True where all three channels of the image are identical."""
    hr = _as_batch(hr, "detect_gray")
    return (hr[:, 0] == hr[:, 1]).flatten(1).all(1) & (hr[:, 1] == hr[:, 2]).flatten(1).all(1)


def _gray_mask(hr: torch.Tensor, is_gray: torch.Tensor | bool | list | None) -> torch.Tensor:
    if is_gray is None:
        return detect_gray(hr)
    mask = torch.as_tensor(is_gray, dtype=torch.bool, device=hr.device).reshape(-1)
    if mask.numel() == 1:
        mask = mask.expand(hr.shape[0])
    if mask.numel() != hr.shape[0]:
        raise ValueError(f"is_gray has {mask.numel()} entries for a batch of {hr.shape[0]}")
    return mask


def _luma(rgb255: torch.Tensor, is_gray: torch.Tensor) -> torch.Tensor:
    """Quantised RGB (B,3,H,W) -> (B,1,H,W): Y where ``is_gray`` is False, the gray value where
    True; each image gets only its own conversion."""
    gray = is_gray.reshape(-1).to(device="cpu", dtype=torch.bool)
    if bool(gray.all()):
        return rgb_to_gray(rgb255)
    luma = rgb_to_y(rgb255)
    if bool(gray.any()):
        index = gray.nonzero().reshape(-1).to(rgb255.device)
        luma[index] = rgb_to_gray(rgb255[index])
    return luma


def scoring_channel(image: torch.Tensor, is_gray: torch.Tensor) -> torch.Tensor:
    """8-bit luminance to score on: Y for colour images, gray value for gray ones. (B,1,H,W)."""
    return _luma(quantize_uint8(image), is_gray)


def _crop(image: torch.Tensor, border: int) -> torch.Tensor:
    if border == 0:
        return image
    height, width = image.shape[-2:]
    if height <= 2 * border or width <= 2 * border:
        raise ValueError(f"cannot crop {border} px from each side of a {height}x{width} image")
    return image[..., border:-border, border:-border]


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = _as_batch(pred, "pred"), _as_batch(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return pred, target


def _scoring_pair(pred, target, crop_border: int, is_gray) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked pair -> cropped 8-bit luminance (B,1,h,w) of each, as the protocol scores them."""
    pred, target = _check_pair(pred, target)
    gray = _gray_mask(target, is_gray)
    return (_crop(scoring_channel(pred, gray), crop_border),
            _crop(scoring_channel(target, gray), crop_border))


def psnr_from_mse(mse: torch.Tensor, peak: float = 255.0) -> torch.Tensor:
    """PSNR in dB for a mean squared error on a 0..peak scale (inf where mse == 0)."""
    return 10 * torch.log10(peak**2 / mse)


def _psnr(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # integer-valued float64: every squared difference and every partial sum are exact, so the
    # mean does not depend on the order of the sum (nor on the memory layout of a cropped view)
    return psnr_from_mse((p - t).pow_(2).mean(dim=tuple(range(1, p.ndim))))


def psnr_y(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0, is_gray=None
) -> torch.Tensor:
    """Per-image Y-channel PSNR in dB, (B,). Inputs RGB in [0,1]; see module docstring."""
    p, t = _scoring_pair(pred, target, crop_border, is_gray)
    return _psnr(p, t)


def psnr_rgb(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """Per-image PSNR in dB over all three 8-bit RGB channels, (B,)."""
    pred, target = _check_pair(pred, target)
    p = _crop(quantize_uint8(pred), crop_border)
    t = _crop(quantize_uint8(target), crop_border)
    return _psnr(p, t)


SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _check_ssim_size(luma: torch.Tensor, window: int = SSIM_WINDOW) -> None:
    if min(luma.shape[-2:]) < window:
        raise ValueError(
            f"SSIM needs at least {window}x{window} pixels after cropping, got {tuple(luma.shape[-2:])}"
        )


def ssim_y(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0, is_gray=None
) -> torch.Tensor:
    """Per-image Y-channel SSIM, (B,), in [-1, 1]; Gaussian 11x11, sigma 1.5, valid region."""
    p, t = _scoring_pair(pred, target, crop_border, is_gray)
    _check_ssim_size(p)
    return _ssim_scores([p[:, 0]], t[:, 0])[0]


def ssim_rgb(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """Per-image SSIM over the three 8-bit RGB channels, (B,): each channel's SSIM (the window
    and constants of :func:`ssim_y`), averaged over the channels; for colorization."""
    pred, target = _check_pair(pred, target)
    p = _crop(quantize_uint8(pred), crop_border)
    t = _crop(quantize_uint8(target), crop_border)
    _check_ssim_size(t)
    per_channel = _ssim_scores([p.flatten(0, 1)], t.flatten(0, 1))[0]
    return per_channel.view(-1, 3).mean(dim=1)


def score_pairs(
    preds: Sequence[torch.Tensor], target: torch.Tensor, crop_border: int = 0, is_gray=None
) -> list[dict[str, torch.Tensor]]:
    """:func:`score_pair` of each of ``preds`` against one ``target``, sharing the target's work.

    The target is quantised, converted and filtered (its SSIM mean and variance) once, e.g. for
    a method's SR and the Bicubic SR of the same HR. Returns one dict per pred, in order, each
    exactly what ``score_pair(pred, target, crop_border, is_gray)`` returns.
    """
    target = _as_batch(target, "target")
    gray = _gray_mask(target, is_gray)
    t_rgb = quantize_uint8(target)
    t_luma = _crop(_luma(t_rgb, gray), crop_border)
    _check_ssim_size(t_luma)
    t_rgb = _crop(t_rgb, crop_border)
    psnrs, p_lumas = [], []
    for pred in preds:
        pred, _ = _check_pair(pred, target)
        p_rgb = quantize_uint8(pred)
        p_luma = _crop(_luma(p_rgb, gray), crop_border)
        psnrs.append((_psnr(p_luma, t_luma), _psnr(_crop(p_rgb, crop_border), t_rgb)))
        del p_rgb
        p_lumas.append(p_luma[:, 0])
    ssims = _ssim_scores(p_lumas, t_luma[:, 0]) if p_lumas else []
    return [
        {"psnr_y": py, "ssim_y": s, "psnr_rgb": prgb} for (py, prgb), s in zip(psnrs, ssims)
    ]


def score_pair(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0, is_gray=None
) -> dict[str, torch.Tensor]:
    """Every protocol score of SR ``pred`` against HR ``target``, each image quantised and
    converted once.

    Args:
        pred, target: RGB float tensors (B,3,H,W) or (3,H,W), same shape, nominal range [0,1]
            (clamped, then rounded to 8 bit as a PNG would store them).
        crop_border: pixels removed from every side before scoring (the scale, by convention).
        is_gray: (B,) bools, one bool, or None (detected: all three channels of ``target``
            equal). Gray images are scored on their gray value, colour ones on MATLAB Y.

    Returns:
        ``{"psnr_y": dB, "ssim_y": in [-1, 1], "psnr_rgb": dB}``, each a float64 tensor (B,) on
        the inputs' device, one score per image (``inf`` dB for identical 8-bit images),
        equal to :func:`psnr_y`, :func:`ssim_y` and :func:`psnr_rgb` of the same arguments.

    Raises:
        ValueError: shapes differ or are not RGB, integer dtype, ``is_gray`` of the wrong
            length, or less than 11x11 pixels left after cropping.
    """
    return score_pairs([pred], target, crop_border, is_gray)[0]


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian; its outer product is MATLAB ``fspecial('gaussian', size, sigma)``."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


_FILTER_BLOCK = 16  # outputs per matrix product in the 1-D filter (16..32 are fastest on CPU)


def _banded(taps: torch.Tensor, block: int) -> torch.Tensor:
    """(block + k - 1, block) matrix whose column j holds the k ``taps`` in rows j..j+k-1."""
    k = taps.numel()
    offset = (torch.arange(block + k - 1, device=taps.device)[:, None]
              - torch.arange(block, device=taps.device)[None, :])
    inside = (offset >= 0) & (offset < k)
    return torch.where(inside, taps[offset.clamp(0, k - 1)], torch.zeros((), dtype=taps.dtype, device=taps.device))


def _correlate_rows(x: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """'Valid' 1-D correlation along H of (N, m·block + k - 1, W) -> (N, m·block, W).

    Block i of output rows is ``band.T @ x[:, i·block : i·block + block + k - 1]``: the input
    slabs are strided views of ``x`` (no copy), one batched matrix product in all."""
    width, block = band.shape
    slabs = x.unfold(-2, width, block).transpose(-1, -2)  # (N, m, block + k - 1, W), a view
    return torch.matmul(band.T, slabs).flatten(-3, -2)


def _correlate_cols(x: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """'Valid' 1-D correlation along W of (N, H, m·block + k - 1) -> (N, H, m·block).

    The overlapping (block + k - 1)-wide windows are copied into one matrix (a strided view of
    them is no valid matrix) and multiplied by ``band`` once."""
    width, block = band.shape
    windows = x.unfold(-1, width, block)  # (N, H, m, block + k - 1), overlapping
    return (windows.reshape(-1, width) @ band).view(*x.shape[:-1], -1)


def _gaussian_filter_valid(
    factors: Sequence[tuple[torch.Tensor, torch.Tensor | None]], taps: torch.Tensor
) -> list[torch.Tensor]:
    """Separable 'valid' filtering of each map ``a`` (``b`` None) or product ``a * b``.

    Maps are (N, h, w) float64; each result is (N, h-k+1, w-k+1): two 1-D passes with ``taps``
    (along H, then along W), equal to the 2-D correlation with ``outer(taps, taps)`` up to
    rounding. Each pass is a matrix product with a banded matrix of the taps over blocks of
    outputs: the same k products per output as a convolution, far faster than a float64
    ``conv2d`` on CPU, and unchanged on GPU. Sizes are rounded up to whole blocks with zeros,
    which only add exact zeros to the outputs kept. Maps are filtered one at a time, so the
    temporaries are those of one map.
    """
    n, h, w = factors[0][0].shape
    k = taps.numel()
    ho, wo = h - k + 1, w - k + 1
    band = _banded(taps, _FILTER_BLOCK)
    padded = factors[0][0].new_zeros(
        n, -(-ho // _FILTER_BLOCK) * _FILTER_BLOCK + k - 1, -(-wo // _FILTER_BLOCK) * _FILTER_BLOCK + k - 1
    )
    inner = padded[:, :h, :w]
    out = []
    for a, b in factors:
        if b is None:
            inner.copy_(a)
        else:
            torch.mul(a, b, out=inner)
        along_h = _correlate_rows(padded, band)  # columns past w stay zero: the W padding
        out.append(_correlate_cols(along_h, band)[:, :ho, :wo])
    return out


def _ssim_scores(
    preds: Sequence[torch.Tensor],
    target: torch.Tensor,
    data_range: float = 255.0,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> list[torch.Tensor]:
    """Per-image SSIM (N,) of each (N, h, w) float64 map in ``preds`` against ``target``."""
    taps = gaussian_window(window, sigma).to(target.device)
    factors: list[tuple[torch.Tensor, torch.Tensor | None]] = [(target, None), (target, target)]
    for p in preds:
        factors += [(p, None), (p, p), (p, target)]
    stats = _gaussian_filter_valid(factors, taps)
    mu_t, e_tt = stats[0], stats[1]
    mu_tt = mu_t.square()
    var_t = e_tt - mu_tt
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    scores = []
    for i in range(len(preds)):
        mu_p, e_pp, e_pt = stats[2 + 3 * i : 5 + 3 * i]
        mu_pt = mu_p * mu_t
        mu_pp = mu_p.square()
        cov_term = (e_pt - mu_pt).mul_(2).add_(c2)  # 2 cov + c2
        numerator = mu_pt.mul_(2).add_(c1).mul_(cov_term)  # (2 mu_p mu_t + c1)(2 cov + c2)
        var_term = (e_pp - mu_pp).add_(var_t).add_(c2)  # var_p + var_t + c2
        denominator = mu_pp.add_(mu_tt).add_(c1).mul_(var_term)
        scores.append(numerator.div_(denominator).mean(dim=(-2, -1)))
    return scores


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 255.0,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of single-channel (B,1,H,W) images, (B,).

    Statistics use a separable Gaussian window (two 1-D float64 passes, equal to the 2-D
    ``fspecial`` window up to rounding) over the valid region only (no padding), exactly like
    the reference ``ssim_index.m``. A score, not a loss: inputs are detached.
    """
    if pred.ndim != 4 or pred.shape[1] != 1 or pred.shape != target.shape:
        raise ValueError(
            f"ssim: expected two single-channel (B,1,H,W) images of one shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    _check_ssim_size(pred, window)
    return _ssim_scores(
        [pred[:, 0].detach().double()], target[:, 0].detach().double(), data_range, window, sigma, k1, k2
    )[0]
