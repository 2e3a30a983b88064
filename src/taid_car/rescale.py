"""Apply a trained downscaler/upscaler pair to image files: downscale, upscale, round trip.

    # HR images -> 8-bit PNG LR files (same stem, .png), at the checkpoint's scale
    python -m taid_car.rescale downscale --ckpt outputs/car_x4/<run>/checkpoints/last.ckpt \\
        --input photos/ --output photos_lr/

    # LR files -> SR PNGs (x scale)
    python -m taid_car.rescale upscale --ckpt .../last.ckpt --input photos_lr/ --output photos_sr/

    # HR -> LR -> SR, scored per image (Y PSNR/SSIM, LR fidelity) beside Bicubic & Bicubic;
    # with --jpeg-quality the LR also goes through JPEG at that quality (in memory) before
    # upscaling, for both pairs: how do learned downscalers degrade under JPEG relative to bicubic?
    python -m taid_car.rescale roundtrip --ckpt .../last.ckpt --input Set5/ --jpeg-quality 75 \\
        --output results/

    # a x2 checkpoint applied recursively: x16 (LR files are tagged with the factor)
    python -m taid_car.rescale downscale --ckpt <x2 run>/checkpoints/last.ckpt --scale 16 \
        --input photos/ --output photos_lr16/

    # colorization (model=taid_color): colour images -> learned 1-channel gray PNGs, and back
    python -m taid_car.rescale downscale --ckpt <taid_color run>/last.ckpt --input photos/ --output gray/
    python -m taid_car.rescale upscale --ckpt <taid_color run>/last.ckpt --input gray/ --output colour/

Common options: ``--scale N`` (a power of the checkpoint's scale: its pair applied recursively,
every intermediate LR on the 8-bit grid), ``--overwrite`` (nothing is replaced without it; all targets are checked before
anything is written), ``--on-error skip|fail`` (a bad file - unreadable, corrupt, too small for the
scale - is reported by name and skipped, or stops the command), ``--device auto|cpu|cuda``,
``--no-progress``.

Conventions: images are RGB tensors (1, 3, H, W), float, [0, 1]. The checkpoint (written by
``python -m taid_car.run``) fixes the scale ``s`` and the HR size multiple its downscaler needs
(8 for CAR); HR images are cropped bottom/right to a multiple of ``lcm(s, multiple)`` first, as
``taid_car.evaluate`` does, and the crop is logged. The LR is rounded to 8 bit before it is
written or upscaled, so an LR file holds exactly what the upscaler saw. Gray sources whose
result has identical channels are written as 1-channel PNGs. Scores follow
:mod:`taid_car.scoring.metrics` (Y of MATLAB ``rgb2ycbcr``, gray images on their own values,
``s`` pixels cropped from every border).

Exit status: 0 when at least one file was processed, 1 when every file failed (or, with
``--on-error fail``, at the first bad file), 2 for a usage error (bad checkpoint, missing or empty
input, existing outputs without ``--overwrite``).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from taid_car.data.io import (
    IMAGE_EXTENSIONS,
    ImageError,
    check_min_size,
    list_images,
    modcrop,
    png_text,
    probe_size,
    read_image,
    save_image,
)
from taid_car.errors import UsageError
from taid_car.models.checkpoints import CheckpointError
from taid_car.models.trained import TrainedPair
from taid_car.ops.imresize import bicubic_upscale
from taid_car.scoring import tables
from taid_car.scoring.pipeline import downscale_8bit, rescale_and_score, score_sr
from taid_car.scoring.tables import Column
from taid_car.scoring.tasks import SCORES, Task, task_of

log = logging.getLogger(__name__)

SSIM_WINDOW = 11  # SSIM needs this many pixels per side after the border crop
RESULT_FILES = ("roundtrip.csv", "roundtrip.md")




class FileFailure(Exception):
    """One input file failed under ``--on-error fail``: exit status 1."""


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


@torch.inference_mode()
def downscale(pair: TrainedPair, hr: torch.Tensor) -> torch.Tensor:
    """HR (1,3,H,W) in [0,1], H, W multiples of ``pair.crop`` -> LR (1,3,H/s,W/s) on the 8-bit grid."""
    return downscale_8bit(pair.downscaler, hr.to(pair.device)).cpu()


@torch.inference_mode()
def upscale(pair: TrainedPair, lr: torch.Tensor) -> torch.Tensor:
    """LR (1,3,h,w) in [0,1] -> SR (1,3,h*s,w*s), float (not clamped; scoring/saving clamp)."""
    return pair.upscaler(lr.to(pair.device)).float().cpu()


# --------------------------------------------------------------------------- files


def collect_inputs(source: str | Path) -> list[Path]:
    """The image files named by ``source``: one file, or the images directly inside a folder."""
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.exists():
        raise UsageError(f"input {path} does not exist")
    try:
        return list_images(path)
    except ImageError as err:
        raise UsageError(str(err)) from err


def target_paths(files: Sequence[Path], out_dir: Path) -> dict[Path, Path]:
    """``{input: out_dir/<stem>.png}``; two inputs with one stem, or a target that is an input
    file itself, are usage errors."""
    targets = {src: out_dir / f"{src.stem}.png" for src in files}
    by_target: dict[Path, list[Path]] = {}
    for src, dst in targets.items():
        by_target.setdefault(dst, []).append(src)
    clashes = [srcs for srcs in by_target.values() if len(srcs) > 1]
    if clashes:
        names = "; ".join(", ".join(p.name for p in srcs) for srcs in clashes)
        raise UsageError(f"inputs would write the same output file (same stem): {names}")
    # realpath, not Path.resolve: a symlink loop at a target name is reported later, not raised here
    inputs = {os.path.realpath(src) for src in files}
    same = [dst for dst in targets.values() if os.path.realpath(dst) in inputs]
    if same:
        raise UsageError(
            f"output would replace input file(s) {', '.join(p.name for p in same)}; "
            "choose another --output folder"
        )
    return targets


def _taken(path: Path) -> bool:
    """Whether ``path`` is taken: a file, a folder or a symlink, dangling or not (``Path.exists``
    follows links, so it misses a dangling one, which ``open(..., "x")`` then refuses mid-run)."""
    return path.is_symlink() or path.exists()


def _described(path: Path) -> str:
    """``path``, with where it points when it is a symlink (and whether that exists)."""
    if not path.is_symlink():
        return str(path)
    target = Path(os.readlink(path))
    missing = "" if path.exists() else ", which does not exist"
    return f"{path} (a symlink to {target}{missing})"


def refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    """Usage error naming every output path that is taken (a file, or a symlink, dangling or
    not), unless ``overwrite``; a folder in the way is refused even then. With ``overwrite`` a
    symlink is replaced by the new file (unlinked first), never written through."""
    taken = [p for p in paths if _taken(p)]
    folders = [p for p in taken if p.is_dir() and not p.is_symlink()]
    if folders:
        shown = ", ".join(str(p) for p in folders[:10])
        raise UsageError(
            f"output path(s) {shown} {'is a folder' if len(folders) == 1 else 'are folders'}: "
            "move it away or choose another --output"
        )
    if taken and not overwrite:
        shown = ", ".join(_described(p) for p in taken[:10])
        more = f" and {len(taken) - 10} more" if len(taken) > 10 else ""
        links = " (a symlink is replaced by the new file, not written through)" if any(
            p.is_symlink() for p in taken) else ""
        raise UsageError(
            f"{len(taken)} output file(s) already exist: {shown}{more}; "
            f"pass --overwrite to replace them{links}"
        )


def as_file_image(image: torch.Tensor, is_gray: bool) -> torch.Tensor:
    """(1,3,H,W) -> what the file should hold: (1,H,W) when the source was gray and all three
    channels are equal (or the image has one channel: a colorization's gray), else (3,H,W)."""
    image = image[0]
    if image.shape[0] == 1:
        return image
    if is_gray and torch.equal(image[0], image[1]) and torch.equal(image[1], image[2]):
        return image[:1]
    return image


def jpeg_roundtrip(image: torch.Tensor, quality: int, is_gray: bool) -> tuple[torch.Tensor, int]:
    """Encode an 8-bit-grid (1,3,h,w) [0,1] image as JPEG at ``quality`` with Pillow (defaults:
    4:2:0 chroma; 1-channel for gray), decode it; returns ((1,3,h,w) [0,1], JPEG size in bytes)."""
    planes = as_file_image(image, is_gray)
    u8 = torch.round(planes.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(u8[:, :, 0], "L") if u8.shape[2] == 1 else Image.fromarray(u8, "RGB")
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=int(quality))
    size = buffer.tell()
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        rgb = np.asarray(decoded.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255, size


# --------------------------------------------------------------------------- per-file driving


@dataclass
class Outcome:
    """Files done, and ``(file, reason)`` for each one skipped."""

    done: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def min_size_check(min_side: int, what: str, max_pixels: int | None = None, factor: int = 1) -> Callable[[Path], None]:
    """A preflight check from the file's header: raises :class:`ImageError` unless H, W >= min_side
    and, with ``max_pixels``, the largest image the pair handles (H·W·``factor``: the HR, or the SR
    of an LR file) is at most that many pixels (the whole image goes through the model at once)."""

    def check(path: Path) -> None:
        size = probe_size(path)
        check_min_size(size, min_side, min_side, path, what)
        pixels = size[0] * size[1] * factor
        if max_pixels is not None and pixels > max_pixels:
            raise ImageError(
                path,
                f"{size[0]}x{size[1]} gives a {pixels / 1e6:.1f} MP image to process whole, above "
                f"--max-pixels {max_pixels / 1e6:.1f} MP (the model's activations for the whole image "
                "are held at once): crop or tile it, or raise --max-pixels",
            )

    return check


def preflight(
    files: Sequence[Path], check: Callable[[Path], None], on_error: str, outcome: Outcome
) -> list[Path]:
    """Headers only, before anything is written: drops (skip) or raises on (fail) unreadable or
    too small files; returns the files that passed."""
    good = []
    for path in files:
        try:
            check(path)
        except ImageError as err:
            record_failure(path, err, on_error, outcome)
        else:
            good.append(path)
    return good


def record_failure(path: Path, err: Exception, on_error: str, outcome: Outcome) -> None:
    """Log a bad file by name; raise :class:`FileFailure` under ``--on-error fail``."""
    reason = str(err)
    prefix = f"{path}: "
    reason = reason.removeprefix(prefix)
    if on_error == "fail":
        raise FileFailure(f"{path}: {reason} (--on-error fail: stopping)") from err
    log.warning("skipping %s: %s", path, reason)
    outcome.failed.append((path, reason))


def process_files(
    files: Sequence[Path],
    work: Callable[[Path], None],
    on_error: str,
    outcome: Outcome,
    desc: str,
    progress: bool,
) -> Outcome:
    """Run ``work`` on each file under a progress bar; per-file errors are recorded or fatal."""
    with logging_redirect_tqdm(loggers=[log]):
        for path in tqdm(files, desc=desc, unit="img", disable=None if progress else True):
            try:
                work(path)
            except (ValueError, RuntimeError) as err:  # ImageError, model shape errors, OOM
                try:
                    record_failure(path, err, on_error, outcome)
                except FileFailure:
                    if outcome.done:
                        log.warning(
                            "stopping after %d completed file(s): %s",
                            len(outcome.done),
                            ", ".join(p.name for p in outcome.done),
                        )
                    raise
            else:
                outcome.done.append(path)
    return outcome


def summarize(outcome: Outcome, verb: str) -> int:
    """Log what was done and skipped; exit status 0, or 1 when nothing succeeded."""
    total = len(outcome.done) + len(outcome.failed)
    log.info("%s %d of %d file(s)", verb, len(outcome.done), total)
    if outcome.failed:
        lines = "\n".join(f"  {path}: {reason}" for path, reason in outcome.failed)
        log.warning("skipped %d file(s):\n%s", len(outcome.failed), lines)
    if not outcome.done:
        log.error("every input file failed")
        return 1
    return 0


def load_hr(path: Path, pair: TrainedPair, min_side: int, what: str) -> tuple[torch.Tensor, bool]:
    """Read an HR file -> ((1,3,H',W') [0,1] cropped bottom/right to a multiple of ``pair.crop``,
    is_gray); logs the crop; :class:`ImageError` when smaller than ``min_side``."""
    image = read_image(path)
    check_min_size(image.tensor, min_side, min_side, path, what)
    hr = modcrop(image.tensor, pair.crop)
    if hr.shape != image.tensor.shape:
        h, w = image.tensor.shape[-2:]
        log.info(
            "%s: cropped %dx%d -> %dx%d (HxW, bottom/right) to a multiple of %d "
            "(lcm of scale %d and the downscaler's size multiple %d)",
            path.name,
            h,
            w,
            *hr.shape[-2:],
            pair.crop,
            pair.scale,
            pair.downscaler.size_multiple,
        )
    return hr.unsqueeze(0), image.is_gray


# --------------------------------------------------------------------------- subcommands


def run_downscale(args: argparse.Namespace, pair: TrainedPair) -> int:
    """HR files -> ``<output>/<stem>.png`` 8-bit LR files."""
    files = collect_inputs(args.input)
    targets = target_paths(files, Path(args.output))
    refuse_existing(list(targets.values()), args.overwrite)
    need, why = pair.downscaler.minimum_side()  # a multiple of the crop
    what = f"x{pair.scale} downscaling ({why + '; ' if why else ''}crop multiple {pair.crop})"
    outcome = Outcome()
    files = preflight(files, min_size_check(need, what, args.max_pixels), args.on_error, outcome)

    def work(path: Path) -> None:
        hr, is_gray = load_hr(path, pair, need, what)
        lr = downscale(pair, hr)
        save_image(as_file_image(lr, is_gray), targets[path], overwrite=args.overwrite,
                   text={LR_SCALE_KEY: str(pair.scale), LR_METHOD_KEY: pair.method})

    process_files(files, work, args.on_error, outcome, f"downscale x{pair.scale}", args.progress)
    return summarize(outcome, f"downscaled ({pair.method}, x{pair.scale}) into {args.output}:")


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
        sr = upscale(pair, lr_input(pair, image, path))
        save_image(as_file_image(sr, image.is_gray and pair.lr_channels == 3), targets[path], overwrite=args.overwrite)

    process_files(files, work, args.on_error, outcome, f"upscale x{pair.scale}", args.progress)
    return summarize(outcome, f"upscaled ({pair.method}, x{pair.scale}) into {args.output}:")




def score_image(pair: TrainedPair, hr: torch.Tensor, is_gray: bool, jpeg_quality: int | None) -> dict:
    """One HR (1,3,H,W) through :func:`~taid_car.scoring.pipeline.rescale_and_score` (the pair and
    Bicubic & Bicubic): Y PSNR (dB) / SSIM of SR vs HR (border = scale), LR fidelity (Y PSNR of
    LR vs bicubic LR) and, with ``jpeg_quality``, the same after JPEG-compressing each LR, with
    JPEG bits per LR pixel."""
    s, gray = pair.scale, torch.tensor([is_gray])
    with torch.inference_mode():
        out = rescale_and_score(pair.downscaler, pair.upscaler, hr.to(pair.device), s, is_gray)
    task = task_of(pair.downscaler)
    row = {key: out.scores[key].item() for key in task.result_scores}
    if jpeg_quality is not None:
        lr, bicubic_lr = out.lr.cpu(), out.bicubic_lr.cpu()
        pixels = lr.shape[-2] * lr.shape[-1]
        lr_jpeg, size = jpeg_roundtrip(lr, jpeg_quality, is_gray)
        bicubic_jpeg, bicubic_size = jpeg_roundtrip(bicubic_lr, jpeg_quality, is_gray)
        sr_jpeg, bicubic_sr_jpeg = upscale(pair, lr_jpeg), bicubic_upscale(bicubic_jpeg, s)
        row |= {key: value.item() for key, value in score_sr(sr_jpeg, hr, s, gray, prefix="jpeg_").items()}
        row["jpeg_bpp"] = 8 * size / pixels
        row |= {
            key: value.item()
            for key, value in score_sr(bicubic_sr_jpeg, hr, s, gray, prefix="bicubic_jpeg_").items()
        }
        row["bicubic_jpeg_bpp"] = 8 * bicubic_size / pixels
    return row


def roundtrip_columns(task: Task, with_jpeg: bool) -> list[Column]:
    """(key, title, format) of the round-trip table: the task's scores with the score table's
    titles (:mod:`taid_car.scoring.tasks`); "Bic." is Bicubic & Bicubic, "JPEG" the scores with
    the LR JPEG-compressed, "bpp" the JPEG size in bits per LR pixel."""
    columns = [
        Column("image", "Image", "{}", text=True),
        Column("size", "HR size", "{}", text=True),
        *(Column(key, task.title(key), SCORES[key].fmt) for key in task.result_scores),
    ]
    if with_jpeg:
        columns += [
            Column("jpeg_psnr_y", "JPEG PSNR-Y", "{:.2f}"),
            Column("jpeg_ssim_y", "JPEG SSIM-Y", "{:.4f}"),
            Column("jpeg_bpp", "JPEG bpp", "{:.2f}"),
            Column("bicubic_jpeg_psnr_y", "Bic. JPEG PSNR-Y", "{:.2f}"),
            Column("bicubic_jpeg_ssim_y", "Bic. JPEG SSIM-Y", "{:.4f}"),
            Column("bicubic_jpeg_bpp", "Bic. JPEG bpp", "{:.2f}"),
        ]
    return columns


def mean_row(rows: Sequence[dict]) -> dict:
    """The per-set line: every numeric score averaged over images (PSNR averaged in dB)."""
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    return {
        "image": "mean",
        "size": f"{len(rows)} images",
        **{k: sum(r[k] for r in rows) / len(rows) for k in keys},
    }


def jpeg_summary(mean: dict, quality: int, method: str) -> str:
    """One sentence: what JPEG at ``quality`` costs the pair and Bicubic & Bicubic (mean PSNR-Y)."""
    ours = mean["psnr_y"] - mean["jpeg_psnr_y"]
    ref = mean["bicubic_psnr_y"] - mean["bicubic_jpeg_psnr_y"]
    return (
        f"JPEG quality {quality} on the LR costs {method} {ours:.2f} dB PSNR-Y "
        f"({mean['psnr_y']:.2f} -> {mean['jpeg_psnr_y']:.2f}, LR {mean['jpeg_bpp']:.2f} bpp) and "
        f"Bicubic & Bicubic {ref:.2f} dB ({mean['bicubic_psnr_y']:.2f} -> "
        f"{mean['bicubic_jpeg_psnr_y']:.2f}, LR {mean['bicubic_jpeg_bpp']:.2f} bpp)"
    )


def write_tables(
    rows: Sequence[dict], columns, title: str, caption: str | None, out_dir: Path, overwrite: bool
) -> list[Path]:
    """``roundtrip.csv`` (full precision) and ``roundtrip.md`` (rounded) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = (out_dir / name for name in RESULT_FILES)
    for path in (csv_path, md_path):
        if overwrite and path.is_symlink():
            path.unlink()  # replace the link itself, never write through it
    tables.write_csv(rows, [c.key for c in columns], csv_path, overwrite=overwrite)
    with md_path.open("w" if overwrite else "x") as handle:
        handle.write(tables.markdown_table(rows, columns, title, caption))
    return [csv_path, md_path]


def run_roundtrip(args: argparse.Namespace, pair: TrainedPair) -> int:
    """HR -> LR (-> JPEG) -> SR for each file; table on stdout, CSV/Markdown in ``--output``."""
    if args.jpeg_quality is not None and not task_of(pair.downscaler).reference_scores:
        raise UsageError(f"--jpeg-quality compares JPEG-compressed LRs with bicubic ones; {pair.method} "
                         "is a colorization pair (no bicubic reference)")
    files = collect_inputs(args.input)
    out_dir = Path(args.output) if args.output else None
    if out_dir is not None:
        refuse_existing([out_dir / name for name in RESULT_FILES], args.overwrite)
    # SSIM needs 11 px per side after cropping `scale` px from each border, after the modcrop;
    # the downscaler may need more (CAR: twice its kernel net's stride, at every level)
    scoring = -(-(SSIM_WINDOW + 2 * pair.scale) // pair.crop) * pair.crop
    need, why = pair.downscaler.minimum_side()
    min_side = max(scoring, need)
    why = f"; {why}" if why and need >= scoring else ""
    what = f"x{pair.scale} round trip scoring (crop multiple {pair.crop}, SSIM border {pair.scale}{why})"
    outcome = Outcome()
    files = preflight(files, min_size_check(min_side, what, args.max_pixels), args.on_error, outcome)
    rows: list[dict] = []

    def work(path: Path) -> None:
        hr, is_gray = load_hr(path, pair, min_side, what)
        scores = score_image(pair, hr, is_gray, args.jpeg_quality)
        rows.append({"image": path.name, "size": f"{hr.shape[-2]}x{hr.shape[-1]}", **scores})

    process_files(files, work, args.on_error, outcome, f"round trip x{pair.scale}", args.progress)
    status = summarize(outcome, "scored")
    if not rows:
        return status
    rows.append(mean_row(rows))
    task = task_of(pair.downscaler)
    columns = roundtrip_columns(task, args.jpeg_quality is not None)
    jpeg = f", LR JPEG quality {args.jpeg_quality}" if args.jpeg_quality is not None else ""
    title = f"{pair.method} x{pair.scale} round trip ({task.scored_on}{jpeg})"
    caption = None
    if args.jpeg_quality is not None:
        caption = jpeg_summary(rows[-1], args.jpeg_quality, pair.method)
    tables.print_table(rows, columns, title, caption, total_row=True)
    if out_dir is not None:
        for path in write_tables(rows, columns, title, caption, out_dir, args.overwrite):
            log.info("wrote %s", path)
    return status


# --------------------------------------------------------------------------- command line


def jpeg_quality(text: str) -> int:
    """argparse type: an integer JPEG quality in 1..100."""
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"JPEG quality must be in 1..100, got {value}")
    return value


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
    down = commands.add_parser(
        "downscale", parents=[common], help="HR images -> 8-bit PNG LR files"
    )
    down.add_argument("--output", required=True, help="folder for <stem>.png LR files")
    up = commands.add_parser("upscale", parents=[common], help="LR images -> SR PNG files")
    up.add_argument("--output", required=True, help="folder for <stem>.png SR files")
    trip = commands.add_parser(
        "roundtrip",
        parents=[common],
        help="HR -> LR (-> JPEG) -> SR, scored against HR and bicubic",
    )
    trip.add_argument("--output", help="folder for roundtrip.csv and roundtrip.md")
    trip.add_argument(
        "--jpeg-quality",
        type=jpeg_quality,
        default=None,
        help="JPEG-compress each LR at this quality (1..100) before upscaling",
    )
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
            f"--output {_described(path)}: create that folder, remove the link, or give another --output"
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
