"""Run ``taid_car.run`` (Hydra overrides in argv), pausing after its first training step until the
file ``$PAUSE_UNTIL`` exists; ``<run dir>/paused`` says it is paused. Two runs at once, made repeatable."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import lightning as L

from taid_car import run


class _Pause(L.Callback):
    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == 1:
            Path(trainer.default_root_dir, "paused").touch()
            deadline = time.monotonic() + 240
            while not Path(os.environ["PAUSE_UNTIL"]).exists() and time.monotonic() < deadline:
                time.sleep(0.1)


_instantiate = run._instantiate_dict
run._instantiate_dict = lambda group: [*_instantiate(group), _Pause()] if group and "checkpoint" in group else _instantiate(group)
sys.argv = ["taid_car.run", *sys.argv[1:]]
run.main()
