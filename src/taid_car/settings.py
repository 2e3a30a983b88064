"""Start-up checks of a run's numeric settings: a value out of range is one line naming its key,
before anything is built, so none reaches Lightning or torch (which would answer with a long
traceback, or, for ``trainer.max_steps=-1``, silently train 1000 epochs on a schedule of length -1).

Each rule names a key (a dotted path into the composed config), what it must be, and what it is
for. A key the config does not hold is not checked (a scheduler without ``milestones``, a logger
group left out); ``model.loss_weights.*`` is checked entry by entry. Imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf

from taid_car.errors import UsageError

_MISSING = object()


class SettingError(UsageError):
    """A numeric setting out of its range: exit status 2, the key named."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def positive_int(value) -> bool:
    return _is_int(value) and value >= 1


def non_negative_int(value) -> bool:
    return _is_int(value) and value >= 0


def positive_number(value) -> bool:
    return _is_number(value) and value > 0


def non_negative_number(value) -> bool:
    return _is_number(value) and value >= 0


def optional(rule: Callable[[object], bool]) -> Callable[[object], bool]:
    """``rule``, or null."""
    return lambda value: value is None or rule(value)


def steps_or_fraction(value) -> bool:
    """Lightning's ``val_check_interval``: a step count >= 1, or a fraction of an epoch in (0, 1]."""
    if _is_int(value):
        return value >= 1
    return _is_number(value) and 0 < value <= 1


def devices(value) -> bool:
    """A device count >= 1, ``auto``, ``-1`` (all), or a list of device indices."""
    if value in ("auto", -1):
        return True
    if isinstance(value, str):
        return all(part.strip().isdigit() for part in value.split(",") if part.strip()) and bool(value.strip())
    if isinstance(value, (list, tuple, ListConfig)):
        return len(value) > 0 and all(non_negative_int(v) for v in value)
    return positive_int(value)


def betas(value) -> bool:
    """Adam's two decay rates, each in [0, 1)."""
    return (isinstance(value, (list, tuple, ListConfig)) and len(value) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in value))


def milestones(value) -> bool:
    """Steps of a step schedule: positive integers."""
    return isinstance(value, (list, tuple, ListConfig)) and all(positive_int(v) for v in value)


def save_top_k(value) -> bool:
    """Lightning's ``save_top_k``: -1 (all), 0 (none) or a count."""
    return _is_int(value) and value >= -1


def seed(value) -> bool:
    return value is None or non_negative_int(value)


@dataclass(frozen=True)
class Rule:
    """``key`` (dotted) must satisfy ``check``; ``need`` says what it must be, for the message."""

    key: str
    check: Callable[[object], bool]
    need: str


RUN_RULES: tuple[Rule, ...] = (
    Rule("seed", seed, "an integer >= 0, or null for no seeding"),
    Rule("trainer.max_steps", positive_int,
         "the number of training steps, an integer >= 1 (the learning-rate schedule's length follows it)"),
    Rule("trainer.max_epochs", optional(lambda v: _is_int(v) and v >= -1),
         "an integer >= 1, -1 (no limit) or null"),
    Rule("trainer.val_check_interval", optional(steps_or_fraction),
         "training steps between validations, an integer >= 1 (or a fraction of an epoch in (0, 1])"),
    Rule("trainer.check_val_every_n_epoch", optional(positive_int), "an integer >= 1, or null"),
    Rule("trainer.log_every_n_steps", positive_int, "an integer >= 1"),
    Rule("trainer.devices", devices, "a device count >= 1, auto, or a list of device indices"),
    Rule("trainer.num_nodes", positive_int, "an integer >= 1"),
    Rule("trainer.accumulate_grad_batches", positive_int, "an integer >= 1"),
    Rule("trainer.gradient_clip_val", optional(positive_number), "a gradient-norm bound > 0, or null"),
    Rule("trainer.num_sanity_val_steps", lambda v: _is_int(v) and v >= -1, "an integer >= 0 (-1: all)"),
    Rule("data.batch_size", positive_int, "the training batch size, an integer >= 1"),
    Rule("data.lr_patch_size", positive_int, "the LR patch side in px, an integer >= 1"),
    Rule("data.repeats", positive_int, "patches per training image per epoch, an integer >= 1"),
    Rule("data.num_workers", non_negative_int, "data-loading processes, an integer >= 0"),
    Rule("data.holdout", non_negative_int, "training images held out for validation, an integer >= 0"),
    Rule("data.modcrop", optional(positive_int), "an HR crop multiple >= 1, or null"),
    Rule("optimizer.lr", positive_number, "the learning rate, a finite number > 0"),
    Rule("optimizer.eps", positive_number, "a finite number > 0"),
    Rule("optimizer.weight_decay", non_negative_number, "a finite number >= 0"),
    Rule("optimizer.betas", betas, "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    Rule("scheduler.T_max", positive_int, "the schedule's length in steps, an integer >= 1"),
    Rule("scheduler.eta_min", non_negative_number, "the final learning rate, a finite number >= 0"),
    Rule("scheduler.milestones", milestones, "a list of steps, each an integer >= 1"),
    Rule("scheduler.gamma", positive_number, "the learning-rate factor at each milestone, a number > 0"),
    Rule("model.downscaler_lr_scale", non_negative_number,
         "the downscaler's learning rate over optimizer.lr, a finite number >= 0"),
    Rule("model.pretrain_steps", non_negative_int, "steps of bicubic + upscaler first, an integer >= 0"),
    Rule("model.grad_clip_norm", optional(positive_number), "a gradient-norm bound > 0, or null"),
    Rule("callbacks.panels.every_n_steps", positive_int, "an integer >= 1"),
    Rule("callbacks.panels.crop_size", positive_int, "the panel crop side in HR px, an integer >= 1"),
    Rule("callbacks.panels.max_images", positive_int, "an integer >= 1"),
    Rule("callbacks.checkpoint.save_top_k", save_top_k, "-1 (all), 0 (none) or a count >= 1"),
    Rule("callbacks.periodic.train_time_interval.minutes", positive_number,
         "minutes of training between periodic checkpoints, a number > 0"),
)


def _get(cfg: DictConfig, key: str):
    """The value at dotted ``key`` (lists and dicts as plain containers), or ``_MISSING``."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return _MISSING
        node = node[part]
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def _loss_weight_rules(cfg: DictConfig) -> Iterator[Rule]:
    weights = OmegaConf.select(cfg, "model.loss_weights")
    for name in (weights or {}):
        yield Rule(f"model.loss_weights.{name}", non_negative_number, "a loss weight, a finite number >= 0")


def check_settings(cfg: DictConfig, rules: tuple[Rule, ...] = RUN_RULES) -> None:
    """Raise :class:`SettingError` (``<key>=<value>: <what it must be>``) for the first setting of
    ``cfg`` out of its range; every rule of ``rules`` and each ``model.loss_weights`` entry."""
    for rule in (*rules, *_loss_weight_rules(cfg)):
        value = _get(cfg, rule.key)
        if value is _MISSING:
            continue
        if not rule.check(value):
            raise SettingError(f"{rule.key}={value!r}: {rule.need}")
