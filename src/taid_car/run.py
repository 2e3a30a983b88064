"""Train a downscaler/upscaler pair, test it, print a results table.

    python -m taid_car.run model=car scale=4
    python -m taid_car.run -m model=car,taid,bicubic scale=2,4 experiment=cpu_small

Everything lands in the Hydra run directory: checkpoints/, results.md/.csv/.json, loggers' files.
Returns ``cfg.optimized_metric`` (``val/headline``: the task's headline score) for sweepers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from taid_car import signals
from taid_car.atomic_write import write_atomically
from taid_car.channel import build_channel, check_run_channel
from taid_car.config import CONFIG_DIR, check_scale, upscaler_named_on_command_line
from taid_car.errors import ConfigError, one_line, reported
from taid_car.models.checkpoints import CheckpointError
from taid_car.models.pair import build_pair, pair_parameter_counts, pair_with_inverse
from taid_car.models.rescaler import Rescaler, training_options
from taid_car.models.trained import init_upscaler_from, method_name, read_run_checkpoint
from taid_car.rundir import held_run_dir, is_secondary_rank, refuse_held_results, runs_this_sweep_job
from taid_car.scoring.report import columns_for, markdown_table, print_results, write_results
from taid_car.scoring.tasks import Task, task_of
from taid_car.settings import check_settings
from taid_car.training.baseline import (
    baseline_config,
    baseline_model,
    gain_lines,
    gains,
    pretrain_config,
    pretrain_steps,
    wants_baseline,
)
from taid_car.training.callbacks import resume_command
from taid_car.training.checkpoints import AtomicCheckpointIO, latest_checkpoint, remove_stale_temporaries
from taid_car.training.loggers import prepare_wandb_folders

log = logging.getLogger(__name__)


def build_rescaler(cfg: DictConfig, val_set_names=(), test_set_names=()) -> Rescaler:
    """The LightningModule the config describes (the pair built by
    :func:`~taid_car.models.pair.build_pair`, the method's training block from its ``model``
    node by :func:`~taid_car.models.rescaler.training_options`, the rest by Hydra's ``instantiate``).

    ``upscaler.init_from`` (a checkpoint of this suite) initialises the upscaler's weights.
    """
    if cfg.upscaler.get("init_from") and cfg.upscaler.get("tied"):
        raise ConfigError("upscaler.init_from: a tied upscaler is the downscaler's own inverse; "
                          "it has no weights of its own to initialise")
    downscaler, upscaler = build_pair(cfg.model, cfg.upscaler)
    if cfg.upscaler.get("init_from"):
        init_upscaler_from(upscaler, cfg.upscaler.init_from, cfg.upscaler.name, cfg.scale)
        log.info("upscaler initialised from %s", cfg.upscaler.init_from)
    return Rescaler(
        downscaler=downscaler,
        upscaler=upscaler,
        scale=cfg.scale,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        val_set_names=val_set_names,
        test_set_names=test_set_names,
        method=method_name(cfg),
        config=OmegaConf.to_container(cfg, resolve=True),
        on_nonfinite=cfg.get("on_nonfinite") or "stop",
        channel=channel_node(cfg),
        **training_options(cfg.model),  # the method's training block: quantiser, loss weights, clipping, ...
    )


def channel_node(cfg: DictConfig) -> dict | None:
    """The run's ``channel`` group as a dict (None when the config has none: png)."""
    return OmegaConf.to_container(cfg.channel, resolve=True) if cfg.get("channel") is not None else None


def _instantiate_dict(group: DictConfig | None) -> list:
    return [instantiate(node) for node in (group or {}).values() if node is not None]


def prepare_resume(cfg: DictConfig) -> None:
    """Before resuming from ``ckpt_path`` (``last``: the newest readable one in the run's
    ``checkpoints/``; ``auto``: the same when that folder holds any, else a fresh start): read it (``weights_only=True``; one clear error when it is not a
    checkpoint of this suite), refuse a checkpoint of another configuration with a message naming
    both, and log into the W&B run it recorded when it is this run directory's own. A checkpoint
    written by another run directory (another run's, or this folder copied from another) starts a
    new run from its state: a new W&B run, with ``resumed_from`` naming the source in its config."""
    folder = Path(cfg.output_dir) / "checkpoints"
    if str(cfg.get("ckpt_path") or "") == "auto":  # a requeued job: resume if this run saved anything
        with open_dict(cfg):
            cfg.ckpt_path = "last" if any(folder.glob("*.ckpt")) else None
        if cfg.ckpt_path is None:
            log.info("ckpt_path=auto: no checkpoint in %s yet; starting the run", folder)
    if str(cfg.get("ckpt_path") or "") == "last":
        with open_dict(cfg):
            cfg.ckpt_path = str(latest_checkpoint(folder))
    if not cfg.get("ckpt_path"):
        return
    checkpoint, theirs = read_run_checkpoint(cfg.ckpt_path)
    mismatch = config_mismatch(theirs, OmegaConf.to_container(cfg, resolve=True))
    if mismatch:
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path}: {mismatch}")
    if not written_here(checkpoint, cfg.ckpt_path, cfg.output_dir):
        with open_dict(cfg):
            cfg.resumed_from = str(Path(cfg.ckpt_path).resolve())
        log.info("starting a new run in %s from %s (a new W&B run)", cfg.output_dir, cfg.ckpt_path)
        return
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    run_id = checkpoint.get("taid_car_wandb_id")
    if wandb_cfg is not None and not wandb_cfg.get("id") and run_id:
        with open_dict(cfg):
            wandb_cfg.id, wandb_cfg.resume = run_id, "allow"


