"""Evaluate a downscaler/upscaler pair on benchmark sets; print and save a results table.

    python -m taid_car.evaluate                                  # bicubic & bicubic, sample data
    python -m taid_car.evaluate data=benchmark data_root=../shared/data 'scales=[2,4]'
    python -m taid_car.evaluate ckpt_path=outputs/car_x4/<run>/checkpoints/last.ckpt data=benchmark
    python -m taid_car.evaluate ckpt_path=<x2 run>/checkpoints/last.ckpt 'levels=[1,2,3,4,5,6,7]'   # x2 ... x128

``levels=[n, ...]`` applies a trained ×s pair n times for ×sⁿ (:mod:`taid_car.models.recursive`);
images too small for a factor, or for the downscaler (``Downscaler.minimum_side``: CAR needs twice
its kernel net's stride at every level), are left out, listed in a warning (``skip_small``, the
default; ``skip_small=false`` makes the first one an error naming it), and the table's Images
column says how many were scored. A bad ``scale``/``scales`` is named by the key that was typed.

The LR channel (:mod:`taid_car.channel`): every pair and its Bicubic & Bicubic reference are
scored with the LR stored through it (Pillow's real codecs), one row per channel and set with its
rate (bits per LR pixel). ``channel=jpeg channel.quality=50`` scores through that channel;
``'channel.test_qualities=[30,50,70,80,90]'`` through each of those qualities instead (JPEG ones
for png), all in one command. A checkpoint is evaluated through its own training channel (a
training range: its middle quality) unless the command names ``channel=...``; ``channel.<key>=...``
alone changes that key of the checkpoint's own channel.

Results (results.md / .csv / .json with per-image scores) go to the Hydra run directory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from taid_car import signals
from taid_car.channel import LRChannel, channel_label, scoring_channels
from taid_car.config import CONFIG_DIR, check_scale
from taid_car.data.sources import open_test_sets
from taid_car.errors import ConfigError, UsageError, one_line, reported
from taid_car.models.downscaler import crop_multiple
from taid_car.models.pair import build_pair
from taid_car.models.trained import load_pair, pair_label
from taid_car.scoring.benchmark import evaluate_set_channels
from taid_car.scoring.report import print_results, read_json, write_results
from taid_car.scoring.results import SetResult

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available")
    return torch.device(name)


def _at_scale(cfg: DictConfig, scale: int) -> DictConfig:
    """A copy of ``cfg`` with ``scale`` set, so every ``${scale}`` interpolation follows it."""
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    copy.scale = int(scale)
    return copy


def _sets_for(scaled: DictConfig, downscaler, skip_small: bool = False, method: str = "") -> dict:
    """The configured test sets, HR cropped to what ``downscaler`` needs (or ``data.modcrop``);
    with ``skip_small``, images (and sets) too small for the factor or the downscaler
    (``minimum_side()``, checked from the file headers before anything runs) left out with a
    warning; without it, such an image is an ImageError naming it, its size and the side needed."""
    data = OmegaConf.to_container(scaled.data, resolve=True)
    data["modcrop"] = crop_multiple(downscaler, data.get("modcrop"))
    need, why = downscaler.minimum_side()
    what = f"{method or type(downscaler).__name__} at x{scaled.scale}: {why}"
    minimum = (need, what if skip_small else f"{what} (skip_small=true leaves such images out)") if why else (0, "")
    sets = open_test_sets(data, int(scaled.scale), skip_small=skip_small, minimum=minimum)
    if not sets:
        log.warning("x%d: no test image is large enough; nothing scored at this factor", scaled.scale)
    return sets


def checkpoint_levels(cfg: DictConfig) -> list[int]:
    """``levels`` as positive ints ([1], the checkpoint's own scale, when not set)."""
    levels = list(cfg.get("levels") or [1])
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in levels):
        raise ConfigError(f"levels={levels}: each level is a positive integer (n applications of the pair)")
    return levels


