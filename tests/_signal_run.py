"""Run ``taid_car.run`` (Hydra overrides in argv) and send this process a real signal
(``$SEND_SIGNAL``: TERM or INT) at a point of one phase (``$SIGNAL_AT``): ``fit:<step>`` after that
training step of the first fit, ``test:<batch>`` after that test batch of the first test, or
``baseline:<step>`` after that step of the second fit (the baseline's)."""

from __future__ import annotations

import os
import signal
import sys

import lightning as L

from taid_car import run

PHASE, AT = os.environ["SIGNAL_AT"].split(":")
SIGNUM = getattr(signal, f"SIG{os.environ['SEND_SIGNAL']}")
_fits = []


class _Signal(L.Callback):
    def on_fit_start(self, trainer, *args) -> None:
        _fits.append(trainer)

    def on_train_batch_end(self, trainer, *args) -> None:
        fit = {"fit": 1, "baseline": 2}.get(PHASE)
        if fit == len(_fits) and trainer.global_step == int(AT):
            os.kill(os.getpid(), SIGNUM)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if PHASE == "test" and batch_idx == int(AT):
            os.kill(os.getpid(), SIGNUM)


_instantiate = run._instantiate_dict
run._instantiate_dict = lambda group: [*_instantiate(group), _Signal()] if group and "checkpoint" in group else _instantiate(group)
sys.argv = ["taid_car.run", *sys.argv[1:]]
run.main()
