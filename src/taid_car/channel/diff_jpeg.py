"""A differentiable JPEG whose forward pass is Pillow's libjpeg(-turbo) decode, to train through.

``diff_jpeg(images, quality, subsampling)`` codes a batch of images on the 8-bit grid and returns
the decoded batch. It runs two paths over the same stages:

* the **exact path** (integers, no gradient) is libjpeg-turbo's baseline pipeline as Pillow calls
  it (``jpeg_set_quality(q, force_baseline=TRUE)``, islow DCT, default decompression): JFIF
  RGB -> YCbCr in 16-bit fixed point (jccolor.c), chroma box downsampling with the alternating
  bias (jcsample.c), edge replication to whole blocks as jcprepct.c/jcsample.c do it, the
  integer islow forward DCT (jfdctint.c), quantisation rounding half away from zero with the
  standard tables scaled as jpeg_quality_scaling/jpeg_add_quant_table do (integer division,
  [1, 255]), the integer islow inverse DCT with its range limit (jidctint.c), "fancy"
  triangular chroma upsampling (jdsample.c) and fixed-point YCbCr -> RGB (jdcolor.c). It gives
  the forward value, equal to Pillow's decode;
* the **smooth path** (floats) runs the same stages without their integer rounding: float colour
  matrices, plain averages, the orthonormal 8x8 DCT, the triangular filter. It gives the
  gradient: identity through every 8-bit rounding and clamp, and at the quantiser the derivative
  of the cubic rounding of Shin & Song / Reich et al. (``3 r**2``, ``r`` = x - round(x) of the
  float coefficient over its quantisation step, in [-0.5, 0.5]), so that coefficients JPEG
  zeroes pass (almost) nothing.

Shapes: images (B, C, H, W), C = 3 (RGB) or 1 (gray: luminance only), any H, W >= 1. Pixels are
handled in [0, 255] inside; blocks are (..., nby, nbx, 8, 8) with coefficients in natural
(row-major) order, rows = vertical frequency.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["STD_CHROMA_TABLE", "STD_LUMA_TABLE", "SUBSAMPLING_FACTORS", "code", "diff_jpeg", "quality_scaling",
           "quant_tables"]

#: ITU-T T.81 Annex K tables (libjpeg's jcparam.c), natural order: row = vertical frequency.
STD_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
STD_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
) + ((99,) * 8,) * 4

#: chroma subsampling name -> (vertical, horizontal) factor of the chroma planes
SUBSAMPLING_FACTORS = {"4:4:4": (1, 1), "4:2:2": (1, 2), "4:2:0": (2, 2)}

# Fixed-point constants of libjpeg (SCALEBITS = 16 for colour, CONST_BITS = 13 for the islow DCTs).
_SCALEBITS = 16
_CONST_BITS, _PASS1_BITS = 13, 2


def _fix(x: float, bits: int) -> int:
    """libjpeg's FIX(x) for x >= 0; a negative constant is written -FIX(|x|) there, as here."""
    return int(x * (1 << bits) + 0.5) if x >= 0 else -_fix(-x, bits)


# ---------------------------------------------------------------------------------------------
# Quantisation tables


