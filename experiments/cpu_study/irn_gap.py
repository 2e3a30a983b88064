"""Where does the suite's IRN fall behind the independent loop? The two steps side by side, on one start.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/cpu_study/irn_gap.py --data ../shared/data --scale 2 \
        --gaussian-scale 0 --steps 500 --variants authors suite suite-l1=charbonnier

The suite's IRN (``experiment=cpu_study model=irn upscaler=irn_inverse``) trails the anchor
(``irn_anchor.py``: the authors' network and step) at x2. This trains several copies of *one*
network, from the same weights (the suite's IRN as the study's config builds it, seed 0), on the
same patches (``irn_anchor.patches``, seeded) with the same z, and changes only the step:

* ``authors``: the anchor's step (``irn_anchor.authors_step``: per-image sums, Charbonnier L1,
  their straight-through quantiser with no clamp gradient), Adam eps 1e-8, clip 10, on the authors'
  transcription of the network (``tests/irn_authors.py``) holding the same weights;
* ``suite``: the Rescaler's ``compute_losses`` with the config's Adam (eps per HR value) and its
  clip (``model.grad_clip_norm``), with the study's cosine schedule, like the anchor's;
* ``suite-<change>[+<change>...]``: the suite's step with the authors' choice for one part:
  ``l1=charbonnier`` (their sqrt(d^2 + 1e-6) for the L1), ``out_of_range=0`` (no penalty),
  ``through_clamp`` (their quantiser: the clamp passes gradients).

Every 250 steps it prints each copy's T91 hold-out PSNR-Y (``irn_anchor.holdout_psnr``: LR on the
8-bit grid, z ~ N(0, gaussian_scale^2 I) seeded 0) as a Markdown table row.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
import irn_anchor
import irn_authors
import taid_car.models.rescaler as rescaler_module
from taid_car.config import CONFIG_DIR
from taid_car.data.datamodule import split_holdout
from taid_car.data.io import list_images, read_image
from taid_car.run import build_rescaler

CHANGES = ("l1=charbonnier", "out_of_range=0", "through_clamp")


class _CharbonnierFunctional:
    """torch.nn.functional with the authors' Charbonnier (eps 1e-6, a mean) as ``l1_loss``."""

    def __getattr__(self, name: str):
        return getattr(torch.nn.functional, name)

    @staticmethod
    def l1_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((sr - hr) ** 2 + 1e-6).mean()


class SuiteCopy:
    """The suite's Rescaler with its own optimiser, schedule and clip; ``changes`` from CHANGES."""

    def __init__(self, cfg, start: dict, changes: list[str]) -> None:
        unknown = sorted(set(changes) - set(CHANGES))
        if unknown:
            raise SystemExit(f"unknown change(s) {unknown}; choose from {CHANGES}")
        cfg = copy.deepcopy(cfg)
        if "out_of_range=0" in changes:
            cfg.model.loss_weights.out_of_range = 0.0
        if "through_clamp" in changes:
            cfg.model.quantize_through_clamp = True
        self.rescaler = build_rescaler(cfg).train()
        self.rescaler.downscaler.net.load_state_dict(start)
        self.charbonnier = "l1=charbonnier" in changes
        optimizers = self.rescaler.configure_optimizers()
        self.optimizer, self.schedule = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
        self.net = self.rescaler.downscaler.net

    def step(self, hr: torch.Tensor) -> None:
        functional = rescaler_module.F
        rescaler_module.F = _CharbonnierFunctional() if self.charbonnier else functional
        try:
            loss = self.rescaler.compute_losses(hr)["loss"]
        finally:
            rescaler_module.F = functional
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.rescaler.parameters(), self.rescaler.grad_clip_norm)
        self.optimizer.step()
        self.schedule.step()


class AuthorsCopy:
    """The anchor's step on the authors' transcription of the network, from the same weights."""

    def __init__(self, cfg, start: dict, scale: int, gaussian_scale: float) -> None:
        stages = scale.bit_length() - 1
        self.net = irn_authors.InvRescaleNet(3, 3, irn_authors.subnet(cfg.model.downscaler.get("gc") or 8),
                                             [8] * stages, stages)
        self.net.load_state_dict(start)
        self.scale, self.gaussian_scale = scale, gaussian_scale
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.optimizer.lr, betas=(0.9, 0.999))
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=cfg.scheduler.T_max, eta_min=cfg.scheduler.eta_min)

    def step(self, hr: torch.Tensor) -> None:
        losses = irn_anchor.authors_step(self.net, hr, self.scale, self.gaussian_scale)
        self.optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 10)
        self.optimizer.step()
        self.schedule.step()


def study_config(scale: int, gaussian_scale: float):
    """``experiment=cpu_study model=irn upscaler=irn_inverse`` at ``scale`` (the study's run)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[
            "experiment=cpu_study", "model=irn", "upscaler=irn_inverse", f"scale={scale}", "output_dir=unused",
            f"model.downscaler.gaussian_scale={gaussian_scale}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--scale", type=int, default=2, choices=(2, 4))
    parser.add_argument("--gaussian-scale", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=["authors", "suite"],
                        help="authors, suite, or suite-<change>[+<change>] with changes " + ", ".join(CHANGES))
    args = parser.parse_args(argv)
    cfg = study_config(args.scale, args.gaussian_scale)
    torch.manual_seed(args.seed)
    start = build_rescaler(cfg).downscaler.net.state_dict()
    copies = {}
    for name in args.variants:
        if name == "authors":
            copies[name] = AuthorsCopy(cfg, start, args.scale, args.gaussian_scale)
        elif name == "suite" or name.startswith("suite-"):
            copies[name] = SuiteCopy(cfg, start, name[len("suite-"):].split("+") if name != "suite" else [])
        else:
            raise SystemExit(f"unknown variant {name!r}")
    train_files, held_files = split_holdout(list_images(args.data / "T91"), 10)
    train = [read_image(p).tensor for p in train_files]
    held = [read_image(p).tensor for p in held_files]
    rng = random.Random(args.seed)
    print("| step | " + " | ".join(copies) + " |")
    print("|---:|" + "---:|" * len(copies), flush=True)
    for step in range(1, args.steps + 1):
        hr = irn_anchor.patches(train, 16, 24 * args.scale, rng)
        for copy_ in copies.values():
            torch.manual_seed(args.seed * 1_000_003 + step)  # the same z for every copy
            copy_.step(hr)
        if step % 250 == 0 or step == args.steps:
            scores = []
            for copy_ in copies.values():
                copy_.net.eval()
                scores.append(irn_anchor.holdout_psnr(copy_.net, held, args.scale, args.gaussian_scale))
                copy_.net.train()
            print(f"| {step} | " + " | ".join(f"{s:.2f}" for s in scores) + " |", flush=True)


if __name__ == "__main__":
    main()
