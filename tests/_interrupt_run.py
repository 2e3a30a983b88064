"""Run ``taid_car.run`` (Hydra overrides in argv) and press Ctrl-C, as a KeyboardInterrupt raised
at training step ``$INTERRUPT_AT_STEP``, before the first validation has saved anything."""

from __future__ import annotations

import os
import sys

import lightning as L

from taid_car import run


class _CtrlC(L.Callback):
    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == int(os.environ["INTERRUPT_AT_STEP"]):
            raise KeyboardInterrupt


_instantiate = run._instantiate_dict
run._instantiate_dict = lambda group: [*_instantiate(group), _CtrlC()] if group and "checkpoint" in group else _instantiate(group)
sys.argv = ["taid_car.run", *sys.argv[1:]]
run.main()
