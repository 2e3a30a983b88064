"""Checkpoint files: reading any of them with one clear error, and loading the CAR authors'
released checkpoints (``kgn.pth``, ``usn.pth``) into our modules.

:func:`read_checkpoint_file` is the one place the suite opens a checkpoint file: a file that is
not one (text, truncated, random bytes, not a torch file) raises :class:`CheckpointError`
"<path>: not a readable checkpoint (<reason>)", never a pickle or zip internal error, and never
a suggestion to load an untrusted file with ``weights_only=False``.

The authors saved ``nn.DataParallel(...).state_dict()``, so every key starts with ``module.``.
``kgn.pth`` loads into :class:`taid_car.models.car.KernelGenerationNet` (e.g.
``car.kernel_net``), ``usn.pth`` into :class:`taid_car.models.edsr.EDSR` built with the ``paper``
preset (32 blocks × 256, res_scale 0.1, rgb_range 1) at the same scale. Usage::

    car = CARDownscaler(scale=4)
    load_authors_checkpoint(car.kernel_net, "models/4x/kgn.pth")
    edsr = build_edsr("paper", scale=4)
    load_authors_checkpoint(edsr, "models/4x/usn.pth")
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

PREFIX = "module."
_SHOW = 8


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit the module / the run (keys, shapes, config)."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No file at a checkpoint path (or no loadable checkpoint where one was looked for)."""


def read_checkpoint_file(path: str | os.PathLike):
    """``torch.load(path, weights_only=True)`` on the CPU: tensors, containers and plain Python
    values only, so a file can never run code when loaded (files are untrusted; the suite's own
    checkpoints, Lightning's included, hold nothing else). Raises :class:`CheckpointNotFound`
    where no regular file is (missing, a folder, a dangling link: :func:`not_a_file` says which)
    and :class:`CheckpointError` naming the file for anything unreadable, a pickled object that
    is not plain data included."""
    path = Path(path)
    missing = not_a_file(path)
    if missing is not None:
        error = CheckpointNotFound(f"checkpoint {path} {missing}")
        error.reason = missing.removeprefix("is ")
        raise error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to read is the same answer: not a checkpoint
        reason = _reason(err, path)
        error = CheckpointError(f"{path}: not a readable checkpoint ({reason})")
        error.reason = reason
        raise error from err


def not_a_file(path: Path) -> str | None:
    """Why ``path`` is no regular file once links are followed, as a phrase after its name
    ("does not exist", "is a folder", "is a symlink to X, which does not exist"); None when it is one."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return f"cannot be opened ({err.strerror or err})"
        if not path.is_symlink():
            return "does not exist"
        loops = err.errno == errno.ELOOP
        return f"is a symlink to {os.readlink(path)}, which {'loops' if loops else 'does not exist'}"
    if stat.S_ISREG(mode):
        return None
    what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
    return f"is a symlink to {os.readlink(path)}, {what}" if path.is_symlink() else f"is {what}"


def non_finite_entry(state_dict: Mapping) -> str | None:
    """The first key of ``state_dict`` whose floating tensor holds NaN or ±inf (None if none)."""
    for key, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


#: how a file written by ``torch.save`` starts: a zip archive, or a legacy pickle (protocol 2+)
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _reason(err: Exception, path: Path) -> str:
    """The underlying reason of a failed ``torch.load``, without torch's advice to unpickle
    (and, for a file that is no torch file at all, that instead of the unpickler's internals)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        head = b"PK\x03\x04"
    if not head.startswith(_TORCH_MAGIC):
        return f"not a file written by torch.save: it starts with {head!r}, not a zip archive or a pickle"
    text = str(err).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:  # weights_only=True: keep the unpickler's reason, drop the advice
        text = text.split(marker, 1)[1].strip()
    elif text.startswith("Weights only load failed"):  # the reason is the paragraph without advice
        kept = [p.strip() for p in text.split("\n\n")[1:]
                if p.strip() and "weights_only" not in p and not p.strip().startswith(("Check the documentation", "Please file"))]
        text = kept[0] if kept else "it holds pickled objects that are not plain data"
        return (f"refused to unpickle code or objects: {' '.join(text.split()).rstrip('.')}; "
                f"only tensors and plain values are loaded")
    first = text.splitlines()[0].strip() if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def strip_prefix(
    state_dict: Mapping[str, torch.Tensor], prefix: str = PREFIX
) -> dict[str, torch.Tensor]:
    """Copy of ``state_dict`` with ``prefix`` removed from the keys that start with it."""
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def to_authors_state_dict(module: nn.Module, prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    """``module``'s state dict in the authors' layout (keys prefixed ``module.``)."""
    return {prefix + k: v for k, v in module.state_dict().items()}


def _read(source: str | os.PathLike | Mapping[str, torch.Tensor]) -> tuple[dict, str]:
    if isinstance(source, Mapping):
        return dict(source), "<state dict>"
    path = Path(source)
    obj = read_checkpoint_file(path)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj), str(path)


def _listing(title: str, items: list[str]) -> str:
    more = f" … and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:_SHOW]) + more


def _check_rgb_range(module: nn.Module, state: dict, name: str) -> None:
    """Refuse an EDSR checkpoint trained for another ``rgb_range`` (its sub_mean bias says so)."""
    rgb_range = getattr(module, "rgb_range", None)
    bias = state.get("sub_mean.bias")
    own = module.state_dict().get("sub_mean.bias")
    if rgb_range is None or bias is None or own is None or bias.shape != own.shape:
        return
    ratio = float(bias.double().sum() / own.double().sum())
    if abs(ratio - 1) > 1e-3:
        raise CheckpointError(
            f"checkpoint {name}: its sub_mean.bias {bias.tolist()} is for rgb_range "
            f"≈ {ratio * rgb_range:g}, but the {type(module).__name__} was built with "
            f"rgb_range={rgb_range:g}; rebuild it with rgb_range={round(ratio * rgb_range):d}"
        )


def load_authors_checkpoint(
    module: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]
) -> nn.Module:
    """Load an authors' state dict (path or mapping; ``module.`` prefix optional) strictly.

    Raises :class:`CheckpointError` naming the file, listing missing keys, unexpected keys and
    shape mismatches (model vs checkpoint) when the checkpoint does not fit exactly; nothing is
    loaded then. Returns ``module``.
    """
    raw, name = _read(source)
    state = strip_prefix(raw)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(
        f"{k}: model {tuple(own[k].shape)} vs checkpoint {tuple(state[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong:
        msg = f"checkpoint {name} does not fit {type(module).__name__}:"
        if missing:
            msg += _listing("missing keys", missing)
        if unexpected:
            msg += _listing("unexpected keys", unexpected)
        if wrong:
            msg += _listing("shape mismatches", wrong)
        msg += "\n  (check the scale, the preset/widths and that this is the right file)"
        raise CheckpointError(msg)
    _check_rgb_range(module, state, name)
    module.load_state_dict(state, strict=True)
    return module
