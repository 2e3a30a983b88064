"""The method contract (issue 33): what a method is (a Downscaler class and one model config),
and the rules every method follows alike.

* ``inverse()`` is part of the Downscaler contract: a tied inverse, or None.
* A method with a tied inverse is paired with it in every experiment, unless the command line
  names another upscaler.
* The keys every method shares are written once (conf/model/_base.yaml).
* The method's training block reaches the Rescaler without run.py naming its keys.
* A tied method's fair baseline is an upscaler of its own size, by a parameter-count rule.
* The invertible building blocks are shared (models/invertible.py), IRN's key layout unchanged.
* The downscaler gets the run's LR channel (``downscaler.channel``) as it gets its quantiser.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import OmegaConf

from helpers import ToyInvertible, compose_run
from taid_car.config import CONFIG_DIR
from taid_car.errors import ConfigError
from taid_car.models.downscaler import Downscaler
from taid_car.models.pair import build_downscaler, build_pair, has_tied_inverse, pair_parameter_counts
from taid_car.run import build_rescaler, pair_tied_method

CONF = Path(CONFIG_DIR)
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if not p.stem.startswith("_"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _model_node(model: str):
    """conf/model/<model>.yaml's ``model`` node as written (a ``_global_`` file holds it under ``model``)."""
    node = OmegaConf.load(CONF / "model" / f"{model}.yaml")
    return node.model if "model" in node else node


TIED = [m for m in MODELS if has_tied_inverse(_model_node(m))]


@pytest.fixture(autouse=True)
def _no_hydra_runtime_left():
    """compose_run sets Hydra's runtime config (the job's command line); none is left behind."""
    yield
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


# ----------------------------------------------------------------------------- inverse()
@pytest.mark.parametrize("model", MODELS)
def test_every_downscaler_has_a_tied_inverse_or_says_it_has_none(model):
    """``inverse()`` returns the tied upscaler (sharing every weight) or None, and the class says
    which before anything is built (``has_inverse``)."""
    cfg = compose_run([f"model={model}"])
    cls = get_class(cfg.model.downscaler._target_)
    assert issubclass(cls, Downscaler)
    torch.manual_seed(0)
    downscaler = build_downscaler(cfg.model)
    inverse = downscaler.inverse()
    assert (inverse is not None) == cls.has_inverse() == has_tied_inverse(cfg.model) == (model in TIED)
    if inverse is not None:
        counts = pair_parameter_counts(downscaler, inverse)
        assert counts["upscaler"] == 0 and counts["shared"] == counts["downscaler"] > 0


def test_irn_has_a_tied_inverse_the_others_none_and_a_toy_one_is_tied_alike():
    assert "irn" in TIED and not {"car", "taid", "bicubic", "taid_color", "gray"} & set(TIED)
    assert ToyInvertible.has_inverse() and not Downscaler.has_inverse()
    down, up = build_pair({"downscaler": {"_target_": "helpers.ToyInvertible", "scale": 2}},
                          {"name": "x", "tied": True})
    assert up.down is down


# ----------------------------------------------------------------------------- pairing
def _paired(overrides: list[str]) -> str:
    """The upscaler a run of these command-line overrides trains (after the pairing rule)."""
    cfg = compose_run(overrides)
    pair_tied_method(cfg)
    return str(cfg.upscaler.name)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("model", TIED)
def test_no_experiment_replaces_a_tied_inverse(experiment, model):
    """Whatever upscaler an experiment composes in (car_paper: edsr_paper, taid_extreme:
    taid_tiny, ...), a method with a tied inverse is paired with it."""
    cfg = compose_run([f"experiment={experiment}", f"model={model}"])
    pair_tied_method(cfg)
    assert cfg.upscaler.tied and cfg.upscaler.name == f"{model}_inverse"


@pytest.mark.parametrize(("experiment", "upscaler"), [("cpu_small", "edsr_tiny"), ("cpu_study", "edsr_tiny"),
                                                      ("car_paper", "edsr_paper"), ("taid_extreme", "taid_tiny")])
