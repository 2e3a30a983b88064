"""The ``Rescaler`` LightningModule: a downscaler and an upscaler trained end-to-end.

``HR -> downscaler -> quantise to 8 bit -> LR -> upscaler -> SR``; the loss is
``l1 * L1(SR, HR)`` plus the weighted terms the downscaler's own ``regularizers(hr, lr)``
returns (:class:`~taid_car.models.downscaler.Downscaler`: CAR's ``offset_magnitude`` /
``offset_tv``, TAID's ``guidance``). A weight for a term the downscaler does not produce is an
error, not silently dropped.

Validation and test run per benchmark set (one dataloader each) and log
``{stage}/{set}/{metric}``: Y PSNR/SSIM of SR vs HR, LR fidelity vs bicubic LR, and at test time
RGB PSNR and the Bicubic & Bicubic reference. Swapping CAR for TAID is a config choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric, MetricCollection

from taid_car.models.downscaler import Downscaler
from taid_car.models.quantize import quantize_8bit
from taid_car.scoring.pipeline import TASK_SCORES, rescale_and_score, task_of
from taid_car.scoring.results import SetResult

#: per task, the scores logged at every validation (test logs all of the task's scores)
VAL_SCORES = {"resize": ("psnr_y", "ssim_y", "lr_psnr_y"), "colorize": ("psnr_rgb", "ssim_rgb", "psnr_y", "lr_psnr_y")}


class PerImageMean(Metric):
    """Mean of per-image scores (B,) over a set, in float64, summed over DDP ranks; ``count``
    is the number of images. Sums in image order, as ``evaluate`` does, so both agree bitwise."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        for value in values.detach().reshape(-1).to(torch.float64):
            self.total += value
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Rescaler(L.LightningModule):
    """Downscaler + upscaler, trained jointly.

    Args:
        downscaler: a :class:`~taid_car.models.downscaler.Downscaler`: HR (B,3,H,W) in [0,1]
            -> LR (B,3,H/s,W/s) (float, quantised here), plus its regularisers.
        upscaler: LR (B,3,h,w) -> SR (B,3,h*s,w*s).
        scale: integer factor.
        loss_weights: weights of ``l1`` (default 1) and of the downscaler's
            ``regularizer_names`` (default 0); a nonzero weight for any other name is an error.
        quantize: LR quantiser backward rule, ``ste`` or ``soft`` (forward always rounds).
        optimizer: partial optimiser, called with the parameters.
        scheduler: optional partial LR scheduler, called with the optimiser; stepped per step.
        val_set_names / test_set_names: one name per val/test dataloader, in order.
        method: label for tables, e.g. ``"car & edsr"``.
        config: the run's resolved config, saved in checkpoints to rebuild the modules.
        downscaler_lr_scale: the downscaler's learning rate is the optimiser's times this
            (its own parameter group; the scheduler scales both groups alike).
    """

    def __init__(
        self,
        downscaler: nn.Module,
        upscaler: nn.Module,
        scale: int,
        loss_weights: dict[str, float] | None = None,
        quantize: str = "ste",
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        val_set_names: Sequence[str] = (),
        test_set_names: Sequence[str] = (),
        method: str = "",
        config: dict | None = None,
        downscaler_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(downscaler, Downscaler):
            raise TypeError(
                f"downscaler must be a taid_car.models.downscaler.Downscaler (forward, "
                f"regularizers, size_multiple), got {type(downscaler).__name__}"
            )
        self.downscaler, self.upscaler, self.scale = downscaler, upscaler, int(scale)
        self.loss_weights = resolve_loss_weights(loss_weights, downscaler)
        self.quantize_mode = quantize
        quantize_8bit(torch.zeros(1), quantize)  # validates the mode now, not mid-run
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.val_set_names, self.test_set_names = list(val_set_names), list(test_set_names)
        self.method, self.config = method, config
        self.task = task_of(downscaler)
        self.scores, self.reference_scores, self.headline = TASK_SCORES[self.task]
        if not downscaler_lr_scale > 0:
            raise ValueError(f"downscaler_lr_scale must be > 0, got {downscaler_lr_scale}")
        self.downscaler_lr_scale = float(downscaler_lr_scale)
        self.val_metrics = nn.ModuleList(self._val_collection() for _ in self.val_set_names)
        self.test_metrics = nn.ModuleList(self._test_collection() for _ in self.test_set_names)
        self.test_results: list[SetResult] = []

    # ----------------------------------------------------------------- forward
    def forward(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """HR (B,3,H,W) in [0,1] -> (LR (B,3,H/s,W/s) on the 8-bit grid, SR (B,3,H,W))."""
        lr = quantize_8bit(self.downscaler(hr), self.quantize_mode)
        return lr, self.upscaler(lr)

    # ----------------------------------------------------------------- training
    def compute_losses(self, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted loss terms in use (unweighted values) and their weighted sum under ``loss``."""
        lr, sr = self(hr)
        terms = {"l1": F.l1_loss(sr, hr)}
        for name, value in self.downscaler.regularizers(hr, lr).items():  # also frees CAR's maps
            if self.loss_weights[name]:
                terms[name] = value
        terms["loss"] = sum(self.loss_weights[name] * value for name, value in terms.items())
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.compute_losses(batch["hr"])
        if self._logging_step():
            batch_size = batch["hr"].shape[0]
            for name, value in terms.items():
                self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", batch_size=batch_size)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)
        return terms["loss"]

    def _logging_step(self) -> bool:
        """Training scalars are only written every ``log_every_n_steps``: skip the work otherwise."""
        trainer = self._trainer
        if trainer is None or trainer.fast_dev_run:
            return True
        return (trainer.global_step + 1) % max(trainer.log_every_n_steps, 1) == 0

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("Rescaler needs an `optimizer` (a partial, e.g. torch.optim.Adam)")
        groups = [{"params": list(self.upscaler.parameters())}]
        down = list(self.downscaler.parameters())
        if down:
            groups.append({"params": down})
        optimizer = self.optimizer_factory(params=groups)
        if down:
            optimizer.param_groups[1]["lr"] *= self.downscaler_lr_scale
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------- evaluation
    def _val_collection(self) -> MetricCollection:
        return MetricCollection({name: PerImageMean() for name in VAL_SCORES[self.task]})

    def _test_collection(self) -> MetricCollection:
        return MetricCollection({name: PerImageMean() for name in (*self.scores, *self.reference_scores)})

    def _evaluate(self, batch: dict, metrics: MetricCollection, with_reference: bool) -> None:
        """Score the batch through :func:`~taid_car.scoring.pipeline.rescale_and_score`, the
        function ``evaluate`` uses too, and add its per-image scores to the set's means."""
        out = rescale_and_score(
            self.downscaler, self.upscaler, batch["hr"], self.scale, batch["is_gray"], with_reference
        )
        for name, metric in metrics.items():
            metric.update(out.scores[name])

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self.val_metrics[dataloader_idx], with_reference=False)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self.test_metrics[dataloader_idx], with_reference=True)

    def _log_sets(self, stage: str, names: Sequence[str], collections: nn.ModuleList) -> list[dict]:
        rows = []
        for name, metrics in zip(names, collections):
            with metrics[self.headline].sync_context():  # images seen by all ranks, each once
                count = int(metrics[self.headline].count)
            values = {key: metric.compute() for key, metric in metrics.items()}
            for key, value in values.items():
                self.log(f"{stage}/{name}/{key}", value.float(), add_dataloader_idx=False, sync_dist=False)
            rows.append({"set_name": name, "images": count, **{k: v.item() for k, v in values.items()}})
            metrics.reset()
        return rows

    def on_validation_epoch_end(self) -> None:
        rows = self._log_sets("val", self.val_set_names, self.val_metrics)
        if rows:  # the first set's headline (Y PSNR; RGB PSNR for colorization) drives checkpoints
            self.log(f"val/{self.headline}", rows[0][self.headline], prog_bar=True)

    def on_test_epoch_end(self) -> None:
        rows = self._log_sets("test", self.test_set_names, self.test_metrics)
        self.test_results = [
            SetResult(method=self.method, scale=self.scale, **row) for row in rows
        ]

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["taid_car_config"] = self.config
        for logger in self.loggers:  # lets a resumed run continue the same W&B run
            if type(logger).__name__ == "WandbLogger":
                checkpoint["taid_car_wandb_id"] = logger.version
        checkpoint["taid_car_parameters"] = {
            "downscaler": count_parameters(self.downscaler),
            "upscaler": count_parameters(self.upscaler),
        }


def resolve_loss_weights(weights: dict[str, float] | None, downscaler: Downscaler) -> dict[str, float]:
    """``{"l1", *downscaler.regularizer_names}`` -> weight (l1 defaults to 1, the others to 0).

    Raises ValueError naming the term and the downscaler for a nonzero weight on a term it does
    not produce (e.g. ``offset_tv`` on a TAID run); zero weights for other names are ignored.
    """
    known = ("l1", *downscaler.regularizer_names)
    given = {"l1": 1.0, **dict(weights or {})}
    stray = sorted(name for name, value in given.items() if name not in known and float(value) != 0.0)
    if stray:
        raise ValueError(
            f"model.loss_weights: {', '.join(f'{n}={given[n]}' for n in stray)} weight(s) a term "
            f"that {type(downscaler).__name__} does not produce; its terms are {list(known)}"
        )
    return {name: float(given.get(name, 0.0)) for name in known}