def quality_scaling(quality: int) -> int:
    """libjpeg's jpeg_quality_scaling: quality 1..100 -> table scale in percent (integer)."""
    quality = min(max(int(quality), 1), 100)
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def quant_tables(quality: int | Tensor, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """The luma and chroma tables libjpeg writes at ``quality`` (an int, or a (B,) tensor of ints),
    int64, natural order, shape (8, 8) or (B, 8, 8): ``(base * scale + 50) // 100`` clamped to
    [1, 255] (jpeg_add_quant_table with force_baseline)."""
    if isinstance(quality, Tensor):
        scales = torch.tensor([quality_scaling(q) for q in quality.flatten().tolist()], dtype=torch.int64)
        scales = scales.view(-1, 1, 1)
    else:
        scales = torch.tensor(quality_scaling(quality), dtype=torch.int64)
    tables = []
    for base in (STD_LUMA_TABLE, STD_CHROMA_TABLE):
        scaled = (torch.tensor(base, dtype=torch.int64) * scales + 50) // 100
        tables.append(scaled.clamp(1, 255).to(device))
    return tables[0], tables[1]


# ---------------------------------------------------------------------------------------------
# Colour conversion (JFIF YCbCr), on [0, 255] planes (B, 3, H, W)


def rgb_to_ycbcr(rgb: Tensor, exact: bool) -> Tensor:
    """JFIF RGB -> YCbCr. ``exact``: libjpeg's jccolor.c on integers (16-bit fixed point, Y rounded
    half up, Cb/Cr with the 0.5 - epsilon fudge); else the float matrix."""
    coefficients = ((0.29900, 0.58700, 0.11400), (-0.16874, -0.33126, 0.50000), (0.50000, -0.41869, -0.08131))
    r, g, b = rgb.unbind(1)
    planes = []
    for i, (kr, kg, kb) in enumerate(coefficients):
        if exact:
            one_half = 1 << (_SCALEBITS - 1)
            offset = one_half if i == 0 else (128 << _SCALEBITS) + one_half - 1
            acc = _fix(kr, _SCALEBITS) * r + _fix(kg, _SCALEBITS) * g + _fix(kb, _SCALEBITS) * b + offset
            planes.append(acc >> _SCALEBITS)
        else:
            planes.append(kr * r + kg * g + kb * b + (0.0 if i == 0 else 128.0))
    return torch.stack(planes, 1)


def ycbcr_to_rgb(ycc: Tensor, exact: bool) -> Tensor:
    """JFIF YCbCr -> RGB. ``exact``: libjpeg's jdcolor.c tables (R and B offsets rounded to the
    nearest integer, G in 16-bit fixed point) and the range limit to [0, 255]; else the float
    matrix, unclamped."""
    y, cb, cr = ycc.unbind(1)
    if not exact:
        cb, cr = cb - 128.0, cr - 128.0
        return torch.stack((y + 1.402 * cr, y - 0.34414 * cb - 0.71414 * cr, y + 1.772 * cb), 1)
    one_half = 1 << (_SCALEBITS - 1)
    cb, cr = cb - 128, cr - 128
    red = y + ((_fix(1.40200, _SCALEBITS) * cr + one_half) >> _SCALEBITS)
    blue = y + ((_fix(1.77200, _SCALEBITS) * cb + one_half) >> _SCALEBITS)
    green = y + ((-_fix(0.34414, _SCALEBITS) * cb + one_half - _fix(0.71414, _SCALEBITS) * cr) >> _SCALEBITS)
    return torch.stack((red, green, blue), 1).clamp(0, 255)


# ---------------------------------------------------------------------------------------------
# Edge replication, chroma down- and upsampling, on planes (..., h, w)


def replicate_to(plane: Tensor, height: int, width: int) -> Tensor:
    """Pad the last two dims to (height, width) by repeating the last row and column (libjpeg's
    expand_right_edge / expand_bottom_edge); differentiable, any dtype."""
    h, w = plane.shape[-2:]
    if (h, w) == (height, width):
        return plane
    rows = torch.arange(height, device=plane.device).clamp(max=h - 1)
    cols = torch.arange(width, device=plane.device).clamp(max=w - 1)
    return plane.index_select(-2, rows).index_select(-1, cols)


def downsample(plane: Tensor, fv: int, fh: int, exact: bool) -> Tensor:
    """Average fv x fh boxes (dims divisible). ``exact``: libjpeg's jcsample.c integer mean with the
    alternating bias (h2v2: 1, 2, 1, ...; h2v1: 0, 1, 0, ... along a row); else the float mean."""
    if (fv, fh) == (1, 1):
        return plane
    total = sum(plane[..., i::fv, j::fh] for i in range(fv) for j in range(fh))
    if not exact:
        return total / (fv * fh)
    columns = torch.arange(total.shape[-1], device=plane.device)
    bias = (fv * fh) // 2 - 1 + columns % 2
    return (total + bias) >> int(math.log2(fv * fh))


def fancy_upsample(plane: Tensor, fv: int, fh: int, exact: bool) -> Tensor:
    """libjpeg's default decoder upsampling (jdsample.c) of the real chroma samples (..., h, w) to
    (..., fv * h, fh * w): the triangular 3/4, 1/4 filter along each subsampled axis, edges
    replicated; ``exact`` adds its rounding (h2v2: (.. + 8 or 7) >> 4, h2v1: (.. + 1 or 2) >> 2).
    Widths of 1 or 2 samples are box-replicated, as libjpeg does."""
    if (fv, fh) == (1, 1):
        return plane
    if plane.shape[-1] <= 2:
        return plane.repeat_interleave(fv, -2).repeat_interleave(fh, -1)
    h, w = plane.shape[-2:]
    rows = torch.arange(-1, h + 1, device=plane.device).clamp(0, h - 1)  # one replicated row before and after
    cols = torch.arange(-1, w + 1, device=plane.device).clamp(0, w - 1)
    padded = plane.index_select(-2, rows).index_select(-1, cols)
    if fv == 2:  # vertical pass, kept at 4x scale: 3 * nearer + further
        mid = padded[..., 1:-1, :]
        sums = torch.stack((3 * mid + padded[..., :-2, :], 3 * mid + padded[..., 2:, :]), -2).flatten(-3, -2)
    else:
        sums = padded[..., 1:-1, :]
    mid = sums[..., 1:-1]
    left, right = 3 * mid + sums[..., :-2], 3 * mid + sums[..., 2:]
    if fv == 2:
        scale, offsets = 16, (8, 7)
    else:
        scale, offsets = 4, (1, 2)
    if exact:
        shift = int(math.log2(scale))
        left, right = (left + offsets[0]) >> shift, (right + offsets[1]) >> shift
    else:
        left, right = left / scale, right / scale
    return torch.stack((left, right), -1).flatten(-2)


# ---------------------------------------------------------------------------------------------
# 8x8 blocks and the DCTs


def to_blocks(plane: Tensor) -> Tensor:
    """(..., H, W), H and W multiples of 8 -> (..., H/8, W/8, 8, 8)."""
    *lead, h, w = plane.shape
    return plane.reshape(*lead, h // 8, 8, w // 8, 8).transpose(-3, -2)


def from_blocks(blocks: Tensor) -> Tensor:
    """(..., nby, nbx, 8, 8) -> (..., 8 nby, 8 nbx)."""
    *lead, nby, nbx, _, _ = blocks.shape
    return blocks.transpose(-3, -2).reshape(*lead, nby * 8, nbx * 8)


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> Tensor:
    """The orthonormal 8-point DCT-II matrix D[k, n]."""
    k = torch.arange(8, dtype=torch.float64)[:, None]
    n = torch.arange(8, dtype=torch.float64)[None, :]
    matrix = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    matrix[0] /= math.sqrt(2)
    return matrix.to(dtype=dtype, device=device)


def dct(blocks: Tensor) -> Tensor:
    """Orthonormal 2-D DCT of level-shifted float blocks (..., 8, 8): D X D^T."""
    matrix = _dct_matrix(blocks.dtype, blocks.device)
    return matrix @ blocks @ matrix.T


def idct(coefficients: Tensor) -> Tensor:
    """Inverse of :func:`dct`: D^T C D."""
    matrix = _dct_matrix(coefficients.dtype, coefficients.device)
    return matrix.T @ coefficients @ matrix


_FIX13 = {name: _fix(value, _CONST_BITS) for name, value in {
    "0_298631336": 0.298631336, "0_390180644": 0.390180644, "0_541196100": 0.541196100,
    "0_765366865": 0.765366865, "0_899976223": 0.899976223, "1_175875602": 1.175875602,
    "1_501321110": 1.501321110, "1_847759065": 1.847759065, "1_961570560": 1.961570560,
    "2_053119869": 2.053119869, "2_562915447": 2.562915447, "3_072711026": 3.072711026}.items()}


def _descale(x: Tensor, n: int) -> Tensor:
    """libjpeg's DESCALE: x / 2**n rounded half up (arithmetic shift)."""
    return (x + (1 << (n - 1))) >> n


def _odd_part(t4: Tensor, t5: Tensor, t6: Tensor, t7: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The odd-part rotation shared by jfdctint.c and jidctint.c (LL&M figure 8), on t4..t7 as the
    forward DCT names them; returns the four sums before descaling, in the order (7, 5, 3, 1)."""
    c = _FIX13
    z1, z2, z3, z4 = t4 + t7, t5 + t6, t4 + t6, t5 + t7
    z5 = (z3 + z4) * c["1_175875602"]
    t4, t5 = t4 * c["0_298631336"], t5 * c["2_053119869"]
    t6, t7 = t6 * c["3_072711026"], t7 * c["1_501321110"]
    z1, z2 = z1 * -c["0_899976223"], z2 * -c["2_562915447"]
    z3, z4 = z3 * -c["1_961570560"] + z5, z4 * -c["0_390180644"] + z5
    return t4 + z1 + z3, t5 + z2 + z4, t6 + z2 + z3, t7 + z1 + z4


def _fdct_islow_1d(x: Tensor, first_pass: bool) -> Tensor:
    """One pass of jpeg_fdct_islow along the last dim (int64)."""
    d = x.unbind(-1)
    t0, t7, t1, t6 = d[0] + d[7], d[0] - d[7], d[1] + d[6], d[1] - d[6]
    t2, t5, t3, t4 = d[2] + d[5], d[2] - d[5], d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    if first_pass:
        out0, out4, shift = (t10 + t11) << _PASS1_BITS, (t10 - t11) << _PASS1_BITS, _CONST_BITS - _PASS1_BITS
    else:
        out0, out4 = _descale(t10 + t11, _PASS1_BITS), _descale(t10 - t11, _PASS1_BITS)
        shift = _CONST_BITS + _PASS1_BITS
    z1 = (t12 + t13) * _FIX13["0_541196100"]
    out2 = _descale(z1 + t13 * _FIX13["0_765366865"], shift)
    out6 = _descale(z1 - t12 * _FIX13["1_847759065"], shift)
    out7, out5, out3, out1 = (_descale(v, shift) for v in _odd_part(t4, t5, t6, t7))
    return torch.stack((out0, out1, out2, out3, out4, out5, out6, out7), -1)


def fdct_islow(blocks: Tensor) -> Tensor:
    """libjpeg's integer forward DCT of level-shifted int64 blocks (..., 8, 8): rows, then columns;
    the result is 8x the orthonormal DCT, rounded as jfdctint.c rounds it."""
    rows = _fdct_islow_1d(blocks, first_pass=True)
    return _fdct_islow_1d(rows.transpose(-1, -2), first_pass=False).transpose(-1, -2)


def _idct_islow_1d(x: Tensor, shift: int) -> Tensor:
    """One pass of jpeg_idct_islow along the last dim (int64), outputs descaled by ``shift``."""
    d = x.unbind(-1)
    z1 = (d[2] + d[6]) * _FIX13["0_541196100"]
    t2, t3 = z1 - d[6] * _FIX13["1_847759065"], z1 + d[2] * _FIX13["0_765366865"]
    t0, t1 = (d[0] + d[4]) << _CONST_BITS, (d[0] - d[4]) << _CONST_BITS
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_part(d[7], d[5], d[3], d[1])  # jidctint's tmp0..tmp3
    return torch.stack([_descale(v, shift) for v in (t10 + o3, t11 + o2, t12 + o1, t13 + o0,
                                                      t13 - o0, t12 - o1, t11 - o2, t10 - o3)], -1)


def idct_islow(dequantized: Tensor) -> Tensor:
    """libjpeg's integer inverse DCT (jidctint.c) of dequantised int64 blocks (..., 8, 8):
    columns, then rows; returns samples in [0, 255] after its range limit (level shift +128,
    values wrapped modulo 1024 and clamped, as its lookup table does)."""
    columns = _idct_islow_1d(dequantized.transpose(-1, -2), _CONST_BITS - _PASS1_BITS).transpose(-1, -2)
    samples = _idct_islow_1d(columns, _CONST_BITS + _PASS1_BITS + 3)
    return (torch.remainder(samples + 512, 1024) - 512 + 128).clamp(0, 255)


def quantize_exact(coefficients8: Tensor, table: Tensor) -> Tensor:
    """libjpeg's quantisation of the islow output (8x scaled): |c| / (8 q) rounded half up, sign
    restored (jcdctmgr.c's reciprocal division equals this for every 16-bit input)."""
    divisor = 8 * table
    return torch.sign(coefficients8) * ((coefficients8.abs() + divisor // 2) // divisor)


# ---------------------------------------------------------------------------------------------
# The codec


def cubic_rounding(scaled: Tensor) -> Tensor:
    """Shin & Song's differentiable rounding (used by Reich et al. and kornia):
    round(x) + (x - round(x))**3, derivative 3 (x - round(x))**2."""
    rounded = torch.round(scaled).detach()
    return rounded + (scaled - rounded) ** 3


def _plane_layout(height: int, width: int, factors: tuple[int, int]) -> dict:
    """Sizes of one component subsampled by ``factors`` (fv, fh) in an image height x width:
    ``real`` (its samples, the ones the decoder upsamples), ``padded`` (the full-resolution size
    the encoder replicates to before downsampling: an even row count, whole blocks across, as
    jcprepct.c and jcsample.c's expand_right_edge do) and ``blocks`` (whole 8x8 blocks)."""
    fv, fh = factors
    real = (-(-height // fv), -(-width // fh))
    blocks = (-(-real[0] // 8) * 8, -(-real[1] // 8) * 8)
    return {"real": real, "padded": (real[0] * fv, blocks[1] * fh), "blocks": blocks}


def _encode_plane(plane: Tensor, factors: tuple[int, int], exact: bool) -> Tensor:
    """One component (B, H, W) in [0, 255] -> its level-shifted 8x8 blocks (B, nby, nbx, 8, 8):
    replicated to the encoder's padded size, downsampled, and the downsampled plane replicated to
    whole blocks down (jcprepct.c's expand_bottom_edge)."""
    layout = _plane_layout(plane.shape[-2], plane.shape[-1], factors)
    plane = downsample(replicate_to(plane, *layout["padded"]), *factors, exact=exact)
    return to_blocks(replicate_to(plane, *layout["blocks"]) - 128)


def _decode_plane(blocks: Tensor, height: int, width: int, factors: tuple[int, int], exact: bool) -> Tensor:
    """Blocks of decoded samples in [0, 255] -> the component's (B, H, W) plane: cropped to its real
    samples, upsampled as libjpeg's decoder does, cropped to the image."""
    layout = _plane_layout(height, width, factors)
    plane = from_blocks(blocks)[..., : layout["real"][0], : layout["real"][1]]
    return fancy_upsample(plane, *factors, exact=exact)[..., :height, :width]


def _code_plane(blocks: Tensor, table: Tensor, exact: bool) -> Tensor:
    """Level-shifted blocks -> DCT, quantisation with ``table``, dequantisation, inverse DCT ->
    decoded samples in [0, 255]. ``exact``: libjpeg's integer islow DCTs and rounding; else the
    orthonormal float DCTs and the cubic rounding."""
    if exact:
        return idct_islow(quantize_exact(fdct_islow(blocks), table) * table)
    return idct(cubic_rounding(dct(blocks) / table) * table) + 128


def code(pixels: Tensor, quality: int | Tensor, subsampling: str, exact: bool) -> Tensor:
    """JPEG-code and decode ``pixels`` (B, C, H, W) in [0, 255], C = 3 RGB or 1 gray.

    ``exact``: int64 in, libjpeg-turbo's integer pipeline, int64 out in [0, 255] (Pillow's decode).
    Else float in, the smooth codec (float stages, cubic rounding; no 8-bit rounding or clamp),
    float out: the function whose gradient :func:`diff_jpeg` passes back."""
    height, width = pixels.shape[-2:]
    luma, chroma = quant_tables(quality, pixels.device)
    if luma.dim() == 3:  # one table per image: broadcast over the block grid
        luma, chroma = luma[:, None, None], chroma[:, None, None]
    if pixels.shape[1] == 3:
        pixels = rgb_to_ycbcr(pixels, exact=exact)
        factors = [(1, 1)] + [SUBSAMPLING_FACTORS[subsampling]] * 2
    else:
        factors = [(1, 1)]
    planes = []
    for index, plane_factors in enumerate(factors):
        blocks = _encode_plane(pixels[:, index], plane_factors, exact=exact)
        decoded = _code_plane(blocks, luma if index == 0 else chroma, exact=exact)
        planes.append(_decode_plane(decoded, height, width, plane_factors, exact=exact))
    decoded = torch.stack(planes, 1)
    return ycbcr_to_rgb(decoded, exact=exact) if pixels.shape[1] == 3 else decoded


def _check_quality(quality: int | Tensor, batch: int) -> None:
    values = quality.tolist() if isinstance(quality, Tensor) else [quality]
    if isinstance(quality, Tensor) and (quality.dim() != 1 or quality.numel() != batch):
        raise ValueError(f"diff_jpeg: a quality tensor holds one quality per image, shape ({batch},), "
                         f"got shape {tuple(quality.shape)}")
    for value in values:
        if isinstance(value, bool) or int(value) != value or not 1 <= value <= 100:
            raise ValueError(f"diff_jpeg: quality must be an integer in 1..100, got {value!r}")


def diff_jpeg(images: Tensor, quality: int | Tensor, subsampling: str = "4:2:0") -> Tensor:
    """Code ``images`` (B, C, H, W) float in [0, 1] on the 8-bit grid (C = 3 RGB or 1 gray) with
    baseline JPEG at ``quality`` (an int 1..100, or a (B,) tensor of ints, one per image) and
    chroma ``subsampling`` (4:2:0, 4:2:2 or 4:4:4; ignored for gray), and decode them.

    Returns (B, C, H, W) in the input's float dtype, exactly on the 8-bit grid: the value is
    Pillow's libjpeg-turbo decode, the gradient with respect to ``images`` that of the smooth
    codec (``code(..., exact=False)``) at the same input."""
    if images.dim() != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
        raise ValueError(f"diff_jpeg takes a float batch (B, 1 or 3, H, W), got {images.dtype} "
                         f"of shape {tuple(images.shape)}")
    if subsampling not in SUBSAMPLING_FACTORS:
        raise ValueError(f"diff_jpeg: subsampling must be one of {', '.join(SUBSAMPLING_FACTORS)}, "
                         f"got {subsampling!r}")
    _check_quality(quality, images.shape[0])
    with torch.autocast(images.device.type, enabled=False):
        pixels = images.to(torch.float64 if images.dtype == torch.float64 else torch.float32) * 255
        exact = code(torch.round(pixels.detach()).clamp(0, 255).to(torch.int64), quality, subsampling, exact=True)
        decoded = exact.to(pixels.dtype)
        if torch.is_grad_enabled() and images.requires_grad:  # the smooth path only gives the gradient
            smooth = code(pixels, quality, subsampling, exact=False)
            decoded = decoded + (smooth - smooth.detach())  # value: exact; gradient: smooth
    return (decoded / 255).to(images.dtype)