def test_an_experiments_upscaler_still_pairs_the_methods_without_an_inverse(experiment, upscaler):
    assert _paired([f"experiment={experiment}", "model=bicubic"]) == upscaler


def test_the_issues_sweep_compares_the_methods_themselves():
    """``-m experiment=cpu_small model=car,taid,irn,bicubic scale=2``, job by job as the sweeper
    composes them: IRN with its own inverse, the others with the preset's EDSR-tiny."""
    methods = [_paired(["experiment=cpu_small", f"model={m}", "scale=2"]) for m in ("car", "taid", "irn", "bicubic")]
    assert methods == ["edsr_tiny", "edsr_tiny", "irn_inverse", "edsr_tiny"]


def test_an_upscaler_named_on_the_command_line_is_what_the_method_gets(tmp_path):
    """``model=irn upscaler=edsr_tiny``: IRN's encoder with EDSR-tiny, when asked for by name;
    the documented ``experiment=cpu_study model=irn upscaler=irn_inverse`` is IRN itself."""
    assert _paired(["experiment=cpu_study", "model=irn", "upscaler=irn_inverse"]) == "irn_inverse"
    assert _paired(["experiment=car_paper", "model=irn", "upscaler=edsr_tiny"]) == "edsr_tiny"
    cfg = compose_run(["model=irn", "upscaler=edsr_tiny", "scale=2"], tmp_path)
    pair_tied_method(cfg)
    model = build_rescaler(cfg)
    assert type(model.downscaler).__name__ == "IRNDownscaler" and type(model.upscaler).__name__ == "EDSR"
    assert model.method == "irn & edsr_tiny"


def test_a_config_composed_in_python_is_taken_as_given():
    """Outside a Hydra job there is no command line: the pairing rule leaves the config alone."""
    cfg = compose_run(["experiment=car_paper", "model=irn"])
    HydraConfig.instance().cfg = None
    pair_tied_method(cfg)
    assert cfg.upscaler.name == "edsr_paper"


def test_the_shared_base_is_no_method_and_a_value_left_to_the_user_is_named():
    with pytest.raises(ConfigError, match=r"^model.name is not set: conf/model/_base.yaml .* e.g. model=car"):
        pair_tied_method(compose_run(["model=_base"]))
    with pytest.raises(ConfigError, match=r"^upscaler.size_of is not set .* e.g. upscaler.size_of=<value>"):
        pair_tied_method(compose_run(["model=bicubic", "upscaler=edsr_size_of"]))


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "taid_car.run", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_sweep_over_experiments_pairs_the_tied_method_with_its_inverse(tmp_path):
    """A real ``-m`` sweep (fast_dev_run): cpu_small (its upscaler the default) and taid_extreme
    (``override /upscaler: taid_tiny``) each pair IRN with its inverse and TAID with theirs."""
    sweep = tmp_path / "sweep"
    done = _run_cli(["-m", "experiment=cpu_small,taid_extreme", "model=irn,taid", "scale=2", "data=sample",
                     "debug=fast_dev_run", f"hydra.sweep.dir={sweep}"], cwd=Path(CONFIG_DIR).parent)
    assert done.returncode == 0, done.stderr[-3000:]
    methods = {}
    for job in sorted(sweep.iterdir()):
        if (job / "run.json").is_file():
            overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
            methods[tuple(sorted(o for o in overrides if o.startswith(("experiment=", "model="))))] = \
                json.loads((job / "run.json").read_text())["method"]
    assert methods == {
        ("experiment=cpu_small", "model=irn"): "irn & irn_inverse",
        ("experiment=cpu_small", "model=taid"): "taid & edsr_tiny",
        ("experiment=taid_extreme", "model=irn"): "irn & irn_inverse",
        ("experiment=taid_extreme", "model=taid"): "taid & taid_tiny",
    }
    assert "paired with its own inverse (upscaler irn_inverse), not with the preset's upscaler=taid_tiny" in done.stderr + done.stdout


# ----------------------------------------------------------------------------- the shared base config
BASE = OmegaConf.load(CONF / "model" / "_base.yaml")


