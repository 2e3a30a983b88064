"""``rescale roundtrip``: HR -> LR (-> JPEG) -> SR per image, scored through the pipeline beside
Bicubic & Bicubic, as a table per set (``roundtrip.csv`` / ``roundtrip.md``).

Scores are the pair's task's (:mod:`taid_car.scoring.tasks`): Y PSNR/SSIM, LR fidelity and the
Bicubic & Bicubic reference for resizing; restored colour and gray fidelity for colorization.
With ``--jpeg-quality`` the LR of both pairs also goes through JPEG (in memory) before upscaling.
"""

from __future__ import annotations

import argparse
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from taid_car.atomic_write import write_atomically
from taid_car.errors import UsageError
from taid_car.file_batch import (
    Outcome,
    as_file_image,
    collect_inputs,
    load_hr,
    min_size_check,
    preflight,
    process_files,
    refuse_existing,
    summarize,
)
from taid_car.models.trained import TrainedPair
from taid_car.ops.imresize import bicubic_upscale
from taid_car.scoring import tables
from taid_car.scoring.pipeline import rescale_and_score, score_sr
from taid_car.scoring.tables import Column
from taid_car.scoring.tasks import SCORES, Task, task_of

log = logging.getLogger("taid_car.rescale")  # the command's messages: "rescale: ..." on stderr


SSIM_WINDOW = 11  # SSIM needs this many pixels per side after the border crop


RESULT_FILES = ("roundtrip.csv", "roundtrip.md")


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
        sr_jpeg, bicubic_sr_jpeg = pair.upscale(lr_jpeg), bicubic_upscale(bicubic_jpeg, s)
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
    """``roundtrip.csv`` (full precision) and ``roundtrip.md`` (rounded) in ``out_dir``, each
    written whole; a file or link at either name is replaced (``overwrite``), never written through."""
    csv_path, md_path = (out_dir / name for name in RESULT_FILES)
    tables.write_csv(rows, [c.key for c in columns], csv_path, overwrite=overwrite)
    write_atomically(md_path, tables.markdown_table(rows, columns, title, caption), overwrite=overwrite)
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
