"""The suite's own error types for mistakes in what a user gave (files, folders, checkpoints,
config values), and how the command-line entry points report them: one line on stderr,
exit status 2. ``HYDRA_FULL_ERROR=1`` (or ``--debug`` for ``rescale``) shows the traceback.
Hydra's own composition errors (a misspelt key) keep Hydra's message."""

from __future__ import annotations

import contextlib
import os
import sys

USAGE_EXIT = 2


class UsageError(Exception):
    """A problem with the command as given (an option, a value, a file): exit status 2."""


class TrainingDiverged(RuntimeError):
    """Training met a non-finite loss, gradient or validation score: reported in one line,
    exit status 3 (the settings, not the input files, are at fault)."""

    exit_code = 3


def user_error_types() -> tuple[type[BaseException], ...]:
    """Every error type that means "the input is wrong" rather than "the suite is broken"."""
    from taid_car.data.download import ChecksumError, DatasetNotFoundError
    from taid_car.data.io import ImageError
    from taid_car.data.sources import SetSpecError
    from taid_car.models.checkpoints import CheckpointError

    return (UsageError, ImageError, DatasetNotFoundError, ChecksumError, SetSpecError, CheckpointError,
            FileExistsError, TrainingDiverged)


def user_error(err: BaseException) -> BaseException | None:
    """``err`` or the user error it wraps (Hydra's instantiate wraps what a constructor raised)."""
    types = user_error_types()
    while err is not None:
        if isinstance(err, types):
            return err
        err = err.__cause__
    return None


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line."""
    return " ".join(str(err).split("\n")).strip() or type(err).__name__


@contextlib.contextmanager
def reported(prog: str):
    """Run the body; a user error becomes ``<prog>: error: <message>`` on stderr and exit 2
    (3 for :class:`TrainingDiverged`)."""
    try:
        yield
    except Exception as err:
        found = user_error(err)
        if found is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"{prog}: error: {one_line(found)}", file=sys.stderr)
        raise SystemExit(getattr(found, "exit_code", USAGE_EXIT)) from None


class ConfigError(UsageError, ValueError):
    """A config value a model cannot take (a scale it does not support, an unknown preset or
    option): a ValueError for callers, reported as a user error by the CLIs."""
