"""The record of one method's scores on one benchmark set at one scale."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SetResult:
    """Mean scores of one method on one set at one scale (PSNR in dB, SSIM in [0,1]).

    ``task`` names what the pair was scored as (:mod:`taid_car.scoring.tasks`).
    ``lr_psnr_y`` is the LR fidelity: vs the bicubic LR, or for colorization (scale 1) the learned
    gray vs plain gray. Scores a task does not have are None: ``ssim_rgb`` and ``lr_ssim_y`` (the
    learned gray's SSIM vs plain gray) are colorization's, the ``bicubic_*`` reference is resizing's.

    The LR channel it was scored through (:mod:`taid_car.channel`): ``channel`` (png, jpeg,
    webp), ``quality`` (None for png) and ``subsampling`` (JPEG's chroma subsampling); the rate:
    ``bpp``, the encoded LR's bits per LR pixel (mean over images; per image in ``per_image``),
    and ``bicubic_bpp``, the Bicubic & Bicubic LR's through the same channel. Rows written before
    the channel was recorded read as png without a rate.
    """

    method: str
    set_name: str
    scale: int
    images: int
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    lr_psnr_y: float
    bicubic_psnr_y: float | None = None
    bicubic_ssim_y: float | None = None
    ssim_rgb: float | None = None
    lr_ssim_y: float | None = None
    task: str = "resize"
    channel: str = "png"
    quality: int | None = None
    subsampling: str | None = None
    bpp: float | None = None
    bicubic_bpp: float | None = None
    per_image: list[dict] = field(default_factory=list)

    def as_row(self) -> dict:
        """Flat dict without the per-image list (for tables and CSV)."""
        row = asdict(self)
        row.pop("per_image")
        return row