def _typed_keys(overrides: Sequence[str]) -> set[str]:
    """The keys the command line set (Hydra's task overrides), ``+``/``~`` stripped."""
    return {str(item).split("=", 1)[0].lstrip("+~") for item in overrides}


def channel_node(cfg: DictConfig, overrides: Sequence[str] = (), checkpoint_config: dict | None = None) -> dict:
    """The ``channel`` node an evaluation scores through: the command's (conf/evaluate.yaml's png
    by default); for a checkpoint, its own training channel unless the command line names
    ``channel=...``, with the ``channel.<key>=...`` the command line sets."""
    node = OmegaConf.to_container(cfg.channel, resolve=True) if cfg.get("channel") is not None else {}
    typed = _typed_keys(overrides)
    if checkpoint_config is None or "channel" in typed:
        return node
    own = dict(checkpoint_config.get("channel") or {"name": "png"})
    own.update({key: node[key] for key in node if f"channel.{key}" in typed})
    return own


def evaluation_channels(cfg: DictConfig, overrides: Sequence[str] = (),
                        checkpoint_config: dict | None = None) -> list[LRChannel]:
    """The channels each set is scored through (:func:`channel_node`): ``channel.test_qualities``
    when given, else the channel itself (:func:`~taid_car.channel.scoring_channels`)."""
    return scoring_channels(channel_node(cfg, overrides, checkpoint_config), own=False)


def _evaluate_checkpoint(cfg: DictConfig, device: torch.device, overrides: Sequence[str] = ()) -> list[SetResult]:
    """Evaluate a trained pair at its own scale, or at scale**n for each n of ``levels``; HR crop
    multiple from its (recursive) downscaler; through :func:`evaluation_channels`."""
    pair = load_pair(cfg.ckpt_path)
    channels = evaluation_channels(cfg, overrides, pair.config)
    run_cfg, unit = pair.config, pair.scale
    levels = checkpoint_levels(cfg)
    if list(cfg.scales) != [cfg.scale] or cfg.scale != unit and not cfg.get("levels"):
        log.warning("%s was trained at x%d: evaluating at %s (scales/scale apply to fixed methods; "
                    "levels=[n, ...] applies the pair n times)", cfg.ckpt_path, unit,
                    ", ".join(f"x{unit ** n}" for n in levels))
    results = []
    for n in levels:
        scaled_pair = pair.at_scale(unit**n)
        scaled = _at_scale(cfg, scaled_pair.scale)
        scaled.model = run_cfg["model"]
        scaled.upscaler = run_cfg["upscaler"]
        sets = _sets_for(scaled, scaled_pair.downscaler, cfg.get("skip_small", False), scaled_pair.method)
        for set_name, dataset in sets.items():
            signals.set_phase(f"scoring {scaled_pair.method} on {set_name} at x{scaled_pair.scale}")
            results += evaluate_set_channels(scaled_pair.downscaler, scaled_pair.upscaler, dataset, scaled_pair.scale,
                                             set_name, scaled_pair.method, channels, device, progress=cfg.progress)
    return results


def scale_key(cfg: DictConfig, overrides: Sequence[str] = ()) -> str:
    """The key a bad factor is to be named by: the one of ``scale`` / ``scales`` the user typed
    (``overrides``: Hydra's task overrides, e.g. ``["scale=0"]``); else ``scale`` while
    ``scales`` still follows it (``["${scale}"]``, conf/evaluate.yaml), else ``scales``."""
    typed = {str(item).split("=", 1)[0].lstrip("+~") for item in overrides}
    if "scales" in typed:
        return "scales"
    if "scale" in typed:
        return "scale"
    raw = OmegaConf.to_container(cfg, resolve=False).get("scales")
    return "scale" if raw == ["${scale}"] else "scales"


