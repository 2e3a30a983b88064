"""Score a downscaler/upscaler pair on a benchmark set under the standard SR protocol.

Each HR image (RGB, [0,1], cropped to the downscaler's multiple) goes through
:func:`taid_car.scoring.pipeline.rescale_and_score`, the function the Rescaler's validation and
test use too; the set's scores are the means of the per-image ones. Each row records the LR
channel it was scored through (:mod:`taid_car.channel`) and the rate (``bpp``, bits per LR pixel).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from taid_car.channel import LOSSLESS, LRChannel
from taid_car.scoring.pipeline import rescale_and_score_channels
from taid_car.scoring.results import SetResult
from taid_car.scoring.tasks import task_of


@torch.no_grad()
def evaluate_set(
    downscaler: nn.Module,
    upscaler: nn.Module,
    dataset,
    scale: int,
    set_name: str,
    method: str,
    device: torch.device | str = "cpu",
    progress: bool = True,
    channel: LRChannel | None = None,
) -> SetResult:
    """Score one set through ``channel`` (png by default). ``dataset`` yields dicts with ``hr``
    (3,H,W), ``name`` and ``is_gray``."""
    return evaluate_set_channels(downscaler, upscaler, dataset, scale, set_name, method, [channel or LOSSLESS],
                                 device, progress)[0]


@torch.no_grad()
def evaluate_set_channels(
    downscaler: nn.Module,
    upscaler: nn.Module,
    dataset,
    scale: int,
    set_name: str,
    method: str,
    channels: Sequence[LRChannel],
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[SetResult]:
    """Score one set through each of ``channels`` (one row each, in order; each image is
    downscaled once)."""
    per_image: list[list[dict]] = [[] for _ in channels]
    downscaler.eval().to(device)
    upscaler.eval().to(device)
    items = tqdm(range(len(dataset)), desc=f"{method} {set_name} x{scale}", disable=not progress, leave=False)
    for index in items:
        item = dataset[index]
        hr = item["hr"].unsqueeze(0).to(device)
        outs = rescale_and_score_channels(downscaler, upscaler, hr, scale, bool(item["is_gray"]), list(channels))
        for rows, out in zip(per_image, outs):
            row = {"name": item["name"], "is_gray": bool(item["is_gray"])}
            rows.append(row | {key: value.item() for key, value in out.scores.items()})
    if not len(dataset):
        raise ValueError(f"benchmark set {set_name!r} has no images")
    results = []
    for channel, rows in zip(channels, per_image):
        keys = [k for k in rows[0] if k not in ("name", "is_gray")]
        scores = {k: sum(row[k] for row in rows) / len(rows) for k in keys}
        results.append(SetResult(method=method, set_name=set_name, scale=scale, images=len(dataset), per_image=rows,
                                 task=task_of(downscaler).name, **channel.record(), **scores))
    return results
