"""The fair baseline of a learned downscaler: bicubic LR + the *same* upscaler, same schedule.

A single ``python -m taid_car.run model=car`` answers "did the learned downscaler help?" only
beside this row: Bicubic & Bicubic is beaten by any trained upscaler. :func:`baseline_config`
turns a run's config into the bicubic run with the same upscaler, data (and HR crops), trainer,
optimiser, scheduler, seed and LR channel (a run through ``channel=jpeg`` has a baseline whose
upscaler learns JPEG-coded bicubic LR; the pretraining too); :func:`gain_lines` states the difference per test set.

``baseline`` in ``config.yaml``: ``auto`` (on for a single run of a learned downscaler; in
multirun sweeps, where bicubic is a job of its own, only for runs with ``model.pretrain_steps``,
which that job did not get), ``true`` or ``false``.

The model config names its baseline: ``model.baseline_model`` (``bicubic`` unless it says
otherwise, e.g. colorization's ``gray``) and ``model.baseline_upscaler`` (null: the run's own
upscaler; ``size_matched``: an EDSR of the run's pair's size, which a tied upscaler needs, since
bicubic has no inverse to share; or an ``upscaler`` config name).

``model.pretrain_steps`` (0: none): first train bicubic + the upscaler for that many steps
(:func:`pretrain_config`, into ``<run>/pretrain``) and start both the learned run's upscaler and
the baseline's from it (``upscaler.init_from``), so the two still get equal budgets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from taid_car.channel import channel_label
from taid_car.config import CONFIG_DIR, group_config
from taid_car.errors import ConfigError
from taid_car.scoring.results import SetResult
from taid_car.scoring.tasks import RESIZE, SCORES, Task, task_of_result

BASELINE_MODEL = "bicubic"  # the fixed baseline of resizing; a model config may name its own (`baseline_model`)
BASELINE_CHOICES = ("auto", True, False)
#: ``model.baseline_upscaler`` for an upscaler of the method's own size (:func:`size_matched_upscaler`)
SIZE_MATCHED = "size_matched"

#: Differences smaller than this (dB) are called level: the run-to-run spread measured in
#: ``experiments/cpu_study`` (one seed, same configuration, validation schedule changed) is ~0.15 dB.
NOISE_DB = 0.1

#: Fewer training steps than this give no verdict on the learned downscaler (a smoke run: one
#: step of ``debug=fast_dev_run`` or the tests' 2). The main job trains 2000, ``experiments/``
#: 150 and more; 100 is far below any run meant to compare, far above any smoke run.
MIN_VERDICT_STEPS = 100


def wants_baseline(cfg: DictConfig, multirun: bool) -> bool:
    """Whether this run trains the bicubic + same-upscaler baseline after its own test."""
    choice = cfg.get("baseline", "auto")
    if choice not in BASELINE_CHOICES:
        raise ValueError(f"baseline must be one of auto, true, false; got {choice!r}")
    if not cfg.get("test") or cfg.model.name == baseline_model(cfg):
        return False
    if choice == "auto":  # a sweep's bicubic job did not get the pretraining steps: not equal budget
        return not multirun or pretrain_steps(cfg) > 0
    return bool(choice)


def baseline_model(cfg: DictConfig) -> str:
    """Name of the model config of ``cfg``'s fixed baseline: ``bicubic``, or the model's own
    ``baseline_model`` (``gray`` for colorization: plain gray + the same decoder)."""
    return str(cfg.model.get("baseline_model") or BASELINE_MODEL)


def baseline_upscaler(cfg: DictConfig) -> DictConfig | None:
    """The baseline's upscaler config when it is not the run's own (``model.baseline_upscaler``:
    ``size_matched``, :func:`size_matched_upscaler`; or an ``upscaler`` config name); None: the
    same upscaler."""
    name = cfg.model.get("baseline_upscaler")
    if not name:
        if cfg.upscaler.get("tied"):
            raise ConfigError(
                f"model={cfg.model.name} ties its upscaler to the downscaler (upscaler.tied=true), so its "
                f"baseline cannot share it: set model.baseline_upscaler to {SIZE_MATCHED} or an upscaler "
                "config, or baseline=false")
        return None
    if name == SIZE_MATCHED:
        return size_matched_upscaler(cfg)
    if not Path(CONFIG_DIR, "upscaler", f"{name}.yaml").is_file():
        raise ConfigError(f"model.baseline_upscaler={name}: no conf/upscaler/{name}.yaml (or {SIZE_MATCHED})")
    upscaler = group_config("upscaler", name)
    with open_dict(upscaler):
        upscaler.init_from = None
    return upscaler


def size_matched_upscaler(cfg: DictConfig) -> DictConfig:
    """``model.baseline_upscaler=size_matched``: an EDSR of EDSR-tiny's shape (4 blocks) whose
    feature count makes its parameter count the closest to the run's own pair at its scale
    (:func:`~taid_car.models.edsr.size_matched_width`), named ``edsr_<model>_size``: bicubic + an
    upscaler as large as the method, the fair baseline of a tied pair (IRN: 38 / 63 / 107
    features at ×2 / ×4 / ×8 for its tiny preset)."""
    from taid_car.models.edsr import size_matched_width
    from taid_car.models.pair import pair_size

    width = size_matched_width(pair_size(cfg.model, cfg.upscaler), int(cfg.scale))
    return OmegaConf.create({
        "name": f"edsr_{cfg.model.name}_size",
        "net": {"_target_": "taid_car.models.edsr.build_edsr", "preset": "tiny", "scale": "${scale}", "n_feats": width},
        "init_from": None,
    })


def pretrain_steps(cfg: DictConfig) -> int:
    """Steps of bicubic pretraining the learned run asks for (``model.pretrain_steps``, 0: none)."""
    if cfg.model.name == baseline_model(cfg):
        return 0
    steps = int(cfg.model.get("pretrain_steps") or 0)
    if steps < 0:
        raise ValueError(f"model.pretrain_steps must be >= 0, got {steps}")
    return steps


def learned_crop_multiple(cfg: DictConfig) -> int:
    """The HR crop multiple of ``cfg``'s downscaler (:func:`~taid_car.models.downscaler.crop_multiple`
    of ``data.modcrop``), built once to ask it; the global RNG state is left as it was."""
    import torch

    from taid_car.models.downscaler import crop_multiple
    from taid_car.models.pair import build_downscaler

    with torch.random.fork_rng(devices=[]):
        downscaler = build_downscaler(cfg.model)
    return crop_multiple(downscaler, cfg.data.get("modcrop"))


def bicubic_counterpart(cfg: DictConfig, subdir: str) -> DictConfig:
    """``cfg`` with the bicubic downscaler, into ``<run>/<subdir>``, everything else the same.

    The HR crop multiple of the learned run (e.g. 8 for CAR) is kept, so both are scored on the
    same pixels; loggers are reduced to CSV (one W&B run per command). When ``<run>/<subdir>``
    already holds checkpoints (an earlier process of this run was stopped in that phase), it goes
    on from the newest (``ckpt_path=last``) instead of starting over.
    """
    base = cfg.copy()
    name = baseline_model(cfg)
    if not Path(CONFIG_DIR, "model", f"{name}.yaml").is_file():
        raise ConfigError(f"model.baseline_model={name}: no conf/model/{name}.yaml")
    model = group_config("model", name)  # its keys and the shared ones of conf/model/_base.yaml
    upscaler = baseline_upscaler(cfg)
    with open_dict(base):
        base.model = model
        if upscaler is not None:
            base.upscaler = upscaler
        base.data.modcrop = learned_crop_multiple(cfg)
        base.output_dir = str(Path(cfg.output_dir) / subdir)
        base.baseline = False
        base.ckpt_path = "last" if any((Path(base.output_dir) / "checkpoints").glob("*.ckpt")) else None
        base.logger = {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger",
                               "save_dir": "${output_dir}", "name": "csv"}}
    return base


def baseline_config(cfg: DictConfig) -> DictConfig:
    """The bicubic run matching ``cfg`` (same schedule and upscaler start), in ``<run>/baseline``."""
    return bicubic_counterpart(cfg, "baseline")


def pretrain_config(cfg: DictConfig) -> DictConfig:
    """Bicubic + the upscaler for ``cfg.model.pretrain_steps`` steps (untested), in ``<run>/pretrain``."""
    steps = pretrain_steps(cfg)
    pre = bicubic_counterpart(cfg, "pretrain")
    with open_dict(pre):
        pre.trainer.max_steps = steps
        pre.trainer.val_check_interval = min(int(cfg.trainer.val_check_interval), steps)
        pre.test = False
    return pre


def _task(results: Sequence[SetResult]) -> Task:
    """The task a gain is stated for: its headline and SSIM (Y for resizing, RGB for colorization)."""
    return task_of_result(results[0].as_row()) if results else RESIZE


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def no_verdict_reason(steps: int | None, fast_dev_run: bool = False) -> str | None:
    """Why a comparison after ``steps`` training steps says nothing about which downscaler is
    better (``debug=fast_dev_run``, or fewer than :data:`MIN_VERDICT_STEPS`); None for a real run
    (``steps`` None: not known, judged as before)."""
    if fast_dev_run:
        done = f" after {_steps(steps)}" if steps else ""
        return f"no verdict{done}: trainer.fast_dev_run (debug=fast_dev_run) is a smoke test, not a comparison"
    if steps is not None and steps < MIN_VERDICT_STEPS:
        return (f"no verdict after {_steps(steps)}: the difference says nothing yet (a verdict needs at "
                f"least {MIN_VERDICT_STEPS} training steps)")
    return None


def gain_lines(
    learned: Sequence[SetResult],
    baseline: Sequence[SetResult],
    steps: int | None = None,
    *,
    fast_dev_run: bool = False,
) -> list[str]:
    """One sentence per test set: learned minus baseline PSNR-Y / SSIM-Y (RGB for colorization),
    and whether it helped: no verdict for a smoke run (``fast_dev_run``: the trainer's flag) or
    one of fewer than :data:`MIN_VERDICT_STEPS` ``steps`` (:func:`no_verdict_reason`)."""
    budget = f", same {_steps(steps)}" if steps else ""
    ups = {r.method.split(" & ")[-1] for r in (*learned[:1], *baseline[:1])}
    upscaler = "same upscaler" if len(ups) == 1 else "the baseline's own upscaler"
    withheld = no_verdict_reason(steps, fast_dev_run)
    method = {"learned": learned[0].method if learned else "", "baseline": baseline[0].method if baseline else ""}
    scales = {_gain_key(r, learned): r.scale for r in learned}
    task = _task(learned)
    psnr, ssim = task.headline, task.headline_ssim
    lines = []
    for set_name, g in gains(learned, baseline).items():
        gain = g[f"gain_{psnr}"]
        verdict = withheld or f"{task.learned} " + (
            "helped" if gain > NOISE_DB else "did not help" if gain < -NOISE_DB
            else f"is level with it (within the ~{NOISE_DB} dB run-to-run spread)"
        )
        lines.append(
            f"{set_name} x{scales[set_name]}: {method['learned']} {g[psnr]:.2f} dB vs {method['baseline']} "
            f"{g[f'baseline_{psnr}']:.2f} dB ({upscaler}{budget}): {gain:+.2f} dB {SCORES[psnr].label}, "
            f"{g[f'gain_{ssim}']:+.4f} {SCORES[ssim].label}; {verdict}."
        )
    return lines


def _gain_key(result: SetResult, rows: Sequence[SetResult]) -> str:
    """A row's key in :func:`gains`: its set name for the run's own LR channel (the first row of
    that set), ``<set> through <channel>`` for the others (``channel.test_qualities``)."""
    first = next(r for r in rows if r.set_name == result.set_name)
    if (result.channel, result.quality, result.subsampling) == (first.channel, first.quality, first.subsampling):
        return result.set_name
    return f"{result.set_name} through {channel_label(result.__dict__)}"


def gains(learned: Sequence[SetResult], baseline: Sequence[SetResult]) -> dict[str, dict[str, float]]:
    """{set: {psnr_y, ssim_y, baseline_psnr_y, baseline_ssim_y, gain_psnr_y, gain_ssim_y}} for run.json
    (``_rgb`` instead of ``_y`` for colorization); rows of the same set and LR channel are
    compared, each of the other channels keyed ``<set> through <channel>`` (:func:`_gain_key`)."""
    by_key = {_gain_key(r, baseline): r for r in baseline}
    out = {}
    task = _task(learned)
    for r in learned:
        key_of_row = _gain_key(r, learned)
        if key_of_row not in by_key:
            continue
        row = {}
        for key in (task.headline, task.headline_ssim):
            ours, theirs = getattr(r, key), getattr(by_key[key_of_row], key)
            row |= {key: ours, f"baseline_{key}": theirs, f"gain_{key}": ours - theirs}
        out[key_of_row] = row
    return out