def _defaults(model: str) -> list:
    return list(OmegaConf.load(CONF / "model" / f"{model}.yaml").get("defaults") or [])


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_pulls_in_the_shared_keys_and_repeats_none(model):
    """``_base.yaml`` first in each model's defaults list; a model file sets a shared key only to
    a value of its own (IRN's quantize_through_clamp, bicubic's out_of_range 0 ...), never the base's."""
    assert _defaults(model)[0] in ("_base", "_base@model")
    own = OmegaConf.to_container(_model_node(model), resolve=False)  # as written
    for key in BASE:
        if key in own and key not in ("name", "downscaler", "loss_weights"):
            assert own[key] != BASE[key], f"{model}.yaml repeats {key}: {own[key]}"
    for term, weight in (own.get("loss_weights") or {}).items():
        assert term not in BASE.loss_weights or weight != BASE.loss_weights[term], f"{model}.yaml repeats {term}"
    composed = compose_run([f"model={model}"]).model
    assert set(BASE) <= set(composed) and set(BASE.loss_weights) <= set(composed.loss_weights)


def test_the_base_keys_are_the_training_block_and_the_methods_own():
    from taid_car.models.rescaler import METHOD_KEYS, TRAINING_OPTIONS, Rescaler

    assert set(BASE) == set(TRAINING_OPTIONS) | set(METHOD_KEYS)
    assert set(TRAINING_OPTIONS) <= set(inspect.signature(Rescaler).parameters)
    assert OmegaConf.is_missing(BASE, "name") and OmegaConf.is_missing(BASE, "downscaler")


# ----------------------------------------------------------------------------- the training block
def test_the_training_block_reaches_the_module(tmp_path):
    """IRN's block (the authors' quantiser rule, its clip, its weights) and command-line changes
    of it arrive in the Rescaler as the config gives them."""
    cfg = compose_run(["model=irn", "scale=2", "data.lr_patch_size=8", "model.downscaler_lr_scale=0.5",
                       "model.quantize=soft"], tmp_path)
    model = build_rescaler(cfg)
    assert model.grad_clip_norm == pytest.approx(10 / (3 * 16**2)) and model.downscaler_lr_scale == 0.5
    assert model.quantizer.mode == "soft" and model.quantizer.through_clamp
    assert model.loss_weights == {"l1": 1.0, "out_of_range": 0.0, "guidance": 4.0, "z_distribution": 1.0}
    base = build_rescaler(compose_run(["model=car", "scale=2"], tmp_path))  # the shared defaults
    assert (base.grad_clip_norm, base.downscaler_lr_scale, base.quantizer.mode, base.quantizer.through_clamp) == \
        (None, 1.0, "ste", False)
    assert base.loss_weights["out_of_range"] == 1.0 and base.loss_weights["offset_tv"] == 0.005


def test_a_new_training_knob_is_a_base_key_and_an_argument_not_a_line_of_run(monkeypatch, tmp_path):
    """A knob added to the model config and to the Rescaler's arguments reaches the module
    with run.py unchanged; a key that is neither is named."""
    import taid_car.models.rescaler as rescaler_module
    import taid_car.run as run_module

    seen = {}

    class WithKnob(rescaler_module.Rescaler):
        def __init__(self, *args, new_knob: float = 0.0, **kwargs):
            seen["new_knob"] = new_knob
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(run_module, "Rescaler", WithKnob)
    monkeypatch.setattr(rescaler_module, "TRAINING_OPTIONS", (*rescaler_module.TRAINING_OPTIONS, "new_knob"))
    build_rescaler(compose_run(["model=taid", "scale=2", "+model.new_knob=3.5"], tmp_path))
    assert seen == {"new_knob": 3.5}
    with pytest.raises(ConfigError, match=r"^model.bogus: neither a training option of the Rescaler"):
        build_rescaler(compose_run(["model=taid", "scale=2", "+model.bogus=1"], tmp_path))


# ----------------------------------------------------------------------------- the size-matched baseline
@pytest.mark.parametrize(("scale", "width", "edsr", "irn"), [(2, 38, 171_535, 172_656), (4, 63, 611_796, 618_048),
                                                             (8, 107, 2_171_996, 2_154_384)])
