"""The differentiable JPEG (taid_car.channel.diff_jpeg) and kornia's against Pillow's libjpeg.

    .venv/bin/python experiments/jpeg_codec/measure.py --data ../shared/data/Set14 \
        --out experiments/jpeg_codec/results.md

For each quality, on the set's images cropped to multiples of 16 and uncropped, for ``diff_jpeg``
and kornia's ``jpeg_codec_differentiable`` (0.9.2; its output rounded to the 8-bit grid): the mean
RGB PSNR between their decode and Pillow's (the suite's ``codecs.jpeg_roundtrip``: baseline,
standard tables, 4:2:0), the largest absolute error in 8-bit levels, and the lossiness (mean PSNR
of each decode, Pillow's included, against the original). Then the ablation: ``diff_jpeg``'s
exact path with one libjpeg detail at a time replaced by the plain float step, rounded to the
nearest integer where libjpeg stores integers, measured against Pillow on the uncropped images.
Needs kornia (the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import torch
from kornia.enhance import jpeg as kornia_jpeg_module
from kornia.filters import gaussian_blur2d

from taid_car.atomic_write import write_atomically
from taid_car.channel import diff_jpeg as dj
from taid_car.channel.codecs import jpeg_roundtrip
from taid_car.data.io import list_images, load_image
from taid_car.scoring.metrics import psnr_rgb

QUALITIES = (10, 30, 50, 75, 90, 95)


def kornia_jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """kornia's differentiable JPEG (4:2:0 only), its output rounded to the 8-bit grid."""
    with torch.no_grad():
        out = kornia_jpeg_module.jpeg_codec_differentiable(images, torch.tensor([float(quality)]))
    return torch.round(out.clamp(0, 1) * 255) / 255


def kornia_exact_rounding(images: torch.Tensor, quality: int) -> torch.Tensor:
    """kornia's codec with its coefficient rounding exact in the forward pass (its cubic surrogate
    round(x) + (x - round(x))**3 keeps a cube of every rounding residual)."""
    with mock.patch.object(kornia_jpeg_module, "_differentiable_polynomial_rounding", torch.round):
        return kornia_jpeg(images, quality)


def ours(images: torch.Tensor, quality: int) -> torch.Tensor:
    with torch.no_grad():
        return dj.diff_jpeg(images, quality, "4:2:0")


# ------------------------------------------------------------------ ablation: one detail off


def _float_stage(name: str, clamp: bool = False) -> Callable:
    """Stage ``name`` of diff_jpeg whose exact (integer) version is replaced by its float version
    rounded to the nearest integer (clamped to [0, 255] with ``clamp``)."""
    original = getattr(dj, name)

    def stage(x, *args, exact):
        if not exact:
            return original(x, *args, exact=False)
        out = torch.round(original(x.double(), *args, exact=False))
        return (out.clamp(0, 255) if clamp else out).long()

    return stage


