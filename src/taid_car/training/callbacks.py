"""Lightning callbacks: image panels of fixed validation crops (W&B and PNG files); a training
step timer (wall time per step, peak CUDA memory) written as JSON."""

from __future__ import annotations

import json
import logging
import shlex
import statistics
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import WandbLogger

from taid_car.atomic_write import write_atomically
from taid_car.data.io import save_image
from taid_car.scoring.pipeline import Rescaled, rescale_and_score
from taid_car.scoring.tasks import task_of

log = logging.getLogger(__name__)



def center_crop(image: torch.Tensor, size: int, multiple: int) -> torch.Tensor:
    """Central ``size`` x ``size`` crop of (..., H, W), shrunk to fit and to a multiple of ``multiple``."""
    height, width = image.shape[-2:]
    side = min(size, height, width) // multiple * multiple
    if side == 0:
        raise ValueError(f"image {height}x{width} too small for a crop that is a multiple of {multiple}")
    top, left = (height - side) // 2, (width - side) // 2
    return image[..., top:top + side, left:left + side]


def panel_row(hr: torch.Tensor, out: Rescaled, scale: int) -> list[torch.Tensor]:
    """(3,H,W) images in the task's ``panel_captions`` order from a pipeline pass with the
    reference, LRs nearest-upscaled to H x W (colorization has no reference SR; gray images are
    replicated to three channels)."""
    lr, sr, bicubic_lr, bicubic_sr = out.lr, out.sr, out.bicubic_lr, out.bicubic_sr

    def nearest(x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1)
        return x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="nearest")

    images = (hr, nearest(lr), sr, nearest(bicubic_lr)) + (() if bicubic_sr is None else (bicubic_sr,))
    return [t[0].clamp(0, 1) for t in images]


class ImagePanels(L.Callback):
    """Every ``every_n_steps`` training steps (at validation), show fixed crops side by side.

    For the first ``max_images`` images of the first validation set: a central HR crop of
    ``crop_size`` px, the model's LR (at its own size and nearest-upscaled), SR, and the bicubic
    pair. Logged as W&B images when a WandbLogger is attached; always saved as PNG strips under
    ``<output_dir>/panels/``. An image whose LR or SR holds NaN or ±inf gets no panel at that
    step, only a warning naming it (the Rescaler's validation end then stops a diverged run).
    """

    def __init__(self, every_n_steps: int = 100, crop_size: int = 96, max_images: int = 2,
                 output_dir: str | Path | None = None) -> None:
        if every_n_steps < 1 or crop_size < 1 or max_images < 1:
            raise ValueError("ImagePanels: every_n_steps, crop_size and max_images must be >= 1")
        self.every_n_steps, self.crop_size, self.max_images = every_n_steps, crop_size, max_images
        self.output_dir = Path(output_dir) if output_dir else None
        self._last_step: int | None = None

    def _crops(self, trainer: L.Trainer, multiple: int) -> list[tuple[str, torch.Tensor]]:
        datamodule = trainer.datamodule
        sets = getattr(datamodule, "val_sets", None) or {}
        if not sets:
            return []
        dataset = next(iter(sets.values()))
        items = [dataset[i] for i in range(min(self.max_images, len(dataset)))]
        return [(item["name"], center_crop(item["hr"], self.crop_size, multiple)) for item in items]

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if self._last_step is not None and step - self._last_step < self.every_n_steps:
            return
        self._last_step = step
        scale = pl_module.scale
        multiple = getattr(trainer.datamodule, "modcrop", None) or scale
        for name, hr in self._crops(trainer, multiple):
            hr = hr.unsqueeze(0).to(pl_module.device)
            out = rescale_and_score(pl_module.downscaler, pl_module.upscaler, hr, scale, False,
                                    channel=getattr(pl_module, "val_channel", None))  # the LR as validation codes it
            broken = [part for part, image in (("LR", out.lr), ("SR", out.sr)) if not bool(torch.isfinite(image).all())]
            if broken:  # the module's own validation end decides whether the run diverged
                log.warning("panels: no panel of %s at step %d: the model's %s %s NaN or infinite values",
                            name, step, " and ".join(broken), "holds" if len(broken) == 1 else "hold")
                continue
            lr, row = out.lr, panel_row(hr, out, scale)
            if self.output_dir is not None:
                save_image(torch.cat(row, dim=-1), self.output_dir / "panels" / f"step{step:06d}_{name}.png",
                           overwrite=True)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    # one list per image size: W&B warns about (and misdraws) mixed sizes
                    captions = list(task_of(pl_module.downscaler).panel_captions)
                    logger.log_image(key=f"panels/{name}", images=row, caption=captions, step=step)
                    logger.log_image(key=f"panels/{name}_lr", images=[lr[0]], caption=["LR (own size)"], step=step)


