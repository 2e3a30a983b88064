"""Apply a trained downscaler/upscaler pair to image files: downscale, upscale, round trip.

    # HR images -> 8-bit PNG LR files (same stem, .png), at the checkpoint's scale
    python -m taid_car.rescale downscale --ckpt outputs/car_x4/<run>/checkpoints/last.ckpt \\
        --input photos/ --output photos_lr/

    # the LR stored as JPEG at quality 75 (.jpg files: the channel's own bytes)
    python -m taid_car.rescale downscale --ckpt .../last.ckpt --channel jpeg --quality 75 \\
        --input photos/ --output photos_lr_jpeg/

    # LR files (.png, .jpg, ...) -> SR PNGs (x scale)
    python -m taid_car.rescale upscale --ckpt .../last.ckpt --input photos_lr/ --output photos_sr/

    # HR -> LR (through the LR channel) -> SR, scored per image (Y PSNR/SSIM, LR fidelity, bits
    # per LR pixel) beside Bicubic & Bicubic through the same channel: how do learned downscalers
    # degrade under JPEG relative to bicubic?
    python -m taid_car.rescale roundtrip --ckpt .../last.ckpt --input Set5/ --channel jpeg --quality 75 \\
        --output results/

    # a x2 checkpoint applied recursively: x16 (LR files are tagged with the factor)
    python -m taid_car.rescale downscale --ckpt <x2 run>/checkpoints/last.ckpt --scale 16 \
        --input photos/ --output photos_lr16/

    # colorization (model=taid_color): colour images -> learned 1-channel gray PNGs, and back
    python -m taid_car.rescale downscale --ckpt <taid_color run>/last.ckpt --input photos/ --output gray/
    python -m taid_car.rescale upscale --ckpt <taid_color run>/last.ckpt --input gray/ --output colour/

The LR channel (:mod:`taid_car.channel`): ``downscale`` and ``roundtrip`` store the LR through
the checkpoint's own channel (a training quality range: its middle) unless ``--channel png|jpeg|webp``
(with ``--quality Q``, ``--subsampling 4:2:0``) says another; ``--quality`` alone changes the
quality of the checkpoint's channel. A lossy channel's ``downscale`` writes ``<stem>.jpg`` /
``<stem>.webp``, the codec's bytes exactly (no scale tag); with a recursion only the last LR is
coded.

Common options: ``--scale N`` (a power of the checkpoint's scale: its pair applied recursively,
every intermediate LR on the 8-bit grid), ``--overwrite`` (nothing is replaced without it; all targets are checked before
anything is written), ``--on-error skip|fail`` (a bad file - unreadable, corrupt, too small for the
scale - is reported by name and skipped, or stops the command), ``--device auto|cpu|cuda``,
``--no-progress``.

Conventions: images are RGB tensors (1, 3, H, W), float, [0, 1]. The checkpoint (written by
``python -m taid_car.run``) fixes the scale ``s`` and the HR size multiple its downscaler needs
(8 for CAR); HR images are cropped bottom/right to a multiple of ``lcm(s, multiple)`` first, as
``taid_car.evaluate`` does, and the crop is logged. The LR is rounded to 8 bit before it is
written or upscaled (then stored through the channel), so an LR file holds exactly what the
upscaler saw. Gray sources whose
result has identical channels are written as 1-channel PNGs. Scores follow
:mod:`taid_car.scoring.metrics` (Y of MATLAB ``rgb2ycbcr``, gray images on their own values,
``s`` pixels cropped from every border).

Exit status: 0 when at least one file was processed, 1 when every file failed (or, with
``--on-error fail``, at the first bad file), 2 for a usage error (bad checkpoint, missing or empty
input, existing outputs without ``--overwrite``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from taid_car.atomic_write import write_atomically
from taid_car.channel import CHANNELS, build_channel
from taid_car.channel.codecs import SUBSAMPLINGS
from taid_car.data.io import (
    IMAGE_EXTENSIONS,
    ImageError,
    png_text,
    read_image,
    save_image,
)
from taid_car.errors import ConfigError, UsageError
from taid_car.file_batch import (
    FileFailure,
    Outcome,
    as_file_image,
    collect_inputs,
    described,
    load_hr,
    min_size_check,
    preflight,
    process_files,
    refuse_existing,
    summarize,
    target_paths,
)
from taid_car.models.checkpoints import CheckpointError
from taid_car.models.trained import TrainedPair
from taid_car.roundtrip import run_roundtrip

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the trained pair


def _device(name: str) -> torch.device:
    """:func:`taid_car.evaluate.resolve_device`, its error turned into a :class:`UsageError`."""
    from taid_car.evaluate import resolve_device

    try:
        return resolve_device(name)
    except ValueError as err:
        raise UsageError(f"--device: {err} (use cpu or auto)") from err


def load_pair(ckpt: str | Path, device: torch.device) -> TrainedPair:
    """Rebuild the pair saved by ``taid_car.run`` on ``device`` through the one checkpoint reader
    (:func:`~taid_car.models.trained.load_pair`). What is wrong with the file (unreadable, not the
    suite's, weights that do not fit its config) is a :class:`UsageError` naming it; anything
    else (a bug, out of memory) is raised as it is, not passed off as a bad checkpoint."""
    from taid_car.models.trained import load_pair as load_trained

    path = Path(ckpt)
    if not path.exists():
        raise UsageError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise UsageError(f"checkpoint {path} is not a file")
    try:
        pair = load_trained(path)
    except CheckpointError as err:  # unreadable, refused, not the suite's, config or weights do not fit
        raise UsageError(str(err)) from err
    return pair.to(device)


def at_scale(pair: TrainedPair, scale: int) -> TrainedPair:
    """``--scale``: the pair applied recursively (:meth:`TrainedPair.at_scale`); a factor it
    cannot reach is a :class:`UsageError`."""
    try:
        return pair.at_scale(scale)
    except ValueError as err:
        raise UsageError(f"--scale {scale}: {err}") from err


# --------------------------------------------------------------------------- files


# --------------------------------------------------------------------------- per-file driving


# --------------------------------------------------------------------------- subcommands


def run_downscale(args: argparse.Namespace, pair: TrainedPair) -> int:
    """HR files -> ``<output>/<stem>.png`` 8-bit LR files (``.jpg`` / ``.webp`` through a lossy
    channel: the channel's own file bytes)."""
    files = collect_inputs(args.input)
    lossless = pair.channel.name == "png"
    targets = target_paths(files, Path(args.output), pair.channel.suffix)
    refuse_existing(list(targets.values()), args.overwrite)
    need, why = pair.downscaler.minimum_side()  # a multiple of the crop
    what = f"x{pair.scale} downscaling ({why + '; ' if why else ''}crop multiple {pair.crop})"
    outcome = Outcome()
    files = preflight(files, min_size_check(need, what, args.max_pixels), args.on_error, outcome)

    def work(path: Path) -> None:
        hr, is_gray = load_hr(path, pair, need, what)
        if not lossless:  # the codec's file, byte for byte (gray images as one-channel files)
            write_atomically(targets[path], pair.lr_files(hr)[0], overwrite=args.overwrite)
            return
        lr = pair.downscale(hr)
        save_image(as_file_image(lr, is_gray), targets[path], overwrite=args.overwrite,
                   text={LR_SCALE_KEY: str(pair.scale), LR_METHOD_KEY: pair.method})

    process_files(files, work, args.on_error, outcome, f"downscale x{pair.scale}", args.progress)
    return summarize(outcome, f"downscaled ({pair.method}, x{pair.scale}, LR {pair.channel.label}) into "
                              f"{args.output}:")


#: default --max-pixels: a 4096x4096 HR (a 10000x10000 PNG would ask the model for ~6 GB at once)
MAX_PIXELS = 4096 * 4096

#: PNG text keys ``downscale`` writes into LR files and ``upscale`` checks
LR_SCALE_KEY, LR_METHOD_KEY = "taid_car:scale", "taid_car:method"


def refuse_other_scale(files: Sequence[Path], pair: TrainedPair) -> None:
    """LR files ``downscale`` made at another scale than the pair's: a usage error naming them
    (files without the tag, e.g. made elsewhere, are upscaled as given)."""
    other = []
    for path in files:
        tag = png_text(path)
        if tag.get(LR_SCALE_KEY) and tag[LR_SCALE_KEY] != str(pair.scale):
            other.append(f"{path.name} (x{tag[LR_SCALE_KEY]}, {tag.get(LR_METHOD_KEY, '?')})")
    if other:
        shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        raise UsageError(
            f"{shown} were downscaled at another scale; this checkpoint ({pair.method}) upscales "
            f"x{pair.scale}: use the checkpoint of that scale, or --scale of that factor"
        )


def lr_input(pair: TrainedPair, image, path: Path) -> torch.Tensor:
    """The LR batch (1,C,h,w) the pair's upscaler takes from a read image: RGB, or for a
    colorization decoder (1-channel LR) the gray image; a colour file there is an ImageError."""
    tensor = image.tensor.unsqueeze(0)
    if pair.lr_channels == 3:
        return tensor
    if not image.is_gray and not (torch.equal(tensor[:, 0], tensor[:, 1]) and torch.equal(tensor[:, 1], tensor[:, 2])):
        raise ImageError(path, f"is a colour image; {pair.method} restores colour from a 1-channel gray "
                               "image (make one with `rescale downscale` on this checkpoint)")
    return tensor[:, :1]


def run_upscale(args: argparse.Namespace, pair: TrainedPair) -> int:
    """LR files -> ``<output>/<stem>.png`` SR files (x scale)."""
    files = collect_inputs(args.input)
    targets = target_paths(files, Path(args.output))
    refuse_existing(list(targets.values()), args.overwrite)
    refuse_other_scale(files, pair)
    outcome = Outcome()
    files = preflight(files, min_size_check(1, "upscaling", args.max_pixels, pair.scale**2), args.on_error, outcome)

    def work(path: Path) -> None:
        image = read_image(path)
        sr = pair.upscale(lr_input(pair, image, path))
        save_image(as_file_image(sr, image.is_gray and pair.lr_channels == 3), targets[path], overwrite=args.overwrite)

    process_files(files, work, args.on_error, outcome, f"upscale x{pair.scale}", args.progress)
    return summarize(outcome, f"upscaled ({pair.method}, x{pair.scale}) into {args.output}:")


# --------------------------------------------------------------------------- command line


def with_channel(args: argparse.Namespace, pair: TrainedPair) -> TrainedPair:
    """The pair with the LR channel the options ask for (:mod:`taid_car.channel`): the
    checkpoint's own, ``--channel`` (with ``--quality``, ``--subsampling``) another, ``--quality``
    alone the checkpoint's own at that quality. A bad value is a :class:`UsageError` naming it."""
    if getattr(args, "jpeg_quality", None) is not None:
        raise UsageError(f"--jpeg-quality is gone: the LR goes through the LR channel; use --channel jpeg "
                         f"--quality {args.jpeg_quality} (and --subsampling 4:2:0, the default)")
    name, quality, subsampling = (getattr(args, key, None) for key in ("channel", "quality", "subsampling"))
    if name is None and quality is None and subsampling is None:
        return pair
    if name is None:
        if pair.channel.name == "png":
            raise UsageError(f"--{'quality' if quality is not None else 'subsampling'}: this checkpoint's LR "
                             "channel is png (lossless); give --channel jpeg or --channel webp")
        node = {k: v for k, v in pair.channel.record().items() if v is not None}
        node["name"] = node.pop("channel")
    else:
        node = {"name": name}
    node.update({k: v for k, v in (("quality", quality), ("subsampling", subsampling)) if v is not None})
    try:
        return pair.through(build_channel(node))
    except ConfigError as err:
        raise UsageError(f"--channel/--quality/--subsampling: {err}") from err


def channel_options() -> argparse.ArgumentParser:
    """``--channel``, ``--quality``, ``--subsampling`` (a parent parser; read by :func:`with_channel`)."""
    channel = argparse.ArgumentParser(add_help=False)
    channel.add_argument("--channel", choices=list(CHANNELS), default=None,
                         help="the LR channel the LR is stored through (default: the checkpoint's own)")
    channel.add_argument("--quality", type=int, default=None,
                         help="quality of a jpeg (1..100) or webp (0..100) channel")
    channel.add_argument("--subsampling", choices=list(SUBSAMPLINGS), default=None,
                         help="JPEG chroma subsampling (default 4:2:0)")
    return channel


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--ckpt", required=True, help="checkpoint written by python -m taid_car.run"
    )
    common.add_argument(
        "--input",
        required=True,
        help=f"an image file or a folder of them ({' '.join(IMAGE_EXTENSIONS)})",
    )
    common.add_argument("--overwrite", action="store_true", help="replace existing output files")
    common.add_argument(
        "--on-error",
        choices=("skip", "fail"),
        default="skip",
        help="a bad input file is skipped (default) or stops the command",
    )
    common.add_argument(
        "--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ..."
    )
    common.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bars"
    )
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    common.add_argument(
        "--scale", type=int, default=None,
        help="apply the checkpoint's xs pair recursively for this factor, a power of s (e.g. 16 on a x2 "
        "checkpoint: 4 levels, each intermediate LR on the 8-bit grid); default: the checkpoint's scale",
    )
    common.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS,
        help=f"refuse images whose HR (or SR) has more pixels than this (default {MAX_PIXELS}: 4096x4096); "
        "each image is processed whole",
    )

    parser = argparse.ArgumentParser(
        prog="python -m taid_car.rescale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    channel = channel_options()
    down = commands.add_parser(
        "downscale", parents=[common, channel], help="HR images -> 8-bit LR files (PNG, or JPEG/WebP through the channel)"
    )
    down.add_argument("--output", required=True, help="folder for <stem>.png (.jpg, .webp) LR files")
    up = commands.add_parser("upscale", parents=[common], help="LR images -> SR PNG files")
    up.add_argument("--output", required=True, help="folder for <stem>.png SR files")
    trip = commands.add_parser(
        "roundtrip",
        parents=[common, channel],
        help="HR -> LR (through the LR channel) -> SR, scored against HR and bicubic",
    )
    trip.add_argument("--output", help="folder for roundtrip.csv and roundtrip.md")
    trip.add_argument("--jpeg-quality", type=int, default=None, help=argparse.SUPPRESS)  # gone: an error naming --channel/--quality
    return parser


COMMANDS = {"downscale": run_downscale, "upscale": run_upscale, "roundtrip": run_roundtrip}


def check_output_folder(output: str | None) -> None:
    """``--output`` names a folder (created if missing), never an existing file nor a symlink to
    a missing folder (which could not be created through it)."""
    if not output:
        return
    path = Path(output)
    if path.is_symlink() and not path.exists():
        raise UsageError(
            f"--output {described(path)}: create that folder, remove the link, or give another --output"
        )
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output {output} is a file: give a folder (it is created if missing)")


def configure_logging() -> None:
    """INFO messages of this module on stderr (once), as ``rescale: <message>``."""
    log.setLevel(logging.INFO)
    for handler in log.handlers:  # called again in one process: write to the stderr of now
        if getattr(handler, "_taid_car_rescale", False):
            handler.stream = sys.stderr  # not setStream: it flushes the old one, maybe closed
    if not any(getattr(h, "_taid_car_rescale", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rescale: %(message)s"))
        handler._taid_car_rescale = True  # type: ignore[attr-defined]
        log.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        check_output_folder(args.output)
        pair = load_pair(args.ckpt, _device(args.device))
        if args.scale is not None:
            pair = at_scale(pair, args.scale)
        pair = with_channel(args, pair)
        return COMMANDS[args.command](args, pair)
    except UsageError as err:
        if args.debug:
            raise
        log.error("error: %s", err)
        return 2
    except FileFailure as err:
        if args.debug:
            raise
        log.error("error: %s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
