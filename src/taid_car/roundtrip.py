"""``rescale roundtrip``: HR -> LR (through the LR channel) -> SR per image, scored through the
pipeline beside Bicubic & Bicubic, as a table per set (``roundtrip.csv`` / ``roundtrip.md``).

Scores are the pair's task's (:mod:`taid_car.scoring.tasks`), the score table's own: Y PSNR/SSIM,
LR fidelity, the rate (bits per LR pixel) and the Bicubic & Bicubic reference for resizing;
restored colour and gray fidelity for colorization. The LR of both pairs goes through the pair's
channel (``--channel jpeg --quality 75``: Pillow's libjpeg, in memory); the title names it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from taid_car.atomic_write import write_atomically
from taid_car.file_batch import (
    Outcome,
    collect_inputs,
    load_hr,
    min_size_check,
    preflight,
    process_files,
    refuse_existing,
    summarize,
)
from taid_car.models.trained import TrainedPair
from taid_car.scoring import tables
from taid_car.scoring.pipeline import rescale_and_score
from taid_car.scoring.tables import Column
from taid_car.scoring.tasks import SCORES, Task, task_of

log = logging.getLogger("taid_car.rescale")  # the command's messages: "rescale: ..." on stderr


SSIM_WINDOW = 11  # SSIM needs this many pixels per side after the border crop


RESULT_FILES = ("roundtrip.csv", "roundtrip.md")


def score_image(pair: TrainedPair, hr: torch.Tensor, is_gray: bool) -> dict:
    """One HR (1,3,H,W) through :func:`~taid_car.scoring.pipeline.rescale_and_score` (the pair and
    Bicubic & Bicubic, both LRs through the pair's channel): the task's scores, e.g. Y PSNR (dB) /
    SSIM of SR vs HR (border = scale), LR fidelity (Y PSNR of the stored LR vs the clean bicubic
    LR) and the rate of each LR (bits per LR pixel)."""
    with torch.inference_mode():
        out = rescale_and_score(pair.downscaler, pair.upscaler, hr.to(pair.device), pair.scale, is_gray,
                                channel=pair.channel)
    task = task_of(pair.downscaler)
    return {key: out.scores[key].item() for key in task.result_scores}


def roundtrip_columns(task: Task) -> list[Column]:
    """(key, title, format) of the round-trip table: the task's scores with the score table's
    titles (:mod:`taid_car.scoring.tasks`)."""
    return [
        Column("image", "Image", "{}", text=True),
        Column("size", "HR size", "{}", text=True),
        *(Column(key, task.title(key), SCORES[key].fmt) for key in task.result_scores),
    ]


def mean_row(rows: Sequence[dict]) -> dict:
    """The per-set line: every numeric score averaged over images (PSNR averaged in dB)."""
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    return {
        "image": "mean",
        "size": f"{len(rows)} images",
        **{k: sum(r[k] for r in rows) / len(rows) for k in keys},
    }


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
    """HR -> LR (through the pair's channel) -> SR for each file; table on stdout, CSV/Markdown
    in ``--output``."""
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
        scores = score_image(pair, hr, is_gray)
        rows.append({"image": path.name, "size": f"{hr.shape[-2]}x{hr.shape[-1]}", **scores})

    process_files(files, work, args.on_error, outcome, f"round trip x{pair.scale}", args.progress)
    status = summarize(outcome, "scored")
    if not rows:
        return status
    rows.append(mean_row(rows))
    task = task_of(pair.downscaler)
    columns = roundtrip_columns(task)
    title = f"{pair.method} x{pair.scale} round trip ({task.scored_on}; LR through {pair.channel.label})"
    caption = None
    tables.print_table(rows, columns, title, caption, total_row=True)
    if out_dir is not None:
        for path in write_tables(rows, columns, title, caption, out_dir, args.overwrite):
            log.info("wrote %s", path)
    return status
