"""Score a downscaler/upscaler pair on a benchmark set under the standard SR protocol.

Each HR image (RGB, [0,1], cropped to the downscaler's multiple) goes through
:func:`taid_car.scoring.pipeline.rescale_and_score`, the function the Rescaler's validation and
test use too; the set's scores are the means of the per-image ones.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from taid_car.scoring.pipeline import rescale_and_score
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
) -> SetResult:
    """Score one set. ``dataset`` yields dicts with ``hr`` (3,H,W), ``name`` and ``is_gray``."""
    per_image = []
    downscaler.eval().to(device)
    upscaler.eval().to(device)
    items = tqdm(range(len(dataset)), desc=f"{method} {set_name} x{scale}", disable=not progress, leave=False)
    for index in items:
        item = dataset[index]
        hr = item["hr"].unsqueeze(0).to(device)
        out = rescale_and_score(downscaler, upscaler, hr, scale, bool(item["is_gray"]))
        row = {"name": item["name"], "is_gray": bool(item["is_gray"])}
        per_image.append(row | {key: value.item() for key, value in out.scores.items()})
    if not per_image:
        raise ValueError(f"benchmark set {set_name!r} has no images")
    keys = [k for k in per_image[0] if k not in ("name", "is_gray")]
    scores = {k: sum(row[k] for row in per_image) / len(per_image) for k in keys}
    return SetResult(method=method, set_name=set_name, scale=scale, images=len(dataset), per_image=per_image,
                     task=task_of(downscaler).name, **scores)