def test_the_size_rule_gives_irn_tinys_baseline_its_width(scale, width, edsr, irn, tmp_path):
    """model=irn's baseline_upscaler=size_matched: EDSR-tiny's 4 blocks, 38 / 63 / 107 features
    (171.5k / 611.8k / 2.17M against IRN tiny's 172.7k / 618.0k / 2.15M); upscaler=edsr_irn_size,
    the studies' separate run, is the same net; the global RNG is left alone."""
    from taid_car.training.baseline import baseline_upscaler

    cfg = compose_run(["model=irn", f"scale={scale}"], tmp_path)
    state = torch.get_rng_state()
    node = baseline_upscaler(cfg)
    assert torch.equal(state, torch.get_rng_state())
    OmegaConf.set_struct(cfg, False)
    cfg.upscaler = node
    resolved = OmegaConf.to_container(cfg.upscaler, resolve=True)
    assert resolved["name"] == "edsr_irn_size" and resolved["net"]["n_feats"] == width
    count = lambda module: sum(p.numel() for p in module.parameters())
    assert count(build_downscaler(compose_run(["model=irn", f"scale={scale}"]).model)) == irn
    study = compose_run(["model=bicubic", "upscaler=edsr_irn_size", f"scale={scale}"], tmp_path)
    _, net = build_pair(study.model, study.upscaler)
    assert count(net) == edsr and net.head[0].out_channels == width
    assert OmegaConf.to_container(study.upscaler.net, resolve=True) == resolved["net"]


def test_the_size_rule_matches_the_methods_own_preset(tmp_path):
    """irn_paper's baseline is an EDSR of IRN paper's size, not of the tiny one's."""
    from taid_car.models.edsr import edsr_parameter_count
    from taid_car.training.baseline import baseline_upscaler

    cfg = compose_run(["experiment=irn_paper_x2"], tmp_path)
    width = OmegaConf.to_container(baseline_upscaler(cfg).net, resolve=False)["n_feats"]
    assert abs(edsr_parameter_count(2, width, 4) / 1_667_952 - 1) < 0.01 and width > 100


def test_the_parameter_count_rule_is_the_built_networks_and_picks_the_closest():
    from taid_car.models.edsr import EDSR, edsr_parameter_count, size_matched_width

    for scale, feats, blocks in ((2, 5, 0), (3, 7, 2), (4, 38, 4), (8, 11, 1)):
        assert edsr_parameter_count(scale, feats, blocks) == sum(p.numel() for p in EDSR(scale, blocks, feats).parameters())
    counts = {f: edsr_parameter_count(4, f, 4) for f in range(1, 200)}
    for target in (1, 5_000, 158_979, 158_980, 611_796, 1_000_000):
        best = min(counts, key=lambda f: (abs(counts[f] - target), f))
        assert size_matched_width(target, 4) == best, target
    assert size_matched_width(158_979, 4) == 32  # EDSR-tiny's own count gives EDSR-tiny
    with pytest.raises(ConfigError, match="parameter count >= 1"):
        size_matched_width(0, 2)


def test_a_checkpoint_saved_with_the_retired_irn_size_preset_still_loads_and_resumes(tmp_path):
    """Runs of the studies saved ``upscaler.net.preset: irn_size``: read through today's layout
    (preset tiny, its width), they build, load their weights and match today's edsr_irn_size run."""
    from taid_car.models.edsr import EDSR
    from taid_car.models.trained import load_pair, read_run_checkpoint
    from taid_car.run import config_mismatch

    cfg = compose_run(["model=bicubic", "upscaler=edsr_irn_size", "scale=4"], tmp_path)
    ours = OmegaConf.to_container(cfg, resolve=True)
    old = json.loads(json.dumps(ours))
    old["upscaler"] = {"name": "edsr_irn_size", "init_from": None,
                       "net": {"_target_": "taid_car.models.edsr.build_edsr", "preset": "irn_size", "scale": 4}}
    weights = EDSR(4, 4, 63).state_dict()
    path = tmp_path / "old.ckpt"
    torch.save({"taid_car_config": old, "state_dict": {f"upscaler.{k}": v for k, v in weights.items()}}, path)
    _, theirs = read_run_checkpoint(path)
    assert theirs["upscaler"]["net"] == {"_target_": "taid_car.models.edsr.build_edsr", "preset": "tiny",
                                         "scale": 4, "n_feats": 63}
    assert config_mismatch(theirs, ours) is None
    pair = load_pair(path)
    assert pair.method == "bicubic & edsr_irn_size"
    assert all(torch.equal(v, pair.upscaler.state_dict()[k]) for k, v in weights.items())


