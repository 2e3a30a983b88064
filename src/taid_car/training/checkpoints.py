"""Checkpoints that survive a kill, and ``ckpt_path=last``.

Lightning's default save goes through an fsspec transaction whose temporary file lives in
``TMPDIR``; when that is another device than the run directory (node-local /tmp beside a shared
output folder), the commit is a *copy*, and a kill during it leaves a truncated ``last.ckpt``.
:class:`AtomicCheckpointIO` writes the temporary file in the destination folder, flushes and
fsyncs it, and ``os.replace``s it over the target (then fsyncs the folder), so a checkpoint path
always holds either the previous complete file or the new complete file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from taid_car.models.checkpoints import CheckpointError, read_checkpoint_file

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic whatever ``TMPDIR`` is (remote URLs
    keep Lightning's fsspec path)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_atomically(checkpoint, Path(path))


def save_atomically(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` via a temporary file beside it, fsync and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` is not a loadable checkpoint (``None`` when it loads)."""
    try:
        checkpoint = read_checkpoint_file(path, weights_only=False)
    except CheckpointError as err:
        return getattr(err, "reason", str(err))
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return "no 'state_dict' entry (not a Lightning checkpoint)"
    return None


def latest_checkpoint(folder: Path) -> Path:
    """The newest ``*.ckpt`` in ``folder`` (by modification time) that loads; each newer one
    that does not is logged with its reason. FileNotFoundError when none loads."""
    folder = Path(folder)
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    skipped = []
    for path in candidates:
        reason = unreadable_reason(path)
        if reason is None:
            for bad, why in skipped:
                log.warning("ckpt_path=last: skipped %s, not a readable checkpoint (%s)", bad, why)
            log.info("ckpt_path=last: resuming from %s", path)
            return path
        skipped.append((path, reason))
    found = "; ".join(f"{p.name} ({why})" for p, why in skipped) or "no *.ckpt files"
    raise FileNotFoundError(f"ckpt_path=last: no readable checkpoint in {folder}: {found}")
