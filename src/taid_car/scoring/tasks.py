"""What a pair is scored as: one :class:`Task` per task, and the one table of score names.

A downscaler says its task (``Downscaler.task``: :data:`RESIZE`, or :data:`COLORIZE` for a
colour-to-gray encoder) and every consumer asks the task: the pipeline (which reference LR),
training (which scores to log, which one selects checkpoints as ``val/headline``), the results
tables, ``compare``, ``rescale roundtrip``, the baseline's gain lines and the image panels.

:data:`SCORES` is the one table of per-image score names: title, format, short label, and the
Bicubic & Bicubic reference score beside it, if any. A task can retitle a score (colorization's
``lr_psnr_y`` is "gray vs plain gray", not "LR vs bicubic").

Only torch is imported here; the channel, imresize and the colour module lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Score:
    """A per-image score: table title, number format, short label (gain lines, plots), unit, and
    the Bicubic & Bicubic score beside it, if any."""

    title: str
    fmt: str
    label: str
    unit: str = ""
    reference: str | None = None


#: every per-image score the pipeline computes, by name (units: PSNR in dB, SSIM in [-1, 1])
SCORES: dict[str, Score] = {
    "psnr_y": Score("PSNR-Y (dB)", "{:.2f}", "PSNR-Y", "dB", "bicubic_psnr_y"),
    "ssim_y": Score("SSIM-Y", "{:.4f}", "SSIM-Y", "", "bicubic_ssim_y"),
    "psnr_rgb": Score("PSNR-RGB (dB)", "{:.2f}", "PSNR-RGB", "dB"),
    "ssim_rgb": Score("SSIM-RGB", "{:.4f}", "SSIM-RGB"),
    "lr_psnr_y": Score("LR vs bicubic (dB)", "{:.2f}", "LR PSNR-Y vs bicubic LR", "dB"),
    "lr_ssim_y": Score("LR SSIM vs bicubic", "{:.4f}", "LR SSIM vs bicubic LR"),
    "bicubic_psnr_y": Score("Bicubic PSNR-Y", "{:.2f}", "Bicubic & Bicubic PSNR-Y", "dB"),
    "bicubic_ssim_y": Score("Bicubic SSIM-Y", "{:.4f}", "Bicubic & Bicubic SSIM-Y"),
    "bpp": Score("LR bits per LR pixel", "{:.3f}", "LR rate (bits per LR pixel)", "bpp", "bicubic_bpp"),
    "bicubic_bpp": Score("Bicubic LR bits per LR pixel", "{:.3f}", "Bicubic LR rate (bits per LR pixel)", "bpp"),
}


def _bicubic_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The clean fidelity target: MATLAB-bicubic LR on the 8-bit grid (the lossless channel's
    rounding; the Bicubic & Bicubic reference pair codes it through the pair's channel)."""
    from taid_car.channel import LOSSLESS
    from taid_car.ops.imresize import bicubic_downscale

    return LOSSLESS.round(bicubic_downscale(hr, scale))


def _plain_gray_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    from taid_car.channel import LOSSLESS
    from taid_car.models.colorize import plain_gray

    return LOSSLESS.round(plain_gray(hr))


@dataclass(frozen=True)
class Task:
    """What a pair is scored as.

    Attributes:
        name: ``resize`` or ``colorize`` (saved in results files as ``task``).
        scores: per-image scores of a test pass, in table order (names of :data:`SCORES`).
        val_scores: the subset logged at every validation.
        reference_scores: the fixed reference pair's scores (Bicubic & Bicubic), or none.
        headline: the score checkpoints select on (logged as ``val/headline``), and gains are in.
        headline_ssim: the SSIM reported beside the headline in gain lines.
        reference_lr: HR (B,3,H,W) in [0,1], scale -> the 8-bit LR a learned LR's fidelity is
            measured against (bicubic LR; plain gray (B,1,H,W) for colorization).
        panel_captions: captions of the validation image panels, in ``panel_row`` order.
        learned: what the verdict calls the learned part ("the learned downscaler").
        scored_on: how its scores are taken, for report texts.
        table_title: results table title, formatted with ``method`` and ``scale``.
        min_scale: the smallest ``scale`` it takes (2 for resizing; 1 for colorization, where
            channels shrink, not sides).
        titles: table titles that differ from :data:`SCORES` for this task.
    """

    name: str
    scores: tuple[str, ...]
    val_scores: tuple[str, ...]
    reference_scores: tuple[str, ...]
    headline: str
    headline_ssim: str
    reference_lr: Callable[[torch.Tensor, int], torch.Tensor]
    panel_captions: tuple[str, ...]
    learned: str
    scored_on: str
    table_title: str
    min_scale: int
    titles: Mapping[str, str] = field(default_factory=dict)

    def title(self, score: str) -> str:
        """Table title of ``score`` for this task."""
        return self.titles.get(score) or SCORES[score].title

    @property
    def headline_reference(self) -> str | None:
        """The reference pair's score beside the headline (Bicubic & Bicubic PSNR-Y), if any."""
        reference = SCORES[self.headline].reference
        return reference if reference in self.reference_scores else None

    @property
    def result_scores(self) -> tuple[str, ...]:
        """Everything a test of this task records: its scores, then the reference's."""
        return (*self.scores, *self.reference_scores)

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


