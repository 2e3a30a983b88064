"""Side-by-side LR and SR crops of the trained runs of a sweep, one figure per scale.

    python -m taid_car.crops multirun/<date> --image ../shared/data/Set5/butterfly.png --box 96 64 96
    python -m taid_car.crops outputs/car_x4/<date> outputs/taid_x4/<date> --image img.png --output figs/
    python -m taid_car.crops multirun/<date> --image img.png --channel jpeg --quality 50   # every LR as JPEG q50

For every finished run below the given directories (as found by ``taid_car.compare``), the
checkpoint ``taid_car.run`` tested (the best one; ``last.ckpt`` when there is none) is loaded,
the image is downscaled, stored through the run's LR channel (``--channel jpeg --quality 50``
stores every run's LR and the Bicubic & Bicubic LR alike) and upscaled, and the same HR box is cut
from every result. Each figure has one column per method, Bicubic & Bicubic first and the HR last; the top
row shows the LR (nearest-neighbour enlarged ``scale`` times, so one LR pixel is a visible
block), the bottom row the SR. Titles give the whole-image PSNR-Y of the SR (border = scale)
and the LR fidelity (PSNR-Y of the LR against the bicubic LR).

Writes ``crops_x<scale>_<image>.png`` (``crops_x<scale>_<image>_jpeg_q50_420.png`` through a
given channel) into the common parent directory (or ``--output``); an
existing file there is only replaced with ``--overwrite`` (every name is checked before anything is
written). A box moved or resized to fit the image and the scale's grid is said in one warning.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from taid_car.atomic_write import write_atomically
from taid_car.channel import LRChannel, build_channel
from taid_car.data.io import ImageError, read_image
from taid_car.errors import ConfigError, UsageError
from taid_car.file_batch import refuse_existing
from taid_car.models.trained import TrainedPair
from taid_car.models.trained import load_pair as load_trained_pair
from taid_car.rescale import channel_options
from taid_car.runs import NoRunsError, Run, collect_runs, natural_key, tested_checkpoint
from taid_car.scoring.pipeline import bicubic_reference, rescale_and_score, score_sr

REFERENCE = "Bicubic & Bicubic"

log = logging.getLogger(__name__)


@dataclass
class Rendition:
    """One method's result on the image: LR (1,3,H/s,W/s) and SR (1,3,H,W) in [0,1], scores in dB."""

    method: str
    lr: torch.Tensor
    sr: torch.Tensor
    psnr_y: float
    lr_psnr_y: float