def written_here(checkpoint: dict, path: str | Path, run_dir: str | Path) -> bool:
    """Whether ``checkpoint`` (read from ``path``) was written by the run in ``run_dir``: the run
    directory it records (``taid_car_run_dir``) is this one. Checkpoints older than that record
    count as this run's when they lie inside ``run_dir``."""
    recorded = checkpoint.get("taid_car_run_dir")
    if recorded:
        return Path(recorded).resolve() == Path(run_dir).resolve()
    return is_inside(path, run_dir)


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` lies inside ``folder`` (both resolved)."""
    return Path(folder).resolve() in Path(path).resolve().parents


#: what must match for a checkpoint to resume into a run: (label, path into the config)
RESUME_KEYS = (("model", ("model", "name")), ("scale", ("scale",)), ("upscaler", ("upscaler", "name")))


def config_mismatch(theirs: dict, ours: dict) -> str | None:
    """None when a checkpoint trained with config ``theirs`` can resume into ``ours``; else one
    sentence naming both settings and what to change (model, scale, upscaler, then the
    downscaler/upscaler arguments whose weights would not fit)."""

    def get(config, path):
        for key in path:
            config = config.get(key) if isinstance(config, dict) else None
        return config

    def settings(config):
        return " ".join(f"{label}={get(config, path)}" for label, path in RESUME_KEYS)

    if any(get(theirs, path) != get(ours, path) for _, path in RESUME_KEYS):
        return (f"this checkpoint was trained with {settings(theirs)}; this run is {settings(ours)}. "
                f"Resume with {settings(theirs)} (the checkpoint's settings), or drop ckpt_path to start anew")
    differ = [
        f"{group}.{key}={mine!r} (checkpoint: {their!r})"
        for group, sub in (("model.downscaler", ("model", "downscaler")), ("upscaler.net", ("upscaler", "net")))
        for key in sorted(set(get(theirs, sub) or {}) | set(get(ours, sub) or {}))
        if (their := (get(theirs, sub) or {}).get(key)) != (mine := (get(ours, sub) or {}).get(key))
    ]
    if differ:
        return (f"this run's {', '.join(differ)} differ from the checkpoint's, so its weights would not "
                f"fit: resume with the checkpoint's values")
    return None


def log_results_table(trainer: L.Trainer, results: list) -> None:
    """The test results as a W&B table (``test/results``) when a WandbLogger is attached; a
    failure there (W&B cannot stage the table's files, ...) is a warning: the results files are
    written before it."""
    columns = [c.key for c in columns_for([r.as_row() for r in results])]
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.log_table(key="test/results", columns=columns,
                                 data=[[r.as_row()[c] for c in columns] for r in results])
            except Exception as err:  # noqa: BLE001 (a logger extra never costs the results)
                log.warning("W&B could not log the results table (%s); the results files are written",
                            one_line(err))


def apply_seed(cfg: DictConfig) -> int | None:
    """Seed python, numpy and torch (and dataloader workers) when ``seed`` is set, 0 included."""
    if cfg.get("seed") is None:
        return None
    return L.seed_everything(int(cfg.seed), workers=True)


def run_summary(cfg: DictConfig, params: dict, train_seconds: float, trainer: L.Trainer, metrics: dict) -> dict:
    """What ``run.json`` records for comparisons: method, sizes, time, steps, final metrics."""
    return {
        "method": method_name(cfg), "model": cfg.model.name, "upscaler": cfg.upscaler.name,
        "scale": int(cfg.scale), "params": params, "train_seconds": train_seconds,
        "global_step": trainer.global_step, "pretrain_steps": pretrain_steps(cfg), "metrics": metrics,
        "channel": build_channel(channel_node(cfg)).record(),  # what it trained through
    }


def fit_and_test(cfg: DictConfig, role: str = "") -> dict:
    """Fit, optionally test and write results files; returns ``{"metrics", "results", "model", "trainer", "summary",
    "train_seconds"}`` (training wall clock, s, summed over the resumes of the run). ``role`` names
    the phase in a stop message ("the baseline"; the method's name by default). The results files
    are written before any logger extra (W&B's table), whose failure costs a warning only."""
    role = role or method_name(cfg)
    apply_seed(cfg)
    if not is_secondary_rank():  # the run directory is held: a temporary file there is a killed save's
        remove_stale_temporaries(Path(cfg.output_dir) / "checkpoints")
    prepare_resume(cfg)
    datamodule = instantiate(cfg.data)
    model = build_rescaler(cfg, datamodule.val_set_names, datamodule.test_set_names)
    datamodule.fit_downscaler(model.downscaler)
    loggers = _instantiate_dict(cfg.get("logger"))
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    trainer: L.Trainer = instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=[AtomicCheckpointIO()]
    )
    refuse_other_world_size(trainer)
    params = pair_parameter_counts(model.downscaler, model.upscaler)
    for logger in trainer.loggers:
        logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "params": params})

    signals.set_phase(f"training {role}")
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    signals.stop_if_signalled()  # a fit that reached its end while SIGTERM came in: no next phase
    train_seconds = model.train_seconds()  # resumed runs: the whole run's, not this process's
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    results, summary = [], None
    if cfg.get("test") and datamodule.test_set_names:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        signals.set_phase(f"testing {role}")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)  # our table
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        results = model.test_results
        summary = run_summary(cfg, params, train_seconds, trainer, metrics)
        if trainer.is_global_zero:
            signals.set_phase(f"writing the results of {role}")
            write_results(results, cfg.output_dir, extra=summary)
        log_results_table(trainer, results)
        signals.stop_if_signalled()
    return {"metrics": metrics, "results": results, "model": model, "trainer": trainer, "summary": summary,
            "train_seconds": train_seconds}


def refuse_other_world_size(trainer: L.Trainer) -> None:
    """A sweep's DDP ranks stay joined from job to job (:func:`~taid_car.rundir.runs_this_sweep_job`):
    a later job on another number of processes is refused with one line, on every rank alike."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() != trainer.world_size:
        raise ConfigError(
            f"trainer: this job runs {trainer.world_size} process(es), but an earlier job of this sweep "
            f"started {dist.get_world_size()} DDP ranks; sweep DDP and other trainer settings in separate sweeps")


def pretrain_upscaler(cfg: DictConfig) -> Path:
    """Train bicubic + the upscaler for ``model.pretrain_steps`` into ``<run>/pretrain`` and point
    ``cfg.upscaler.init_from`` at its ``last.ckpt``, which holds the final state. On a resume a
    finished pretraining is reused, and one that was stopped part-way goes on from its newest
    checkpoint (:func:`~taid_car.training.baseline.bicubic_counterpart`), never taken as finished.

    Under DDP every rank takes the same path: each reads ``last.ckpt`` before the pretraining
    fit, and rank 0 can write it only inside that fit or the collective save after it."""
    pre = pretrain_config(cfg)
    ckpt = Path(pre.output_dir) / "checkpoints" / "last.ckpt"
    say = log.info if not is_secondary_rank() else lambda *args: None
    if finished_training(ckpt, pretrain_steps(cfg)):
        say("reusing the pretrained upscaler %s", ckpt)
    else:
        say("pretraining the upscaler on bicubic LR for %d steps (model.pretrain_steps)%s", pretrain_steps(cfg),
            ", going on from its checkpoint" if pre.get("ckpt_path") else "")
        trainer = fit_and_test(pre, role="the pretraining of the upscaler")["trainer"]
        trainer.save_checkpoint(ckpt)  # collective: every rank calls it, rank 0 writes the final state
    with open_dict(cfg):
        cfg.upscaler.init_from = str(ckpt)
    return ckpt


def finished_training(ckpt: Path, steps: int) -> bool:
    """Whether ``ckpt`` is a readable checkpoint of a training that reached ``steps``."""
    if not ckpt.is_file():
        return False
    try:
        checkpoint, _ = read_run_checkpoint(ckpt)
    except CheckpointError:
        return False
    return int(checkpoint.get("global_step", 0)) >= steps


def refuse_foreign_run_dir(cfg: DictConfig) -> None:
    """A run directory that already holds a run's results or checkpoints is used only to resume
    it (``ckpt_path`` set); otherwise a clear error, so nothing of that run is overwritten. The
    command line checks this before Hydra writes there (:class:`~taid_car.rundir.RunDirGuard`);
    this is the same check for runs started from Python."""
    refuse_held_results(cfg.output_dir, allowed=bool(cfg.get("ckpt_path")), what="a run",
                        remedy="resume it with ckpt_path=last")


def train(cfg: DictConfig, multirun: bool = False) -> dict:
    """Fit and test the configured pair (after ``model.pretrain_steps`` of bicubic + the upscaler, if
    set); then, when ``baseline`` asks for it (single runs of a learned downscaler by default),
    bicubic + the same upscaler on the same schedule from the same start, and the difference
    per test set. Prints the results table; returns :func:`fit_and_test`'s dict
    plus ``baseline`` (its results, or None)."""
    pair_tied_method(cfg)
    task = configured_task(cfg)
    check_scale(cfg.get("scale"), minimum=task.min_scale)
    check_settings(cfg)  # every numeric setting, before anything is built
    check_run_channel(channel_node(cfg))  # the LR channel's keys, test qualities and training rule
    if "wandb" in (cfg.get("logger") or {}) and not is_secondary_rank():
        prepare_wandb_folders(cfg.output_dir)  # says at start where W&B cannot write
    with held_run_dir(cfg.output_dir):  # a no-op when Hydra's RunDirGuard holds it already
        return _train(cfg, multirun, task)


def pair_tied_method(cfg: DictConfig) -> None:
    """The method contract's pairing (:func:`~taid_car.models.pair.pair_with_inverse`): a model
    with a tied inverse keeps it unless the command line named an upscaler; one line says so
    when a preset's upscaler was set aside. A value its config leaves to the user (``???``: the
    name and downscaler of the shared ``conf/model/_base.yaml``, ``upscaler.size_of``) is refused
    in one line naming the key."""
    missing = missing_values(OmegaConf.to_container(cfg, resolve=False))
    if {"model.name", "model.downscaler"} & set(missing):
        raise ConfigError(f"{missing[0]} is not set: conf/model/_base.yaml holds the keys every model "
                          "config shares and is no method of its own; choose one, e.g. model=car")
    if missing:
        raise ConfigError(f"{missing[0]} is not set (??? in its config): give it on the command line, "
                          f"e.g. {missing[0]}=<value>")
    replaced = pair_with_inverse(cfg, upscaler_named_on_command_line())
    if replaced and not is_secondary_rank():
        log.info("model=%s is paired with its own inverse (upscaler %s), not with the preset's upscaler=%s "
                 "(that one is for methods without an inverse; name upscaler=%s on the command line to pair "
                 "them)", cfg.model.name, cfg.upscaler.name, replaced, replaced)


def missing_values(node, prefix: str = "") -> list[str]:
    """Dotted keys of a config (a plain container, unresolved) whose value is OmegaConf's ``???``."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        return []
    found = []
    for key, value in items:
        found += [f"{prefix}{key}"] if value == "???" else missing_values(value, f"{prefix}{key}.")
    return found


def configured_task(cfg: DictConfig) -> Task:
    """The task of the configured downscaler class (:mod:`taid_car.scoring.tasks`), before any
    network is built."""
    return task_of(get_class(cfg.model.downscaler._target_))


def _train(cfg: DictConfig, multirun: bool, task: Task) -> dict:
    """Each phase (pretraining, the run, its baseline, each test) is a fit or test of its own that
    every DDP rank runs, in the same order on the same decisions (the test results are reduced
    across ranks, so each rank holds the same); only rank 0 writes files and prints."""
    if not runs_this_sweep_job():  # a DDP rank's copy of a sweep job its rank 0 ran alone
        return {"metrics": {}, "results": [], "model": None, "trainer": None, "summary": None,
                "train_seconds": 0.0, "baseline": None}
    if not is_secondary_rank():  # rank 0's check: the other ranks share its directory
        refuse_foreign_run_dir(cfg)
    if pretrain_steps(cfg) > 0:
        pretrain_upscaler(cfg)
    outcome = fit_and_test(cfg)
    outcome["baseline"] = None
    trainer, results = outcome["trainer"], outcome["results"]
    if not results:
        return outcome
    out_dir = Path(cfg.output_dir)
    title = task.table_title.format(method=method_name(cfg), scale=cfg.scale)
    if not wants_baseline(cfg, multirun):
        if trainer.is_global_zero:
            print_results(results, title=title)
            log.info("results written to %s", out_dir / "results.md")
        return outcome

    if trainer.is_global_zero:
        log.info("training the baseline: %s + the same upscaler, same schedule (baseline=false skips it)",
                 baseline_model(cfg))
    base = fit_and_test(baseline_config(cfg), role="the baseline")
    outcome["baseline"] = base["results"]
    if not trainer.is_global_zero:
        return outcome
    lines = gain_lines(results, base["results"], steps=trainer.global_step, fast_dev_run=bool(trainer.fast_dev_run))
    summary = {**outcome["summary"], "baseline": {
        "method": base["summary"]["method"], "train_seconds": base["summary"]["train_seconds"],
        "global_step": base["summary"]["global_step"], "per_set": gains(results, base["results"]),
    }}
    baseline_md = ("\nBaseline, bicubic + the same upscaler on the same schedule (`baseline/`):\n\n"
                   + markdown_table(base["results"]) + "\n" + "\n".join(f"- {line}" for line in lines) + "\n")
    write_results(results, out_dir, extra=summary, markdown_after=baseline_md)
    print_results([*results, *base["results"]], title=title)
    for line in lines:
        print(line)
    log.info("results written to %s", out_dir / "results.md")
    return outcome


def _close_wandb(exit_code: int) -> None:
    import wandb

    if wandb.run is not None:
        run_dir = Path(wandb.run.dir).parent
        try:
            wandb.finish(exit_code=exit_code)
        except Exception as err:  # noqa: BLE001 (the results are written before this)
            log.warning("W&B could not close its run %s: %s", run_dir, one_line(err))
            return
        mode = "offline: `wandb sync " + str(run_dir) + "` uploads it" if run_dir.name.startswith("offline") else "synced"
        log.info("W&B run %s (%s)", run_dir, mode)


def quiet_third_party_output() -> None:
    """The main job's output is the suite's own: Lightning's info lines (accelerator, litlogger
    tip, checkpoint restores), W&B's banners (``WANDB_SILENT``; the run's folder is said once at
    the end) and a deprecation warning Lightning triggers in torch's pytree are silenced.
    Warnings and errors still show."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.fabric.utilities.seed", "lightning.pytorch.trainer.connectors.checkpoint_connector"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # the training sampler resumes mid-epoch by itself (taid_car.data.sampling): Lightning cannot see that
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    # set scores are gathered across DDP ranks before they are logged (every image scored once), so
    # each rank logs the same exact mean: Lightning's advice to average them again does not apply
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|test)/.*sync_dist=True")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.optimized_metric`` for sweepers.

    In a multirun, a failing job is logged (traceback in its run.log and ``failed.txt``), its W&B
    run is closed as failed, and the sweep goes on; a single run re-raises the error. SIGTERM and
    Ctrl-C stop the run (and a sweep) with one line and exit 143 / 130 (:mod:`taid_car.signals`).
    """
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    quiet_third_party_output()
    with signals.handled("taid_car.run", after=lambda: resume_hint(Path(cfg.output_dir))):
        return _main(cfg, multirun)


def resume_hint(run_dir: Path) -> str:
    """How to go on with a stopped run (:func:`~taid_car.training.callbacks.resume_command`)."""
    return f"resume with: {resume_command(run_dir)}"


def _main(cfg: DictConfig, multirun: bool) -> float | None:
    try:
        with reported("taid_car.run") if not multirun else contextlib.nullcontext():
            try:
                outcome = train(cfg, multirun=multirun)
            except BaseException:
                _close_wandb(exit_code=1)  # before the error line, so that line is the last
                raise
    except Exception as err:
        if not multirun:
            raise
        log.exception("job failed; the sweep continues with the next job")
        write_atomically(Path(cfg.output_dir, "failed.txt"), f"{type(err).__name__}: {one_line(err)}\n")
        return None
    _close_wandb(exit_code=0)
    return outcome["metrics"].get(cfg.get("optimized_metric") or "")


if __name__ == "__main__":
    main()