# ----------------------------------------------------------------------------- the shared invertible blocks
def test_irn_keeps_the_authors_key_layout_through_the_shared_blocks():
    """IRN built from models/invertible.py: its downscaler's keys are ``net.`` + the authors'
    (tests/irn_authors.py), loading strictly; the suite's checkpoints keep ``downscaler.net...``."""
    import irn_authors
    from taid_car.models import invertible
    from taid_car.models.irn import IRNDownscaler

    ours = IRNDownscaler(4, preset="tiny")
    theirs = irn_authors.InvRescaleNet(3, 3, irn_authors.subnet(8), [8, 8], 2)
    assert set(ours.state_dict()) == {f"net.{k}" for k in theirs.state_dict()}
    ours.net.load_state_dict(theirs.state_dict(), strict=True)
    kinds = {type(m) for m in ours.net.operations}
    assert kinds == {invertible.HaarDownsampling, invertible.InvBlockExp}
    assert "net.operations.1.F.conv5.weight" in ours.state_dict() and "net.operations.0.haar_weights" in ours.state_dict()


# ----------------------------------------------------------------------------- the run's LR channel
class _CodecAware(Downscaler):
    """A toy whose training term needs the codec itself: LR = gain·avgpool_s(HR), term = the mean
    squared distance of the LR to the real codec's decode of it (``self.channel.code``)."""

    regularizer_names = ("to_codec",)

    def __init__(self, scale: int = 2) -> None:
        super().__init__(scale)
        self.gain = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        self.last = torch.nn.functional.avg_pool2d(hr, self.scale) * self.gain
        return self.last

    def regularizers(self, hr: torch.Tensor, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"to_codec": ((self.last - self.channel.code(self.last).lr) ** 2).mean()}


def test_the_downscaler_gets_the_runs_lr_channel(tmp_path):
    """``downscaler.channel`` is the run's channel (its codec, quality and the run's quantiser), as
    ``downscaler.quantizer`` is the run's quantiser; a downscaler no training module holds has png."""
    from taid_car.channel import LOSSLESS
    from taid_car.channel.codecs import jpeg_roundtrip
    from taid_car.models.bicubic import BicubicUpscaler
    from taid_car.models.rescaler import Rescaler

    toy = _CodecAware()
    assert toy.channel is LOSSLESS
    model = Rescaler(toy, BicubicUpscaler(2), 2, loss_weights={"to_codec": 1.0}, quantize_through_clamp=True,
                     channel={"name": "jpeg", "quality": 30})
    assert toy.channel is model.channel and toy.channel.label == "jpeg q30 4:2:0"
    assert toy.channel.quantizer is toy.quantizer is model.quantizer and toy.quantizer.through_clamp
    hr = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    terms = model.compute_losses(hr)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    coded, _ = jpeg_roundtrip(torch.round(lr * 255) / 255, 30)
    torch.testing.assert_close(terms["to_codec"], ((lr - coded) ** 2).mean())
    assert terms["to_codec"] > 1e-6  # JPEG q30, not the 8-bit rounding alone
    run = build_rescaler(compose_run(["model=irn", "scale=2", "channel=jpeg", "channel.quality=75"], tmp_path))
    assert run.downscaler.channel is run.channel and run.downscaler.channel.label == "jpeg q75 4:2:0"
    assert build_rescaler(compose_run(["model=car", "scale=2"], tmp_path)).downscaler.channel.name == "png"