def aligned_box(box: Sequence[int], scale: int, height: int, width: int) -> tuple[int, int, int]:
    """(top, left, size) in HR px moved down to multiples of ``scale`` and clipped into the image."""
    top, left, size = (int(v) for v in box)
    size = max(scale, min(size, height, width) // scale * scale)
    top = min(max(top, 0), height - size) // scale * scale
    left = min(max(left, 0), width - size) // scale * scale
    return top, left, size


def box_change(box: Sequence[int], scale: int, height: int, width: int) -> str | None:
    """Why :func:`aligned_box` moves or resizes ``box`` (top, left, size in HR px) on an image of
    ``height`` x ``width`` at ``scale`` (None when it keeps it)."""
    top, left, size = (int(v) for v in box)
    if aligned_box(box, scale, height, width) == (top, left, size):
        return None
    reasons = []
    if size > min(height, width):
        reasons.append("is larger than the image")
    elif top < 0 or left < 0 or top + size > height or left + size > width:
        reasons.append("reaches outside the image")
    if size < scale:
        reasons.append(f"is smaller than one LR pixel ({scale} HR px)")
    elif top % scale or left % scale or size % scale:
        reasons.append(f"is off the x{scale} grid (multiples of {scale})")
    return " and ".join(reasons) or "does not fit"


def load_pair(run: Run) -> TrainedPair:
    """The pair a finished run tested, labelled with the run's method."""
    pair = load_trained_pair(tested_checkpoint(run.path))
    pair.method = run.method
    return pair


def render(hr: torch.Tensor, is_gray: bool, scale: int, pairs: Sequence[TrainedPair],
           reference_channel: LRChannel | None = None) -> list[Rendition]:
    """Bicubic & Bicubic (its LR through ``reference_channel``, png by default) plus every pair's
    downscale -> its LR channel -> upscale of ``hr`` (1,3,H,W), each through
    :func:`~taid_car.scoring.pipeline.rescale_and_score` (reference from its parts)."""
    bicubic_lr, bicubic_sr = bicubic_reference(hr, scale, reference_channel)
    reference = score_sr(bicubic_sr, hr, scale, torch.tensor([is_gray]))["psnr_y"]
    renditions = [Rendition(REFERENCE, bicubic_lr, bicubic_sr.clamp(0, 1), float(reference), math.inf)]
    for pair in pairs:
        out = rescale_and_score(pair.downscaler, pair.upscaler, hr, scale, is_gray, reference=False,
                                channel=pair.channel)  # the LR as its checkpoint's channel stores it
        renditions.append(Rendition(pair.method, out.lr, out.sr.clamp(0, 1),
                                    float(out.scores["psnr_y"]), float(out.scores["lr_psnr_y"])))
    return renditions


def _show(ax, image: torch.Tensor, title: str) -> None:
    ax.imshow(image[0].permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def crop_figure(
    renditions: Sequence[Rendition], hr: torch.Tensor, scale: int, box: tuple[int, int, int], name: str,
    channel: LRChannel | None = None,
) -> Figure:
    """Two rows (LR enlarged, SR) x one column per rendition plus an HR column; the title says
    which LR channel stored the LRs (``channel``: every one; None: each run's own)."""
    top, left, size = box
    columns = len(renditions) + 1
    figure = Figure(figsize=(2.3 * columns, 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, columns, squeeze=False)
    t, lft, n = top // scale, left // scale, size // scale
    for col, r in enumerate(renditions):
        lr_crop = F.interpolate(r.lr[..., t:t + n, lft:lft + n], scale_factor=scale, mode="nearest")
        fidelity = "LR = bicubic LR" if math.isinf(r.lr_psnr_y) else f"LR vs bicubic {r.lr_psnr_y:.1f} dB"
        _show(axes[0, col], lr_crop, f"{r.method}\n{fidelity}")
        _show(axes[1, col], r.sr[..., top:top + size, left:left + size], f"SR {r.psnr_y:.2f} dB")
    hr_crop = hr[..., top:top + size, left:left + size]
    _show(axes[0, -1], hr_crop, "HR")
    _show(axes[1, -1], hr_crop, "HR")
    axes[0, 0].set_ylabel(f"LR (nearest x{scale})")
    axes[1, 0].set_ylabel("SR")
    stored = f"every LR stored as {channel.label}" if channel is not None else "each LR through its run's channel"
    figure.suptitle(f"{name}, x{scale}: box {size}x{size} at ({top}, {left}) HR px; "
                    f"PSNR-Y over the whole image; {stored}", fontsize=9)
    return figure


def write_crops(
    paths: Sequence[str | Path], image: str | Path, box: Sequence[int], output: str | Path | None = None,
    overwrite: bool = False, channel: LRChannel | None = None,
) -> list[Path]:
    """One ``crops_x<scale>_<image>.png`` per scale found among the finished runs under ``paths``;
    a taken output name is a :class:`~taid_car.errors.UsageError` (before anything is written)
    unless ``overwrite``, and then replaced, never written through. ``channel`` (e.g. JPEG at
    quality 50) stores every pair's LR and the Bicubic & Bicubic LR alike; without it each pair
    keeps its checkpoint's own channel and the reference is png."""
    runs, base = collect_runs(paths)
    finished = [run for run in runs if not run.failed]
    if not finished:
        raise NoRunsError(f"no finished run under {', '.join(map(str, paths))}")
    out_dir = Path(output) if output else base
    scales = sorted({run.scale for run in finished})
    names = {scale: crops_name(scale, Path(image).stem, channel) for scale in scales}
    refuse_existing([out_dir / name for name in names.values()], overwrite)
    loaded = read_image(image)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for scale in scales:
        at_scale = sorted((r for r in finished if r.scale == scale), key=lambda r: natural_key(r.method))
        pairs = [load_pair(run) for run in at_scale]
        if channel is not None:
            pairs = [pair.through(channel) for pair in pairs]
        multiple = math.lcm(scale, *(pair.crop for pair in pairs))
        height, width = (s // multiple * multiple for s in loaded.tensor.shape[-2:])
        if min(height, width) < multiple:
            raise ImageError(loaded.path, f"too small for x{scale} (needs at least {multiple} px a side)")
        hr = loaded.tensor[None, :, :height, :width]
        renditions = render(hr, loaded.is_gray, scale, pairs, channel)
        cut = aligned_box(box, scale, height, width)
        change = box_change(box, scale, height, width)
        if change is not None:
            log.warning("x%d, image %dx%d (HxW): --box %s (top left size, HR px) %s: using --box %s",
                        scale, height, width, " ".join(str(int(v)) for v in box), change,
                        " ".join(map(str, cut)))
        figure = crop_figure(renditions, hr, scale, cut, loaded.path.name, channel)
        path = out_dir / names[scale]
        written.append(write_atomically(path, functools.partial(figure.savefig, format="png", dpi=110),
                                        overwrite=overwrite))
    return written


def crops_name(scale: int, stem: str, channel: LRChannel | None = None) -> str:
    """``crops_x<scale>_<image>.png``; through a given channel ``crops_x<scale>_<image>_<channel>.png``
    (e.g. ``_jpeg_q50_420``), so crops under JPEG never replace the clean ones."""
    if channel is None:
        return f"crops_x{scale}_{stem}.png"
    tag = channel.label.replace(":", "").replace(" ", "_")
    return f"crops_x{scale}_{stem}_{tag}.png"


def requested_channel(args: argparse.Namespace) -> LRChannel | None:
    """The channel ``--channel``/``--quality``/``--subsampling`` name (None without ``--channel``)."""
    if args.channel is None:
        if args.quality is not None or args.subsampling is not None:
            raise UsageError("--quality/--subsampling: give --channel jpeg or --channel webp with them")
        return None
    node = {"name": args.channel, **{k: v for k, v in (("quality", args.quality), ("subsampling", args.subsampling))
                                     if v is not None}}
    try:
        return build_channel(node).evaluation()
    except ConfigError as err:
        raise UsageError(f"--channel/--quality/--subsampling: {err}") from err


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taid_car.crops", description=__doc__.split("\n")[0],
                                     parents=[channel_options()])
    parser.add_argument("runs", nargs="+", help="multirun or run directories written by taid_car.run")
    parser.add_argument("--image", required=True, help="HR image file (PNG, BMP, ...)")
    parser.add_argument("--box", nargs=3, type=int, default=(0, 0, 96), metavar=("TOP", "LEFT", "SIZE"),
                        help="HR crop in pixels, aligned down to the scale (default: 0 0 96)")
    parser.add_argument("--output", help="folder for the PNGs (default: the runs' common parent)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing crops_x<scale>_<image>.png files")
    args = parser.parse_args(argv)
    try:
        paths = write_crops(args.runs, args.image, args.box, args.output, args.overwrite, requested_channel(args))
    except (NoRunsError, ImageError, UsageError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"taid_car.crops: error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