RESIZE = Task(
    name="resize",
    scores=("psnr_y", "ssim_y", "psnr_rgb", "lr_psnr_y", "bpp"),
    val_scores=("psnr_y", "ssim_y", "lr_psnr_y"),
    reference_scores=("bicubic_psnr_y", "bicubic_ssim_y", "bicubic_bpp"),
    headline="psnr_y",
    headline_ssim="ssim_y",
    reference_lr=_bicubic_lr,
    panel_captions=("HR", "LR (nearest)", "SR", "bicubic LR (nearest)", "bicubic SR"),
    learned="the learned downscaler",
    scored_on="SR vs HR on the Y channel (border = scale); LR fidelity vs the bicubic LR",
    table_title="{method} x{scale} (Y channel, border = scale)",
    min_scale=2,
)

COLORIZE = Task(
    name="colorize",
    scores=("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "lr_psnr_y", "lr_ssim_y", "bpp"),
    val_scores=("psnr_rgb", "ssim_rgb", "psnr_y", "lr_psnr_y", "lr_ssim_y"),
    reference_scores=(),
    headline="psnr_rgb",
    headline_ssim="ssim_rgb",
    reference_lr=_plain_gray_lr,
    panel_captions=("original", "learned gray", "restored colour", "plain gray"),
    learned="the learned gray",
    scored_on="restored RGB vs HR (border 1); gray fidelity vs plain BT.601 gray",
    table_title="{method} colorization (restored RGB vs HR, border 1; gray fidelity vs plain gray)",
    min_scale=1,
    titles={"lr_psnr_y": "gray vs plain gray (dB)", "lr_ssim_y": "gray SSIM vs plain gray",
            "bpp": "gray bits per pixel"},
)

TASKS: dict[str, Task] = {task.name: task for task in (RESIZE, COLORIZE)}


def task_named(name: str) -> Task:
    """The task called ``name``; ValueError naming the known ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: one of {', '.join(TASKS)}")
    return TASKS[name]


def task_of(downscaler) -> Task:
    """The downscaler's :attr:`~taid_car.models.downscaler.Downscaler.task` (resize if it has none)."""
    task = getattr(downscaler, "task", RESIZE)
    if not isinstance(task, Task):
        raise TypeError(f"{type(downscaler).__name__}.task={task!r}: not a taid_car.scoring.tasks.Task")
    return task


def task_of_result(result: Mapping) -> Task:
    """The task of one results row (``results.json`` entry or ``SetResult.as_row()``): its
    ``task``; files written before it was recorded are colorization when they carry SSIM-RGB."""
    name = result.get("task") or ("colorize" if result.get("ssim_rgb") is not None else "resize")
    return task_named(str(name))


def tasks_of_results(results: Iterable[Mapping]) -> list[Task]:
    """The tasks of ``results`` rows, each once, in order of first appearance."""
    return list({task.name: task for task in map(task_of_result, results)}.values())


def common_task(results: Iterable[Mapping]) -> Task | None:
    """The one task of all ``results`` rows, or None when they mix tasks (or there are none)."""
    tasks = tasks_of_results(results)
    return tasks[0] if len(tasks) == 1 else None


def columns_in_order(tasks: Sequence[Task]) -> list[str]:
    """Score names of ``tasks`` (first appearance wins), for a table holding several tasks."""
    seen: dict[str, None] = {}
    for task in tasks:
        for name in task.result_scores:
            seen.setdefault(name, None)
    return list(seen)