class StepTimer(L.Callback):
    """Wall time per training step and peak CUDA memory, written as JSON at the end of training.

    Records ``time.perf_counter()`` at the end of every training batch (no per-step CUDA sync,
    so steady-state deltas are the device's pace). At the end of training, after one sync,
    writes ``<output_dir>/step_times.json`` (when ``output_dir`` is given; :meth:`summary` returns
    the same record): ``steps``, ``warmup_steps``, ``median_step_s``
    (median of the per-step deltas after the warm-up), ``mean_step_s`` (time from the end of the
    last warm-up step to the synced end of training, over the steps in between),
    ``step_times_s`` (all deltas) and, on CUDA, ``peak_cuda_allocated_bytes`` /
    ``peak_cuda_reserved_bytes`` since the start of training.
    """

    FILENAME = "step_times.json"

    def __init__(self, output_dir: str | Path | None = None, warmup_steps: int = 10) -> None:
        if warmup_steps < 0:
            raise ValueError("StepTimer: warmup_steps must be >= 0")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.warmup_steps = warmup_steps
        self._marks: list[float] = []
        self.last: dict | None = None  # the record of the last finished training

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._marks = [time.perf_counter()]
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._marks.append(time.perf_counter())

    def summary(self, end: float, device: torch.device | None = None) -> dict:
        """The record :meth:`on_train_end` writes, from the marks so far and the synced ``end``."""
        deltas = [b - a for a, b in zip(self._marks, self._marks[1:])]
        steps, warm = len(deltas), min(self.warmup_steps, max(len(deltas) - 1, 0))
        timed = deltas[warm:]
        record = {
            "steps": steps, "warmup_steps": warm,
            "median_step_s": statistics.median(timed) if timed else None,
            "mean_step_s": (end - self._marks[warm]) / len(timed) if timed else None,
            "total_s": end - self._marks[0] if self._marks else None, "step_times_s": deltas,
        }
        if device is not None and device.type == "cuda":
            record["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
            record["peak_cuda_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
        return record

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        record = self.summary(time.perf_counter(), pl_module.device)
        self.last = record
        if trainer.is_global_zero and self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(self.output_dir / self.FILENAME, json.dumps(record, indent=1))


class SaveOnException(L.Callback):
    """On Ctrl-C or an error during training, save the state to ``<dirpath>/<filename>.ckpt`` (a
    resume point even before the first validation; ``ckpt_path=last`` picks it up) and say how
    to resume. Not when training diverged (that state would diverge again: the last validated
    checkpoint is the resume point) nor when a checkpoint could not be written.

    Lightning's own ``OnExceptionCheckpoint`` also turns every ``fit(ckpt_path=None)`` into
    ``ckpt_path="last"`` (a silent auto-resume, with warnings on each fresh run); resuming here is
    explicit, so this callback only saves.
    """

    def __init__(self, dirpath: str | Path, filename: str = "interrupted") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from taid_car.errors import TrainingDiverged
        from taid_car.training.checkpoints import CheckpointWriteError, NonFiniteCheckpoint

        if trainer.state.fn != "fit" or trainer.global_step == 0:
            return
        if isinstance(exception, (TrainingDiverged, NonFiniteCheckpoint, CheckpointWriteError)):
            return
        try:
            trainer.save_checkpoint(self.path)
        except Exception as err:  # noqa: BLE001 (never hide the original error behind this one)
            log.warning("could not save %s: %s", self.path, err)
            return
        if trainer.is_global_zero:
            log.warning("%s at step %d: saved %s; resume with: %s", _stopped_by(exception),
                        trainer.global_step, self.path, resume_command(command_run_dir(self.path.parent.parent)))


def _stopped_by(exception: BaseException) -> str:
    """How a training stop is said: Ctrl-C, SIGTERM (Lightning's ``SIGTERMException``), or an error."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(exception, KeyboardInterrupt):
        return "interrupted"
    return "stopped by SIGTERM" if isinstance(exception, SIGTERMException) else "stopped by an error"


def resume_command(run_dir: Path) -> str:
    """The command line that resumes the run in ``run_dir`` (the command's run directory, not a
    phase's ``pretrain/`` or ``baseline/``) with this run's overrides: ``ckpt_path=last`` when its
    own ``checkpoints/`` holds one; without, the same command in the same directory, whose
    pretraining or baseline goes on from the checkpoints it left."""
    from hydra.core.hydra_config import HydraConfig

    overrides = []
    if HydraConfig.initialized():  # outside Hydra: the bare command
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    if any((Path(run_dir) / "checkpoints").glob("*.ckpt")):
        overrides.append("ckpt_path=last")
    quoted = " ".join(shlex.quote(o) for o in overrides)
    return f"python -m taid_car.run {quoted}{' ' if quoted else ''}hydra.run.dir={shlex.quote(str(run_dir))}"


def command_run_dir(fallback: Path) -> Path:
    """The run directory of the command (Hydra's), ``fallback`` outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    found = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None, throw_on_missing=False) \
        if HydraConfig.initialized() else None
    return Path(found) if found else Path(fallback)
