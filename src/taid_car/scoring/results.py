"""The record of one method's scores on one benchmark set at one scale."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SetResult:
    """Mean scores of one method on one set at one scale (PSNR in dB, SSIM in [0,1])."""

    method: str
    set_name: str
    scale: int
    images: int
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    lr_psnr_y: float
    bicubic_psnr_y: float
    bicubic_ssim_y: float
    per_image: list[dict] = field(default_factory=list)

    def as_row(self) -> dict:
        """Flat dict without the per-image list (for tables and CSV)."""
        row = asdict(self)
        row.pop("per_image")
        return row
