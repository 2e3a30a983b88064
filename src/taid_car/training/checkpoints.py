"""Checkpoints that survive a kill, and ``ckpt_path=last``.

Lightning's default save goes through an fsspec transaction whose temporary file lives in
``TMPDIR``; when that is another device than the run directory (node-local /tmp beside a shared
output folder), the commit is a *copy*, and a kill during it leaves a truncated ``last.ckpt``.
:class:`AtomicCheckpointIO` writes through :func:`taid_car.atomic_write.write_atomically` (the
suite's one file writer: a temporary file in the destination folder, flushed, fsynced and
``os.replace``d over the target, then the folder fsynced), so a checkpoint path always holds
either the previous complete file or the new complete file, with the mode the umask gives.

Reading goes through :func:`~taid_car.models.trained.read_run_checkpoint` (``weights_only=True``),
Lightning's own resume included (:meth:`AtomicCheckpointIO.load_checkpoint`). A checkpoint whose
weights are not finite is never written (:class:`NonFiniteCheckpoint`) nor picked by
``ckpt_path=last``; a save that fails for lack of space or a file-size limit says so, naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from taid_car.atomic_write import TMP_SUFFIX, write_atomically
from taid_car.errors import UsageError
from taid_car.models.checkpoints import CheckpointError, CheckpointNotFound, non_finite_entry
from taid_car.models.trained import read_run_checkpoint

log = logging.getLogger(__name__)


class NonFiniteCheckpoint(RuntimeError):
    """A checkpoint holding NaN or infinite weights was about to be written."""


class CheckpointWriteError(UsageError, OSError):
    """A checkpoint could not be written (no space, a file-size limit, no permission)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic whatever ``TMPDIR`` is (remote URLs
    keep Lightning's fsspec path), that refuses to save non-finite weights, and that reads
    through :func:`~taid_car.models.trained.read_run_checkpoint` (``weights_only=True``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        check_finite(checkpoint.get("state_dict", {}), Path(path))
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_atomically(checkpoint, Path(path))

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return read_run_checkpoint(path)[0]


def check_finite(state_dict: dict, path: Path) -> None:
    """Raise :class:`NonFiniteCheckpoint` rather than write non-finite weights to ``path`` (the
    test every reader applies too: :func:`~taid_car.models.checkpoints.non_finite_entry`)."""
    key = non_finite_entry(state_dict)
    if key is not None:
        raise NonFiniteCheckpoint(f"refusing to save {path}: its weights are not finite ({key}); "
                                  f"the run diverged before this point")


def save_atomically(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`~taid_car.atomic_write.write_atomically`
    (a temporary file beside it, fsync, ``os.replace``). A failed write (no space left, a
    file-size limit, no permission) raises :class:`CheckpointWriteError` naming ``path`` and the
    system's reason; the previous file at ``path`` is kept and the temporary file removed."""
    writers: list[_RecordingWriter] = []

    def write(handle) -> None:
        writers.append(_RecordingWriter(handle))
        torch.save(obj, writers[-1])

    try:
        write_atomically(path, write)
    except OSError as err:
        raise _write_error(path, err) from err
    except RuntimeError as err:  # torch's writer hides the OS error under its own message
        if not writers or writers[-1].error is None:
            raise
        raise _write_error(path, writers[-1].error) from err


def _write_error(path: Path, err: OSError) -> CheckpointWriteError:
    reason = err.strerror or str(err)
    return CheckpointWriteError(
        f"could not write checkpoint {path}: {reason}"
        f"{f' (errno {err.errno})' if err.errno else ''}; the previous file there, if any, is intact: "
        f"free space or raise the limit, then resume with ckpt_path=last")


class _RecordingWriter:
    """A binary file whose write errors are kept (``error``) before they reach torch's writer."""

    def __init__(self, handle) -> None:
        self._handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self._handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name):
        return getattr(self._handle, name)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files killed saves left in ``folder`` (``.<name>.*.tmp``) and log
    them; only call it while holding the run directory (nothing else is saving there)."""
    stale = sorted(Path(folder).glob(f".*{TMP_SUFFIX}")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) left by interrupted saves in %s: %s",
                 len(stale), folder, ", ".join(p.name for p in stale))
    return stale


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` is not a checkpoint to resume from (``None`` when it is one): whatever
    :func:`~taid_car.models.trained.read_run_checkpoint` refuses (no regular file, a dangling
    link included; not readable with ``weights_only=True``; not the suite's; non-finite weights)."""
    try:
        read_run_checkpoint(path)
    except CheckpointError as err:
        return getattr(err, "reason", None) or str(err).removeprefix(f"{path}: ")
    return None


def latest_checkpoint(folder: Path) -> Path:
    """The newest ``*.ckpt`` in ``folder`` (by modification time) that loads; each newer one
    that does not (a dangling link or anything else that is no regular file included) is logged
    with its reason. FileNotFoundError when none loads."""
    folder = Path(folder)

    def modified(path: Path) -> float:  # a dangling link sorts by the link's own time
        for stat in (path.stat, path.lstat):
            try:
                return stat().st_mtime
            except OSError:
                pass
        return float("-inf")

    candidates = sorted(folder.glob("*.ckpt"), key=modified, reverse=True)
    skipped = []
    for path in candidates:
        reason = unreadable_reason(path)
        if reason is None:
            for bad, why in skipped:
                log.warning("ckpt_path=last: skipped %s (%s)", bad, why)
            log.info("ckpt_path=last: resuming from %s", path)
            return path
        skipped.append((path, reason))
    found = "; ".join(f"{p.name} ({why})" for p, why in skipped) or "no *.ckpt files"
    raise CheckpointNotFound(f"ckpt_path=last: no checkpoint to resume from in {folder}: {found}; "
                             f"drop ckpt_path to start the run anew, or give a checkpoint's path")