def _kornia_downsample(plane, fv, fh, exact):
    """kornia's chroma subsampling: 3x3 Gaussian (sigma 0.5), then bilinear to half size."""
    if (fv, fh) == (1, 1):
        return plane
    x = gaussian_blur2d(plane.double()[:, None], (3, 3), (0.5, 0.5))
    out = torch.nn.functional.interpolate(x, size=(plane.shape[-2] // fv, plane.shape[-1] // fh),
                                          mode="bilinear", align_corners=False)[:, 0]
    return torch.round(out).long() if exact else out


def _box_upsample(plane, fv, fh, exact):
    """Non-fancy upsampling: each chroma sample repeated (libjpeg with do_fancy_upsampling off)."""
    return plane.repeat_interleave(fv, -2).repeat_interleave(fh, -1)


def _whole_mcu_layout(height, width, factors):
    """Padding as kornia does it: the full-resolution image replicated to whole MCUs, and the
    decoder upsampling the whole padded chroma plane before cropping."""
    fv, fh = factors
    blocks = (-(-height // (8 * fv)) * 8, -(-width // (8 * fh)) * 8)
    return {"real": blocks, "padded": (blocks[0] * fv, blocks[1] * fh), "blocks": blocks}


def _tables(transform: Callable) -> Callable:
    """quant_tables with the standard tables passed through ``transform`` (scaled (8, 8) ints
    from base (8, 8) and scale)."""
    def tables(quality, device=None):
        scale = dj.quality_scaling(quality)
        return tuple(transform(torch.tensor(base, dtype=torch.int64), scale).to(device)
                     for base in (dj.STD_LUMA_TABLE, dj.STD_CHROMA_TABLE))
    return tables


ABLATIONS: dict[str, dict[str, Callable]] = {
    "colour in: float YCbCr, rounded": {"rgb_to_ycbcr": _float_stage("rgb_to_ycbcr")},
    "edge padding: whole MCUs at full resolution (kornia)": {"_plane_layout": _whole_mcu_layout},
    "chroma down: box mean rounded (no alternating bias)": {"downsample": _float_stage("downsample")},
    "chroma down: Gaussian + bilinear (kornia)": {"downsample": _kornia_downsample},
    "forward DCT: float": {"fdct_islow": lambda blocks: dj.dct(blocks.double()) * 8,
                           "quantize_exact": lambda c, table, q=dj.quantize_exact: q(c, table).long()},
    "tables: transposed": {"quant_tables": _tables(lambda b, s: ((b * s + 50) // 100).clamp(1, 255).T)},
    "tables: rounded down, no +50": {"quant_tables": _tables(lambda b, s: (b * s // 100).clamp(1, 255))},
    "tables: no [1, 255] clamp": {"quant_tables": _tables(lambda b, s: ((b * s + 50) // 100).clamp(min=1))},
    "inverse DCT: float, rounded": {
        "idct_islow": lambda d: torch.round(dj.idct(d.double()) + 128).clamp(0, 255).long()},
    "chroma up: bilinear without libjpeg's rounding": {"fancy_upsample": _float_stage("fancy_upsample")},
    "chroma up: box (no fancy upsampling)": {"fancy_upsample": _box_upsample},
    "colour out: float RGB, rounded": {"ycbcr_to_rgb": _float_stage("ycbcr_to_rgb", clamp=True)},
}


#: kornia itself, and with the polynomial floor of its table scaling made exact
KORNIA_VARIANTS: dict[str, dict[str, Callable]] = {
    "all of them, and the cubic rounding forward (kornia 0.9.2)": {},
    "kornia 0.9.2 with an exact floor in its table scaling": {"_differentiable_polynomial_floor": torch.floor},
}


@contextlib.contextmanager
def patched(replacements: dict[str, Callable], module=dj) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for name, replacement in replacements.items():
            stack.enter_context(mock.patch.object(module, name, replacement))
        yield


# ------------------------------------------------------------------ measurement


def crop16(image: torch.Tensor) -> torch.Tensor:
    h, w = image.shape[-2:]
    return image[..., : h // 16 * 16, : w // 16 * 16]


def compare(codec: Callable, images: list[torch.Tensor], references: list[torch.Tensor], quality: int) -> dict:
    """Against Pillow's decode: the mean of the per-image PSNRs (inf when one is bit-exact), the
    PSNR of the set's pooled squared error, the largest error in levels and the share of values
    that differ; and the mean PSNR against the original (lossiness)."""
    to_pillow, errors, to_original, squared, differing, count = [], [], [], 0.0, 0, 0
    for image, reference in zip(images, references, strict=True):
        decoded = codec(image, quality)
        to_pillow.append(psnr_rgb(decoded, reference).item())
        difference = (torch.round(decoded * 255) - torch.round(reference * 255)).double()
        errors.append(int(difference.abs().max()))
        squared += difference.square().sum().item()
        differing += int((difference != 0).sum())
        count += difference.numel()
        to_original.append(psnr_rgb(decoded, image).item())
    n = len(images)
    pooled = 10 * math.log10(255**2 * count / squared) if squared else math.inf
    return {"pillow": sum(to_pillow) / n, "pooled": pooled, "max": max(errors), "differing": differing / count,
            "lossiness": sum(to_original) / n}


def _db(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder of images (e.g. Set14)")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    parser.add_argument("--qualities", type=int, nargs="+", default=list(QUALITIES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    originals = [load_image(path)[None] for path in list_images(args.data)]
    lines = [f"{len(originals)} images of {args.data.name}, 4:2:0, RGB PSNR (all three channels, 8 bit).", ""]
    for label, images in (("cropped to multiples of 16", [crop16(i) for i in originals]),
                          ("uncropped", originals)):
        lines += [f"### {args.data.name} {label}", "",
                  ("| QF | ours vs Pillow (dB) | kornia vs Pillow (dB) | ours max err | kornia max err "
                   "| Pillow vs original (dB) | ours vs original | kornia vs original "
                   "| kornia, exact rounding, vs original |"),
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for quality in args.qualities:
            references = [jpeg_roundtrip(image, quality, "4:2:0")[0] for image in images]
            mine = compare(ours, images, references, quality)
            theirs = compare(kornia_jpeg, images, references, quality)
            rounded = compare(kornia_exact_rounding, images, references, quality)
            pillow = sum(psnr_rgb(r, i).item() for r, i in zip(references, images, strict=True)) / len(images)
            lines.append(f"| {quality} | {_db(mine['pillow'])} | {_db(theirs['pillow'])} | {mine['max']} | "
                         f"{theirs['max']} | {pillow:.2f} | {mine['lossiness']:.2f} | {theirs['lossiness']:.2f} | "
                         f"{rounded['lossiness']:.2f} |")
            print(lines[-1], flush=True)
        lines.append("")
    images = originals
    references = {q: [jpeg_roundtrip(image, q, "4:2:0")[0] for image in images] for q in args.qualities}
    lines += [f"### Ablation: one libjpeg detail replaced, {args.data.name} uncropped", "",
              ("Each cell: PSNR vs Pillow of the set's pooled squared error (dB) / largest error (levels) / "
               "share of 8-bit values that differ."), "",
              "| replaced detail | " + " | ".join(f"QF {q}" for q in args.qualities) + " |",
              "|---|" + "---:|" * len(args.qualities)]
    for name, replacements in {"none (diff_jpeg)": {}, **ABLATIONS}.items():
        cells = []
        with patched(replacements):
            for quality in args.qualities:
                result = compare(ours, images, references[quality], quality)
                cells.append(f"{_db(result['pooled'])} / {result['max']} / {100 * result['differing']:.1f}%")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    for name, replacements in KORNIA_VARIANTS.items():
        cells = []
        with patched(replacements, kornia_jpeg_module):
            for quality in args.qualities:
                result = compare(kornia_jpeg, images, references[quality], quality)
                cells.append(f"{_db(result['pooled'])} / {result['max']} / {100 * result['differing']:.1f}%")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    if args.out:
        write_atomically(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
