"""The ``Rescaler`` LightningModule: a downscaler and an upscaler trained end-to-end.

``HR -> downscaler -> LR channel (8 bit, then png / jpeg) -> LR -> upscaler -> SR``; the loss is
``l1 * L1(SR, HR)`` plus the weighted terms the downscaler's own ``regularizers(hr, lr)``
returns (:class:`~taid_car.models.downscaler.Downscaler`: CAR's ``offset_magnitude`` /
``offset_tv``, TAID's ``guidance``), plus ``out_of_range``, which every model has: the
:func:`~taid_car.models.quantize.out_of_range_penalty` of every image rounded to 8 bit (the LR,
and a recursion's intermediate LRs) before rounding, since the quantiser gives values outside
[0, 1] no gradient. A weight for a term the downscaler does not produce is an error, not
silently dropped.

The LR channel (:mod:`taid_car.channel`, config group ``channel``) is the pair's: training goes
through ``channel.train`` (png: the 8-bit rounding with the run's quantiser; jpeg: the real
codec with an identity gradient, or a differentiable JPEG; a quality range drawn per batch),
validation and test through its real codec (``channel.code``), the Bicubic & Bicubic reference
too. The test scores every channel of ``channel.test_qualities`` besides the run's own, one
results row each (logged as ``test/<set>/<channel>/<metric>``; the own channel's as before).

Validation and test run per benchmark set (one dataloader each) and log
``{stage}/{set}/{metric}``: Y PSNR/SSIM of SR vs HR, LR fidelity vs bicubic LR, and at test time
RGB PSNR and the Bicubic & Bicubic reference. Swapping CAR for TAID is a config choice.

A non-finite loss or gradient (checked after backward, before the optimiser step, on every
rank alike) stops training with :class:`~taid_car.errors.TrainingDiverged` naming the step and
the loss terms (``on_nonfinite="stop"``), or skips that update (``"skip"``: no parameter
changes, at most ``max_skipped_in_row`` in a row). Checkpoints keep the RNG states, so a
resumed run draws what the uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric, MetricCollection

from taid_car.channel import LRChannel, build_channel, scoring_channels
from taid_car.errors import ConfigError, TrainingDiverged
from taid_car.models.downscaler import Downscaler
from taid_car.models.pair import own_parameters, pair_parameter_counts, shared_parameters
from taid_car.models.quantize import Quantizer, out_of_range_penalty
from taid_car.scoring.pipeline import rescale_and_score_channels
from taid_car.scoring.results import SetResult
from taid_car.scoring.tasks import task_of

log = logging.getLogger(__name__)

#: what a non-finite loss or gradient does: stop the run, or skip that optimiser step
ON_NONFINITE = ("stop", "skip")

#: the training block of a method: the keys of its ``model`` config (``conf/model/_base.yaml``
#: writes their defaults) that are :class:`Rescaler` arguments of the same name
TRAINING_OPTIONS = ("quantize", "quantize_through_clamp", "loss_weights", "downscaler_lr_scale", "grad_clip_norm")
#: the other keys of a ``model`` config: the method's name and downscaler (models/pair.py), its fair
#: baseline and pretraining (training/baseline.py)
METHOD_KEYS = ("name", "downscaler", "baseline_model", "baseline_upscaler", "pretrain_steps")


def training_options(model_cfg: Mapping) -> dict[str, Any]:
    """The training block of a ``model`` config (a DictConfig inside its run config, or a dict) as
    :class:`Rescaler` keyword arguments, resolved: every key but :data:`METHOD_KEYS`. So a new
    training knob is a key in ``conf/model/_base.yaml`` and an argument here, and ``run`` names
    none of them. A key that is neither is a :class:`ConfigError` naming it."""
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    options = {key: value for key, value in node.items() if key not in METHOD_KEYS}
    stray = sorted(set(options) - set(TRAINING_OPTIONS))
    if stray:
        raise ConfigError(f"model.{stray[0]}: neither a training option of the Rescaler ({', '.join(TRAINING_OPTIONS)}) "
                          f"nor a key of the method ({', '.join(METHOD_KEYS)}); a new training knob is a key in "
                          "conf/model/_base.yaml and a Rescaler argument of the same name")
    return options


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
        quantize: LR quantiser backward rule of the rounding, ``ste`` or ``soft`` (forward
            always rounds); the run's :class:`~taid_car.models.quantize.Quantizer` is also given to
            the downscaler (``downscaler.quantizer``) for the images it rounds inside.
        quantize_through_clamp: the old rule, gradients straight through the clamp too (values
            outside [0, 1] get them as if inside); default False, the clamp's own gradient.
        channel: the ``channel`` config node (name png | jpeg, quality, subsampling, train_rule,
            test_qualities); None: png. Built with the run's quantiser, and also given to the
            downscaler (``downscaler.channel``) for losses that need the codec itself.
        optimizer: partial optimiser, called with the parameters.
        scheduler: optional partial LR scheduler, called with the optimiser; stepped per step.
        val_set_names / test_set_names: one name per val/test dataloader, in order.
        method: label for tables, e.g. ``"car & edsr"``.
        config: the run's resolved config, saved in checkpoints to rebuild the modules.
        downscaler_lr_scale: the downscaler's learning rate is the optimiser's times this
            (its own parameter group; the scheduler scales both groups alike).
        grad_clip_norm: the model's own gradient-norm bound (IRN's clipping), applied before the
            trainer's ``gradient_clip_val``; None: none.
        on_nonfinite: ``stop`` (default): a non-finite loss or gradient ends training with
            :class:`~taid_car.errors.TrainingDiverged`; ``skip``: that step changes nothing
            (its gradients are dropped), up to ``max_skipped_in_row`` steps in a row.
    """

    def __init__(
        self,
        downscaler: nn.Module,
        upscaler: nn.Module,
        scale: int,
        loss_weights: dict[str, float] | None = None,
        quantize: str = "ste",
        quantize_through_clamp: bool = False,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        val_set_names: Sequence[str] = (),
        test_set_names: Sequence[str] = (),
        method: str = "",
        config: dict | None = None,
        downscaler_lr_scale: float = 1.0,
        on_nonfinite: str = "stop",
        max_skipped_in_row: int = 20,
        grad_clip_norm: float | None = None,
        channel: dict | None = None,
    ) -> None:
        super().__init__()
        if grad_clip_norm is not None and not float(grad_clip_norm) > 0:
            raise ConfigError(f"model.grad_clip_norm={grad_clip_norm!r}: must be > 0 (or null)")
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        if on_nonfinite not in ON_NONFINITE:
            raise ConfigError(f"on_nonfinite={on_nonfinite!r}: must be one of {', '.join(ON_NONFINITE)}")
        self.on_nonfinite, self.max_skipped_in_row = on_nonfinite, int(max_skipped_in_row)
        self.skipped_steps, self._skipped_in_row = 0, 0
        #: seconds of training before this process (from the checkpoint resumed), and when this fit began
        self.train_seconds_before_resume, self._fit_started = 0.0, None
        self._last_terms: dict[str, torch.Tensor] = {}
        if not isinstance(downscaler, Downscaler):
            raise TypeError(
                f"downscaler must be a taid_car.models.downscaler.Downscaler (forward, "
                f"regularizers, size_multiple), got {type(downscaler).__name__}"
            )
        self.downscaler, self.upscaler, self.scale = downscaler, upscaler, int(scale)
        self.loss_weights = resolve_loss_weights(loss_weights, downscaler)
        self.quantizer = downscaler.quantizer = Quantizer(quantize, bool(quantize_through_clamp))
        #: the LR channel training goes through; validation codes through ``val_channel``, the test
        #: through each of ``test_channels`` (the own evaluation channel first)
        self.channel: LRChannel = build_channel(channel, self.quantizer)
        downscaler.channel = self.channel
        self.val_channel = self.channel.evaluation()
        self.test_channels = scoring_channels(channel, self.quantizer, own=True)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.val_set_names, self.test_set_names = list(val_set_names), list(test_set_names)
        self.method, self.config = method, config
        self.task = task_of(downscaler)
        self.scores, self.reference_scores = self.task.scores, self.task.reference_scores
        self.headline = self.task.headline
        if not downscaler_lr_scale > 0:
            raise ValueError(f"downscaler_lr_scale must be > 0, got {downscaler_lr_scale}")
        self.downscaler_lr_scale = float(downscaler_lr_scale)
        self.val_metrics = nn.ModuleList(self._val_collection() for _ in self.val_set_names)
        self.test_metrics = nn.ModuleList(
            nn.ModuleList(self._test_collection() for _ in self.test_channels) for _ in self.test_set_names)
        self.test_results: list[SetResult] = []

    # ----------------------------------------------------------------- forward
    def forward(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """HR (B,3,H,W) in [0,1] -> (LR (B,3,H/s,W/s) through the channel's training forward, on
        the 8-bit grid, SR (B,3,H,W))."""
        lr = self.channel.train(self.downscaler(hr))
        return lr, self.upscaler(lr)

    # ----------------------------------------------------------------- training
    def compute_losses(self, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted loss terms in use (unweighted values) and their weighted sum under ``loss``."""
        unrounded = self.downscaler(hr)
        lr = self.channel.train(unrounded)  # the out_of_range penalty is on the unrounded LR
        sr = self.upscaler(lr)
        terms = {"l1": F.l1_loss(sr, hr)}
        if self.loss_weights["out_of_range"]:
            terms["out_of_range"] = out_of_range_penalty([*self.downscaler.unrounded_intermediates(), unrounded])
        for name, value in self.downscaler.regularizers(hr, lr).items():  # also frees CAR's maps
            if self.loss_weights[name]:
                terms[name] = value
        terms["loss"] = sum(self.loss_weights[name] * value for name, value in terms.items())
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.compute_losses(batch["hr"])
        self._last_terms = {name: value.detach() for name, value in terms.items()}
        if self._logging_step():
            batch_size = batch["hr"].shape[0]
            for name, value in terms.items():
                self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", batch_size=batch_size)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)
        return terms["loss"]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """After backward (before clipping and the update): a non-finite loss term or gradient
        stops training or, with ``on_nonfinite=skip``, drops this step's gradients so the
        optimiser changes nothing. Decided alike on every rank."""
        problem = self._non_finite()
        bad = self.trainer.strategy.reduce_boolean_decision(problem is not None, all=False)
        if not bad:
            self._skipped_in_row = 0
            return
        problem = problem or "non-finite values on another rank"
        if self.on_nonfinite == "skip" and self._skipped_in_row < self.max_skipped_in_row:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None  # torch optimisers leave parameters without gradients alone
            self.skipped_steps += 1
            self._skipped_in_row += 1
            log.warning("step %d skipped (on_nonfinite=skip): %s", self.trainer.global_step + 1, problem)
            self.log("train/skipped_steps", float(self.skipped_steps), batch_size=1)
            return
        raise TrainingDiverged(self._divergence_message(problem, optimizer))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """The model's own bound (``grad_clip_norm``, on every parameter's gradient norm), then
        the trainer's ``gradient_clip_val`` as Lightning applies it."""
        if self.grad_clip_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip_norm, gradient_clip_algorithm="norm")
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    def _non_finite(self) -> str | None:
        """What is not finite in the last step (loss terms, then the first gradient), or None."""
        terms = self._last_terms
        if terms and not all(bool(torch.isfinite(v)) for v in terms.values()):
            return "non-finite loss: " + ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
        for name, param in self.named_parameters():
            if param.grad is not None and not bool(torch.isfinite(param.grad).all()):
                shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
                return f"non-finite gradient of {name} ({shown})"
        return None

    def _divergence_message(self, problem: str, optimizer: torch.optim.Optimizer) -> str:
        step = self.trainer.global_step + 1
        skipped = (f" after {self._skipped_in_row} skipped step(s) in a row" if self._skipped_in_row else "")
        last = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or ""
        return (f"training diverged at step {step}{skipped}: {problem}; no checkpoint was saved for it"
                f"{f' (last good: {last})' if last else ''}. Try a lower optimizer.lr (now "
                f"{optimizer.param_groups[0]['lr']:g}), {self._other_remedies()}")

    def _other_remedies(self) -> str:
        """The divergence remedies besides a lower lr (``on_nonfinite=skip`` only where not set)."""
        clip = "gradient clipping (trainer.gradient_clip_val=10)"
        return f"{clip} or on_nonfinite=skip" if self.on_nonfinite != "skip" else clip

    def _logging_step(self) -> bool:
        """Training scalars are only written every ``log_every_n_steps``: skip the work otherwise."""
        trainer = self._trainer
        if trainer is None or trainer.fast_dev_run:
            return True
        return (trainer.global_step + 1) % max(trainer.log_every_n_steps, 1) == 0

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("Rescaler needs an `optimizer` (a partial, e.g. torch.optim.Adam)")
        # every weight once: a tied upscaler's (shared) weights are in the downscaler's group
        up = own_parameters(self.upscaler, shared_parameters(self.downscaler, self.upscaler))
        down = list(self.downscaler.parameters())
        groups = [{"params": up}] if up or not down else []
        if down:
            groups.append({"params": down})
        optimizer = self.optimizer_factory(params=groups)
        if down:
            optimizer.param_groups[-1]["lr"] *= self.downscaler_lr_scale
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------- evaluation
    def _val_collection(self) -> MetricCollection:
        return MetricCollection({name: PerImageMean() for name in self.task.val_scores})

    def _test_collection(self) -> MetricCollection:
        return MetricCollection({name: PerImageMean() for name in (*self.scores, *self.reference_scores)})

    def _evaluate(self, batch: dict, collections: Sequence[MetricCollection], channels: Sequence[LRChannel],
                  with_reference: bool) -> None:
        """Score the batch through :func:`~taid_car.scoring.pipeline.rescale_and_score_channels`,
        the function ``evaluate`` uses too, once per channel, and add its per-image scores to the
        set's means of that channel."""
        outs = rescale_and_score_channels(
            self.downscaler, self.upscaler, batch["hr"], self.scale, batch["is_gray"], list(channels), with_reference
        )
        for metrics, out in zip(collections, outs):
            for name, metric in metrics.items():
                metric.update(out.scores[name])

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, [self.val_metrics[dataloader_idx]], [self.val_channel], with_reference=False)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self.test_metrics[dataloader_idx], self.test_channels, with_reference=True)

    def _log_sets(self, stage: str, names: Sequence[str], collections: nn.ModuleList,
                  channels: Sequence[LRChannel] | None = None) -> list[dict]:
        """Log and return one row per set (and per channel of ``channels``: the first logged as
        ``{stage}/{set}/{score}``, the others as ``{stage}/{set}/{channel}/{score}``)."""
        rows = []
        for name, per_set in zip(names, collections):
            for index, metrics in enumerate(per_set if channels else [per_set]):
                channel = channels[index] if channels else None
                prefix = f"{stage}/{name}" + (f"/{channel_log_key(channel)}" if index else "")
                with metrics[self.headline].sync_context():  # images seen by all ranks, each once
                    count = int(metrics[self.headline].count)
                values = {key: metric.compute() for key, metric in metrics.items()}
                for key, value in values.items():
                    self.log(f"{prefix}/{key}", value.float(), add_dataloader_idx=False, sync_dist=False)
                record = channel.record() if channel is not None else {}
                rows.append({"set_name": name, "images": count, **record, **{k: v.item() for k, v in values.items()}})
                metrics.reset()
        return rows

    def on_validation_epoch_end(self) -> None:
        rows = self._log_sets("val", self.val_set_names, self.val_metrics)
        if rows:  # the first set's headline (Y PSNR; RGB PSNR for colorization) drives checkpoints: val/headline
            if not math.isfinite(rows[0][self.headline]) and not self.trainer.sanity_checking:
                raise TrainingDiverged(
                    f"training diverged by step {self.trainer.global_step}: validation {rows[0]['set_name']} "
                    f"{self.headline} = {rows[0][self.headline]}; no checkpoint was saved for it. Try a lower "
                    f"optimizer.lr, {self._other_remedies()}")
            self.log("val/headline", rows[0][self.headline], prog_bar=True)

    def on_test_epoch_end(self) -> None:
        rows = self._log_sets("test", self.test_set_names, self.test_metrics, self.test_channels)
        self.test_results = [
            SetResult(method=self.method, scale=self.scale, task=self.task.name, **row) for row in rows
        ]

    # ----------------------------------------------------------------- checkpoints
    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()

    def train_seconds(self) -> float:
        """Wall-clock seconds of training so far, s, across resumes: the resumed checkpoint's
        total plus this process's fit (time lost after the last checkpoint is not counted: the run
        repeats those steps)."""
        this_fit = 0.0 if self._fit_started is None else time.perf_counter() - self._fit_started
        return self.train_seconds_before_resume + this_fit

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["taid_car_config"] = self.config
        if (self.config or {}).get("output_dir"):  # which run wrote it: a copied run directory is another run
            checkpoint["taid_car_run_dir"] = str(Path(self.config["output_dir"]).resolve())
        for logger in self.loggers:  # lets a resumed run continue the same W&B run
            if type(logger).__name__ == "WandbLogger":
                checkpoint["taid_car_wandb_id"] = logger.version
        checkpoint["taid_car_parameters"] = pair_parameter_counts(self.downscaler, self.upscaler)
        checkpoint["taid_car_rng"] = rng_states()
        checkpoint["taid_car_skipped_steps"] = self.skipped_steps
        checkpoint["taid_car_train_seconds"] = self.train_seconds()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming: the RNG states of the moment the checkpoint was saved, so whatever the
        training step draws (noise, sampling) continues as in the uninterrupted run."""
        if "taid_car_rng" in checkpoint:
            set_rng_states(checkpoint["taid_car_rng"])
        self.skipped_steps = int(checkpoint.get("taid_car_skipped_steps", 0))
        if self._trainer is not None and self._trainer.state.fn == "fit":  # testing a checkpoint does not change the run's time
            self.train_seconds_before_resume = float(checkpoint.get("taid_car_train_seconds", 0.0))


def channel_log_key(channel: LRChannel) -> str:
    """The channel in a logged metric's name: ``jpeg_q30_420``, ``webp_q80``."""
    return channel.label.replace(" ", "_").replace(":", "")


def rng_states() -> dict:
    """Python, NumPy, torch (CPU and every CUDA device) RNG states as tensors and plain values
    (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` recorded."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = states["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def resolve_loss_weights(weights: dict[str, float] | None, downscaler: Downscaler) -> dict[str, float]:
    """``{"l1", "out_of_range", *downscaler.regularizer_names}`` -> weight (l1 defaults to 1,
    the others to 0).

    Raises ValueError naming the term and the downscaler for a nonzero weight on a term it does
    not produce (e.g. ``offset_tv`` on a TAID run); zero weights for other names are ignored.
    """
    known = ("l1", "out_of_range", *downscaler.regularizer_names)
    given = {"l1": 1.0, **dict(weights or {})}
    stray = sorted(name for name, value in given.items() if name not in known and float(value) != 0.0)
    if stray:
        raise ValueError(
            f"model.loss_weights: {', '.join(f'{n}={given[n]}' for n in stray)} weight(s) a term "
            f"that {type(downscaler).__name__} does not produce; its terms are {list(known)}"
        )
    return {name: float(given.get(name, 0.0)) for name in known}
