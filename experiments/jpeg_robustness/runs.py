"""The runs of the JPEG-robustness study, and a runner that trains them in parallel lanes and can be
stopped and started again at any point (each run resumes with ``ckpt_path=auto``).

    .venv/bin/python experiments/jpeg_robustness/runs.py --list                 # the runs and their commands
    .venv/bin/python experiments/jpeg_robustness/runs.py --lanes 2              # train what is not finished
    .venv/bin/python experiments/jpeg_robustness/runs.py --lanes 2 --only x2    # one scale first

Every run is the CPU study's recipe (``experiment=cpu_study``: T91 minus a 10-image hold-out,
2000 steps of 16 patches, Adam, cosine) at x2 and x4, trained once on clean LR (``channel=png``) and
once through JPEG quality 75 (``channel=jpeg channel.quality=75``), and tested on Set5 and Set14
clean and at JPEG quality 30 / 50 / 70 / 80 / 90 (``channel.test_qualities``), each row with the
bits per LR pixel of its LR. Rows: bicubic + EDSR-tiny (the baseline of CAR and TAID, which use
that upscaler), bicubic + an EDSR of IRN's size (IRN's baseline), CAR, TAID with guidance 0.01
(the study's best TAID), IRN with z = 0 (the study's pick for IRN), SAIN (tiny preset, the authors'
z from their Gaussian mixture) and bicubic + an EDSR of SAIN's size (SAIN's baseline).

Each run writes into ``multirun/jpeg_robustness/<name>/``; a run whose ``results.json`` exists is
finished and skipped. A run trained through JPEG is then also scored on clean (png) LR, by
``taid_car.evaluate`` on the checkpoint its test used, into ``<name>/clean/`` (what JPEG-aware
training costs on clean LR), with the study's HR crop (a multiple of 8). One thread per run (``OMP_NUM_THREADS=1``); its log goes to
``logs/jpeg_robustness/<name>.log``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path("multirun/jpeg_robustness")
LOGS = Path("logs/jpeg_robustness")

TEST_QUALITIES = "[30,50,70,80,90]"
METHODS = {
    "bicubic_edsr_tiny": ["model=bicubic", "upscaler=edsr_tiny"],
    "bicubic_edsr_irn_size": ["model=bicubic", "upscaler=edsr_irn_size"],
    "car": ["model=car"],
    "taid_g0.01": ["model=taid", "model.loss_weights.guidance=0.01"],
    "irn_z0": ["model=irn", "upscaler=irn_inverse", "model.downscaler.gaussian_scale=0"],
    "bicubic_edsr_sain_size": ["model=bicubic", "upscaler=edsr_size_of", "upscaler.size_of=sain"],
    "sain": ["model=sain"],
}
CHANNELS = {
    "clean": ["channel=png"],
    "jpeg75": ["channel=jpeg", "channel.quality=75"],
}
#: rough minutes of one core per run at x2 / x4 (experiments/cpu_study), longest first in a lane
MINUTES = {"bicubic_edsr_tiny": (15, 38), "bicubic_edsr_irn_size": (7, 33), "car": (33, 64),
           "taid_g0.01": (21, 50), "irn_z0": (35, 150), "bicubic_edsr_sain_size": (7, 35), "sain": (30, 100)}


def runs(scales=(2, 4)) -> list[tuple[str, list[str], int]]:
    """(name, overrides, minutes) of every run of the study."""
    found = []
    for scale in scales:
        for method, overrides in METHODS.items():
            for channel, channel_overrides in CHANNELS.items():
                name = f"{method}_x{scale}_{channel}"
                found.append((name, ["experiment=cpu_study", f"scale={scale}", *overrides, *channel_overrides,
                                     f"channel.test_qualities={TEST_QUALITIES}", "baseline=false",
                                     "data_root=../shared/data", "ckpt_path=auto",
                                     f"hydra.run.dir={OUT / name}"], MINUTES[method][scale == 4]))
    return found


def command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "taid_car.run", *overrides]


def clean_evaluation(name: str) -> list[str] | None:
    """The command scoring a finished JPEG-trained run on clean LR (None: nothing to do)."""
    from taid_car.runs import tested_checkpoint

    run = ROOT / OUT / name
    if "_jpeg" not in name or not finished(name) or (run / "clean" / "results.json").is_file():
        return None
    return [sys.executable, "-m", "taid_car.evaluate", f"ckpt_path={tested_checkpoint(run)}", "channel=png",
            "data=benchmark", "data_root=../shared/data", "data.modcrop=8", "progress=false",
            f"hydra.run.dir={OUT / name / 'clean'}"]


def finished(name: str) -> bool:
    return (ROOT / OUT / name / "results.json").is_file()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lanes", type=int, default=2, help="runs at once, one thread each (default 2)")
    parser.add_argument("--only", default="", help="only runs whose name contains this (e.g. x2, jpeg75, car_)")
    parser.add_argument("--list", action="store_true", help="print the runs and their commands, run nothing")
    args = parser.parse_args()
    todo = [r for r in runs() if args.only in r[0]]
    if args.list:
        for name, overrides, minutes in todo:
            state = "done" if finished(name) else f"~{minutes} min"
            print(f"{name:34s} {state:8s} python -m taid_car.run {' '.join(overrides)}")
        return 0
    queue = sorted((r for r in todo if not finished(r[0])), key=lambda r: -r[2])
    (ROOT / LOGS).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    running: dict[str, subprocess.Popen] = {}
    failed = []
    while queue or running:
        while queue and len(running) < args.lanes:
            name, overrides, _ = queue.pop(0)
            log = open(ROOT / LOGS / f"{name}.log", "a")  # noqa: SIM115 (closed with the process)
            print(f"{time.strftime('%H:%M:%S')} start {name}", flush=True)
            running[name] = subprocess.Popen(command(overrides), cwd=ROOT, env=env, stdout=log, stderr=log)
        time.sleep(10)
        for name, process in list(running.items()):
            if process.poll() is not None:
                del running[name]
                ok = process.returncode == 0 and finished(name)
                print(f"{time.strftime('%H:%M:%S')} {'done' if ok else f'FAILED ({process.returncode})'} {name}",
                      flush=True)
                if not ok:
                    failed.append(name)
    for name, _, _ in todo:
        evaluation = clean_evaluation(name)
        if evaluation is not None:
            with open(ROOT / LOGS / f"{name}_clean.log", "a") as log:
                done = subprocess.run(evaluation, cwd=ROOT, env=env, stdout=log, stderr=log, check=False)
            print(f"{time.strftime('%H:%M:%S')} clean evaluation of {name}: rc {done.returncode}", flush=True)
            if done.returncode != 0:
                failed.append(f"{name} (clean evaluation)")
    if failed:
        print(f"failed: {', '.join(failed)} (logs in {LOGS})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