def check_scales(cfg: DictConfig, key: str) -> list[int]:
    """``scales`` as ints >= 2, or a :class:`UsageError` naming ``key`` (:func:`scale_key`): the
    ``scale`` the list follows, or ``scales`` itself (a list: ``scale=4`` is the one-factor form)."""
    scales = OmegaConf.to_container(cfg.scales, resolve=True) if OmegaConf.is_list(cfg.scales) else cfg.scales
    if key == "scale" and isinstance(scales, list) and len(scales) == 1:
        return [check_scale(scales[0], "scale")]
    if not isinstance(scales, list) or not scales:
        raise UsageError(f"scales={scales!r}: give a list of factors, e.g. 'scales=[2,4]' (scale=4 for one)")
    for value in scales:
        try:
            check_scale(value, "scales")
        except UsageError:
            raise UsageError(f"scales={scales}: {value!r} is not a downscaling factor (an integer >= 2), "
                             "e.g. 'scales=[2,4]'") from None
    return scales


def run_evaluation(cfg: DictConfig, overrides: Sequence[str] = ()) -> list[SetResult]:
    """Evaluate ``ckpt_path`` if given, else the configured fixed method at every ``scales``.
    ``overrides`` (the command line's) name the key a bad factor came from (:func:`scale_key`)."""
    check_scales(cfg, scale_key(cfg, overrides))
    channels = evaluation_channels(cfg, overrides)  # the command's channel checked before anything runs
    device = resolve_device(cfg.device)
    if cfg.get("ckpt_path"):
        return _evaluate_checkpoint(cfg, device, overrides)
    results = []
    for scale in cfg.scales:
        scaled = _at_scale(cfg, scale)
        downscaler, upscaler = build_pair(scaled.model, scaled.upscaler)
        sets = _sets_for(scaled, downscaler, cfg.get("skip_small", False), pair_label(scaled))
        for set_name, dataset in sets.items():
            signals.set_phase(f"scoring {pair_label(scaled)} on {set_name} at x{scale}")
            results += evaluate_set_channels(downscaler, upscaler, dataset, int(scale), set_name,
                                             pair_label(scaled), channels, device, progress=cfg.progress)
    return results


def with_earlier_results(results: list[SetResult], out_dir: str | Path) -> list[SetResult]:
    """``add_results=true``: the rows already in ``out_dir/results.json`` followed by ``results``.
    A row of the same method, scale and set as an earlier one, or a results.json that is not the
    suite's, is a :class:`UsageError` naming them (nothing is written then)."""
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        return results
    try:
        earlier = [SetResult(**row) for row in read_json(path)]
    except (ValueError, TypeError) as err:
        raise UsageError(f"add_results=true: {path} is not a results file of this suite ({one_line(err)}); "
                         "give another hydra.run.dir") from None
    key = lambda r: (r.method, r.scale, r.set_name, r.channel, r.quality, r.subsampling)
    seen = {key(r) for r in earlier}
    clash = [r for r in results if key(r) in seen]
    if clash:
        shown = ", ".join(f"{r.method} x{r.scale} on {r.set_name} through {channel_label(r.__dict__)}" for r in clash)
        raise UsageError(f"add_results=true: {path} already holds {shown}; give another hydra.run.dir "
                         "to keep both")
    return [*earlier, *results]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the mean Y-PSNR over all rows (for sweeps). SIGTERM / Ctrl-C
    end it with one line and exit 143 / 130 (:mod:`taid_car.signals`), nothing written."""
    with signals.handled("taid_car.evaluate", after="no results were written by it"), \
            reported("taid_car.evaluate"):
        results = run_evaluation(cfg, list(HydraConfig.get().overrides.task))
        if not results:
            raise UsageError("nothing was scored: no test image is large enough for the factors asked for")
        out_dir = HydraConfig.get().runtime.output_dir
        rows = with_earlier_results(results, out_dir) if cfg.get("add_results") else results
        signals.set_phase("writing the results")
        paths = write_results(rows, out_dir)
    print_results(results, title=f"{results[0].method} (Y channel, border = scale)")
    log.info("results written to %s", paths["md"])
    return sum(r.psnr_y for r in results) / len(results)


if __name__ == "__main__":
    main()
