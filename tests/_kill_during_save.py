"""Run ``taid_car.run`` with its Hydra overrides (argv) and SIGKILL the process in the middle of
writing checkpoint number ``$KILL_AT_SAVE`` (1-based): a kill during a save, made repeatable."""

from __future__ import annotations

import os
import signal
import sys

import torch

_real_save = torch.save
_calls = 0


def _dying_save(obj, f, *args, **kwargs):
    global _calls
    _calls += 1
    if _calls == int(os.environ["KILL_AT_SAVE"]):
        f.write(b"PK\x03\x04 half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_save(obj, f, *args, **kwargs)


torch.save = _dying_save

from taid_car.run import main  # imported after the patch, so that every save goes through it

sys.argv = ["taid_car.run", *sys.argv[1:]]
main()
