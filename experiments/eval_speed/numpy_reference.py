"""Bicubic & Bicubic ×s on a folder of images, scored under the SR protocol, in plain numpy.

An independent implementation (numpy, Pillow to read, scipy.ndimage for the SSIM filter; no
torch, no taid_car) of what ``python -m taid_car.evaluate`` computes for the fixed bicubic
pair, written from the definitions:

* read 8-bit RGB (a single-channel file is gray: it is resized and scored on its one channel);
  crop bottom/right to a multiple of the scale (modcrop);
* MATLAB ``imresize(I, [h w], 'bicubic')``: Keys cubic, a = -0.5; when shrinking by ``s`` the
  kernel is ``s·cubic(s·x)`` with width ``4/s``; output pixel x (1-based) maps to
  ``u = x/s + (1 - 1/s)/2``; taps ``floor(u - width/2) + 0 .. ceil(width) + 1``; weights
  normalised to sum 1; symmetric border (``aux = [1..n, n..1]``); dimensions one after
  another, the smaller scale first (rows first on ties); each output pixel is the sum of its
  weighted contributions (gathered, as MATLAB's ``resizeAlongDim`` does);
* LR = 8-bit quantised downscale of HR; SR = 8-bit quantised upscale of LR;
* Y = ``round(16 + (65.481 R + 128.553 G + 24.966 B) / 255)`` for colour, the gray value for
  gray images; ``scale`` px cropped from every side; PSNR peak 255; SSIM with an 11×11
  Gaussian (σ 1.5) over the valid region, K1 = 0.01, K2 = 0.03, L = 255, float64.

Two arithmetics (``--arith``) for the resizes and the rounding to 8 bit, which differ only
where an exact result lies half-way between two levels:

* ``matlab`` (default): float64 on the 0..255 scale, ties rounded away from zero as MATLAB's
  ``uint8()`` does. ×2/×4 upscaling weights are dyadic fractions, so such exact ties occur
  and are resolved deterministically.
* ``package``: float32 on the [0, 1] scale and ties to even, as taid_car does it (HR read as
  float32 in [0, 1], float32 resampling, ``torch.round``). Exact ties then come out on either
  side by float32 rounding noise, which no second implementation reproduces bit for bit.

    python experiments/eval_speed/numpy_reference.py DIR --scale 4 [--json out.json]
    python experiments/eval_speed/numpy_reference.py DIR --scale 4 --compare results.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import correlate1d

EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
Y_WEIGHTS = (65.481, 128.553, 24.966)


# ----------------------------------------------------------------------------- imresize


def cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (a + 2) * ax3 - (a + 3) * ax2 + 1
    far = a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a
    return np.where(ax <= 1, near, np.where(ax <= 2, far, 0.0))


def contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``contributions``: (out_len, taps) weights and 0-based source indices."""
    width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based
    dist = u[:, None] - indices
    weights = scale * cubic(scale * dist) if scale < 1 else cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])  # symmetric border
    indices = aux[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)  # MATLAB drops all-zero columns
    return weights[:, keep], indices[:, keep]


