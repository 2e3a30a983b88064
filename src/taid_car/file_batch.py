"""Running a command over many image files: what ``rescale`` does to each file is its own; how
the files are found, checked, named and reported is here.

* :func:`collect_inputs`, :func:`target_paths`, :func:`refuse_existing`: the inputs (a file or a
  folder), their outputs (same stem, ``.png``), and no output replaced without ``--overwrite``
  (every target checked before anything is written; links never written through);
* :func:`preflight`: header checks (size, pixel count) of every file before any work;
* :func:`process_files`: the work per file with a progress bar, a failing file recorded by name
  (``--on-error skip``) or stopping the command (``fail``: :class:`FileFailure`);
* :func:`summarize`: the one-line outcome and the exit status.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from taid_car.data.io import (
    ImageError,
    check_min_size,
    list_images,
    modcrop,
    probe_size,
    read_image,
)
from taid_car.errors import UsageError
from taid_car.models.trained import TrainedPair

log = logging.getLogger("taid_car.rescale")  # the command's messages: "rescale: ..." on stderr


class FileFailure(Exception):
    """One input file failed under ``--on-error fail``: exit status 1."""


def collect_inputs(source: str | Path) -> list[Path]:
    """The image files named by ``source``: one file, or the images directly inside a folder."""
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.exists():
        raise UsageError(f"input {path} does not exist")
    try:
        return list_images(path)
    except ImageError as err:
        raise UsageError(str(err)) from err


def target_paths(files: Sequence[Path], out_dir: Path, suffix: str = ".png") -> dict[Path, Path]:
    """``{input: out_dir/<stem><suffix>}`` (``.png``; ``.jpg`` for a JPEG LR); two inputs with one
    stem, or a target that is an input file itself, are usage errors."""
    targets = {src: out_dir / f"{src.stem}{suffix}" for src in files}
    by_target: dict[Path, list[Path]] = {}
    for src, dst in targets.items():
        by_target.setdefault(dst, []).append(src)
    clashes = [srcs for srcs in by_target.values() if len(srcs) > 1]
    if clashes:
        names = "; ".join(", ".join(p.name for p in srcs) for srcs in clashes)
        raise UsageError(f"inputs would write the same output file (same stem): {names}")
    # realpath, not Path.resolve: a symlink loop at a target name is reported later, not raised here
    inputs = {os.path.realpath(src) for src in files}
    same = [dst for dst in targets.values() if os.path.realpath(dst) in inputs]
    if same:
        raise UsageError(
            f"output would replace input file(s) {', '.join(p.name for p in same)}; "
            "choose another --output folder"
        )
    return targets


def _taken(path: Path) -> bool:
    """Whether ``path`` is taken: a file, a folder or a symlink, dangling or not (``Path.exists``
    follows links, so it misses a dangling one, which ``open(..., "x")`` then refuses mid-run)."""
    return path.is_symlink() or path.exists()


def described(path: Path) -> str:
    """``path``, with where it points when it is a symlink (and whether that exists)."""
    if not path.is_symlink():
        return str(path)
    target = Path(os.readlink(path))
    missing = "" if path.exists() else ", which does not exist"
    return f"{path} (a symlink to {target}{missing})"


def refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    """Usage error naming every output path that is taken (a file, or a symlink, dangling or
    not), unless ``overwrite``; a folder in the way is refused even then. With ``overwrite`` a
    file, hard link or symlink there is replaced by the new file
    (:func:`~taid_car.atomic_write.write_atomically`), never written through."""
    taken = [p for p in paths if _taken(p)]
    folders = [p for p in taken if p.is_dir() and not p.is_symlink()]
    if folders:
        shown = ", ".join(str(p) for p in folders[:10])
        raise UsageError(
            f"output path(s) {shown} {'is a folder' if len(folders) == 1 else 'are folders'}: "
            "move it away or choose another --output"
        )
    if taken and not overwrite:
        shown = ", ".join(described(p) for p in taken[:10])
        more = f" and {len(taken) - 10} more" if len(taken) > 10 else ""
        links = " (a symlink is replaced by the new file, not written through)" if any(
            p.is_symlink() for p in taken) else ""
        raise UsageError(
            f"{len(taken)} output file(s) already exist: {shown}{more}; "
            f"pass --overwrite to replace them{links}"
        )


@dataclass
class Outcome:
    """Files done, and ``(file, reason)`` for each one skipped."""

    done: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def min_size_check(min_side: int, what: str, max_pixels: int | None = None, factor: int = 1) -> Callable[[Path], None]:
    """A preflight check from the file's header: raises :class:`ImageError` unless H, W >= min_side
    and, with ``max_pixels``, the largest image the pair handles (H·W·``factor``: the HR, or the SR
    of an LR file) is at most that many pixels (the whole image goes through the model at once)."""

    def check(path: Path) -> None:
        size = probe_size(path)
        check_min_size(size, min_side, min_side, path, what)
        pixels = size[0] * size[1] * factor
        if max_pixels is not None and pixels > max_pixels:
            raise ImageError(
                path,
                f"{size[0]}x{size[1]} gives a {pixels / 1e6:.1f} MP image to process whole, above "
                f"--max-pixels {max_pixels / 1e6:.1f} MP (the model's activations for the whole image "
                "are held at once): crop or tile it, or raise --max-pixels",
            )

    return check


def preflight(
    files: Sequence[Path], check: Callable[[Path], None], on_error: str, outcome: Outcome
) -> list[Path]:
    """Headers only, before anything is written: drops (skip) or raises on (fail) unreadable or
    too small files; returns the files that passed."""
    good = []
    for path in files:
        try:
            check(path)
        except ImageError as err:
            record_failure(path, err, on_error, outcome)
        else:
            good.append(path)
    return good


def record_failure(path: Path, err: Exception, on_error: str, outcome: Outcome) -> None:
    """Log a bad file by name; raise :class:`FileFailure` under ``--on-error fail``."""
    reason = str(err)
    prefix = f"{path}: "
    reason = reason.removeprefix(prefix)
    if on_error == "fail":
        raise FileFailure(f"{path}: {reason} (--on-error fail: stopping)") from err
    log.warning("skipping %s: %s", path, reason)
    outcome.failed.append((path, reason))


def process_files(
    files: Sequence[Path],
    work: Callable[[Path], None],
    on_error: str,
    outcome: Outcome,
    desc: str,
    progress: bool,
) -> Outcome:
    """Run ``work`` on each file under a progress bar; per-file errors are recorded or fatal."""
    with logging_redirect_tqdm(loggers=[log]):
        for path in tqdm(files, desc=desc, unit="img", disable=None if progress else True):
            try:
                work(path)
            except (ValueError, RuntimeError) as err:  # ImageError, model shape errors, OOM
                try:
                    record_failure(path, err, on_error, outcome)
                except FileFailure:
                    if outcome.done:
                        log.warning(
                            "stopping after %d completed file(s): %s",
                            len(outcome.done),
                            ", ".join(p.name for p in outcome.done),
                        )
                    raise
            else:
                outcome.done.append(path)
    return outcome


def summarize(outcome: Outcome, verb: str) -> int:
    """Log what was done and skipped; exit status 0, or 1 when nothing succeeded."""
    total = len(outcome.done) + len(outcome.failed)
    log.info("%s %d of %d file(s)", verb, len(outcome.done), total)
    if outcome.failed:
        lines = "\n".join(f"  {path}: {reason}" for path, reason in outcome.failed)
        log.warning("skipped %d file(s):\n%s", len(outcome.failed), lines)
    if not outcome.done:
        log.error("every input file failed")
        return 1
    return 0


def as_file_image(image: torch.Tensor, is_gray: bool) -> torch.Tensor:
    """(1,3,H,W) -> what the file should hold: (1,H,W) when the source was gray and all three
    channels are equal (or the image has one channel: a colorization's gray), else (3,H,W)."""
    image = image[0]
    if image.shape[0] == 1:
        return image
    if is_gray and torch.equal(image[0], image[1]) and torch.equal(image[1], image[2]):
        return image[:1]
    return image


def load_hr(path: Path, pair: TrainedPair, min_side: int, what: str) -> tuple[torch.Tensor, bool]:
    """Read an HR file -> ((1,3,H',W') [0,1] cropped bottom/right to a multiple of ``pair.crop``,
    is_gray); logs the crop; :class:`ImageError` when smaller than ``min_side``."""
    image = read_image(path)
    check_min_size(image.tensor, min_side, min_side, path, what)
    hr = modcrop(image.tensor, pair.crop)
    if hr.shape != image.tensor.shape:
        h, w = image.tensor.shape[-2:]
        log.info(
            "%s: cropped %dx%d -> %dx%d (HxW, bottom/right) to a multiple of %d "
            "(lcm of scale %d and the downscaler's size multiple %d)",
            path.name,
            h,
            w,
            *hr.shape[-2:],
            pair.crop,
            pair.scale,
            pair.downscaler.size_multiple,
        )
    return hr.unsqueeze(0), image.is_gray
