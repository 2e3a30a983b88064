"""Loggers as the suite configures them, and the folders W&B needs outside the run directory."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

log = logging.getLogger(__name__)


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` without the ``anonymous=None`` it always passes to
    ``wandb.init``, which current W&B answers with a deprecation warning on every run."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


#: W&B's folders outside the run directory: (environment variable, what W&B keeps there)
WANDB_FOLDERS = (("WANDB_DATA_DIR", "staging files (tables, artifacts)"), ("WANDB_CACHE_DIR", "cache"),
                 ("WANDB_CONFIG_DIR", "settings"))


def _wandb_default_folder(variable: str) -> Path:
    import platformdirs

    if variable == "WANDB_DATA_DIR":
        return Path(platformdirs.user_data_dir("wandb"))
    if variable == "WANDB_CACHE_DIR":
        return Path(platformdirs.user_cache_dir("wandb"))
    return Path(platformdirs.user_config_dir("wandb"))


def _writable(folder: Path) -> str | None:
    """None when ``folder`` can be created and written; else the system's reason."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def prepare_wandb_folders(run_dir: str | Path) -> list[str]:
    """Check, before W&B starts, that it can write its folders outside the run directory (under
    ``HOME`` by default); each one it cannot is said at start (a warning) and moved into
    ``<run_dir>/wandb/<data|cache|config>`` for this process, unless its variable was set by the
    user (then the warning says that W&B's extras, such as the results table, may fail; the results
    files do not depend on them). Returns the warnings given."""
    said = []
    for variable, what in WANDB_FOLDERS:
        folder = Path(os.environ.get(variable) or _wandb_default_folder(variable)).expanduser()
        reason = _writable(folder)
        if reason is None:
            continue
        if os.environ.get(variable):
            said.append(f"W&B cannot write its {what} in {folder} ({variable}; {reason}): its extras may fail; "
                        f"the results files do not depend on them")
        else:
            moved = Path(run_dir) / "wandb" / variable.removeprefix("WANDB_").removesuffix("_DIR").lower()
            if _writable(moved) is not None:  # the run directory itself is checked by the lock already
                said.append(f"W&B cannot write its {what} in {folder} nor in {moved}: its extras may fail")
                continue
            os.environ[variable] = str(moved)
            said.append(f"W&B cannot write its {what} in {folder} ({reason}; is HOME read-only?): using {moved} "
                        f"for this run (set {variable} to choose)")
    for line in said:
        log.warning(line)
    return said