def resize_along(a: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """out[o] = sum_k weights[o, k] * a[indices[o, k]] along ``axis``."""
    moved = np.moveaxis(a, axis, 0)
    w = weights.astype(a.dtype).reshape(weights.shape + (1,) * (moved.ndim - 1))
    out = np.zeros((weights.shape[0],) + moved.shape[1:], dtype=a.dtype)
    for k in range(weights.shape[1]):
        out += w[:, k] * moved[indices[:, k]]
    return np.moveaxis(out, 0, axis)


def imresize(a: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of (H, W) or (H, W, C) float ``a`` to ``out_hw`` (MATLAB, size given)."""
    scales = [out_hw[0] / a.shape[0], out_hw[1] / a.shape[1]]
    for axis in sorted((0, 1), key=lambda d: scales[d]):  # stable: rows first on ties
        w, idx = contributions(a.shape[axis], out_hw[axis], scales[axis])
        a = resize_along(a, axis, w, idx)
    return a


# ----------------------------------------------------------------------------- protocol


class Arith:
    """How images are held while resized and how they are rounded to 8 bit."""

    def __init__(self, name: str) -> None:
        if name not in ("matlab", "package"):
            raise ValueError(f"unknown arithmetic {name!r}")
        self.name = name
        self.dtype = np.float64 if name == "matlab" else np.float32
        self.peak = 255.0 if name == "matlab" else 1.0

    def from_uint8(self, a: np.ndarray) -> np.ndarray:
        return a.astype(self.dtype) if self.name == "matlab" else a.astype(np.float32) / np.float32(255)

    def to_uint8(self, a: np.ndarray, lr: bool) -> np.ndarray:
        """Values on this arithmetic's scale -> integer levels 0..255 (float64).

        ``package``: the LR is rounded in float32 (``quantize_8bit`` of the float32 LR), the
        SR in float64 (the metrics' ``quantize_uint8``); both ties to even (``torch.round``)."""
        if self.name == "matlab":
            x = np.clip(a.astype(np.float64), 0, 255)
            return np.floor(x + 0.5)  # round half away from zero (x >= 0), like uint8()
        x = np.clip(a, 0, 1).astype(np.float32 if lr else np.float64)
        return np.round(x * x.dtype.type(255)).astype(np.float64)


def read(path: Path, scale: int) -> tuple[np.ndarray, bool]:
    with Image.open(path) as im:
        gray = im.mode in ("L", "LA", "1", "I;16", "I")
        if im.mode not in ("L", "RGB"):
            if im.mode.startswith("I;16") or im.mode == "I":
                raise ValueError(f"{path}: 16-bit images are not handled by this reference")
            im = im.convert("L" if gray else "RGB")
        a = np.asarray(im, dtype=np.uint8)
    h, w = a.shape[:2]
    return a[: h - h % scale, : w - w % scale], gray


def luma(rgb8: np.ndarray, gray: bool) -> np.ndarray:
    if gray:
        return rgb8.astype(np.float64)
    r, g, b = (rgb8[..., i].astype(np.float64) for i in range(3))
    return np.round(16 + (Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b) / 255)


def crop(a: np.ndarray, border: int) -> np.ndarray:
    return a[border:-border, border:-border] if border else a


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two (h, w) float64 images: separable 11x11 Gaussian, valid region only."""
    g, r = _gaussian(), 5

    def filt(img: np.ndarray) -> np.ndarray:
        return correlate1d(correlate1d(img, g, axis=0), g, axis=1)[r:-r, r:-r]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(smap.mean())


def score_image(path: Path, scale: int, arith: Arith) -> dict:
    hr8, gray = read(path, scale)
    h, w = hr8.shape[:2]
    lr8 = arith.to_uint8(imresize(arith.from_uint8(hr8), (h // scale, w // scale)), lr=True)
    sr8 = arith.to_uint8(imresize(arith.from_uint8(lr8.astype(np.uint8)), (h, w)), lr=False)
    hr8 = hr8.astype(np.float64)
    rgb_sr, rgb_hr = (np.repeat(a[..., None], 3, 2) if gray else a for a in (sr8, hr8))
    y_sr, y_hr = crop(luma(sr8, gray), scale), crop(luma(hr8, gray), scale)
    return {
        "name": path.stem,
        "is_gray": gray,
        "psnr_y": psnr(y_sr, y_hr),
        "ssim_y": ssim(y_sr, y_hr),
        "psnr_rgb": psnr(crop(rgb_sr, scale), crop(rgb_hr, scale)),
    }


def evaluate_folder(folder: Path, scale: int, arith: Arith) -> dict:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise SystemExit(f"{folder}: no images")
    per_image = [score_image(p, scale, arith) for p in files]
    means = {k: sum(r[k] for r in per_image) / len(per_image) for k in ("psnr_y", "ssim_y", "psnr_rgb")}
    return {"set_name": folder.name, "scale": scale, "arith": arith.name, "images": len(files),
            **means, "per_image": per_image}


def compare(ours: dict, results_json: Path) -> dict:
    """Largest per-image and mean differences against taid_car.evaluate's results.json."""
    rows = json.loads(results_json.read_text())
    theirs = next((r for r in rows if r["scale"] == ours["scale"]), rows[0])
    by_name = {r["name"]: r for r in theirs["per_image"]}
    out = {}
    for key, keys_there in (("psnr_y", ("psnr_y", "bicubic_psnr_y")), ("ssim_y", ("ssim_y", "bicubic_ssim_y")),
                            ("psnr_rgb", ("psnr_rgb",))):
        for there in keys_there:
            diffs = [abs(r[key] - by_name[r["name"]][there]) for r in ours["per_image"]]
            worst = max(range(len(diffs)), key=diffs.__getitem__)
            out[f"{key} vs {there}"] = {
                "max_abs_diff": diffs[worst], "worst_image": ours["per_image"][worst]["name"],
                "mean_diff": abs(ours[key] - theirs[there]),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--arith", choices=("matlab", "package"), default="matlab")
    parser.add_argument("--json", type=Path, help="write the scores here")
    parser.add_argument("--compare", type=Path, help="results.json of taid_car.evaluate to compare with")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = evaluate_folder(args.folder, args.scale, Arith(args.arith))
    result["seconds"] = time.perf_counter() - start
    if args.compare:
        result["compare"] = compare(result, args.compare)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text)
    summary = {k: result[k] for k in ("set_name", "scale", "arith", "images", "psnr_y", "ssim_y", "psnr_rgb", "seconds")}
    print(json.dumps({**summary, **({"compare": result["compare"]} if args.compare else {})}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
