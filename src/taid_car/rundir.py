"""One run per run directory: an exclusive lock held for the run's life, and the Hydra callback
that takes it before Hydra writes anything there.

:func:`held_run_dir` creates the directory and takes an ``fcntl`` lock on ``<dir>/.lock`` (the
holder's PID inside). A second process asking for the same directory gets :class:`RunDirInUse`
at once; a directory that cannot be written gets :class:`RunDirError`. The lock goes with the
process (killed, crashed or done), so nothing stale is ever left to clear by hand. Only the
main process takes it: DDP/SLURM ranks other than 0 share their rank 0's directory, and in a
sweep they step through the same jobs (:func:`runs_this_sweep_job`).

:class:`RunDirGuard` (``hydra.callbacks`` in ``conf/config.yaml``) takes the lock at
``on_run_start``, before Hydra writes ``.hydra/`` and ``run.log`` (so a refused run overwrites
nothing of the running one), and for each job of a multirun; at the end of a multirun it lists
the jobs that failed and exits non-zero when any did. Imports no torch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from taid_car.errors import USAGE_EXIT, UsageError

try:
    import fcntl
except ImportError:  # not POSIX: no lock (the directory is still checked for writing)
    fcntl = None

LOCK_NAME = ".lock"
_HELD: dict[Path, int] = {}  # resolved run directory -> file descriptor of its lock


class RunDirError(UsageError):
    """The run directory cannot be created or written."""


class RunDirInUse(RunDirError):
    """Another process holds the run directory."""


def is_secondary_rank() -> bool:
    """Whether this process is a non-zero rank of a distributed job (DDP children, SLURM tasks)."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(name)
        if value not in (None, "", "0"):
            return True
    return False


#: set by a sweep's main process at each job: the job number its DDP ranks would start at
SWEEP_JOB_ENV = "TAID_CAR_SWEEP_JOB"


def runs_this_sweep_job() -> bool:
    """Whether this process runs the current job of a Hydra sweep (True outside sweeps).

    Lightning starts the other DDP ranks at a job's first fit by re-running this command (the
    ``sys.argv`` and environment of that moment), so each rank runs the same sweep in step with
    the main process. The main process pins their ``hydra.sweep.dir`` to its own (``${now:}`` and
    ``${run_id:}`` would differ in a new process) and passes the job's number: a secondary rank
    skips (False) the jobs the main process ran before the ranks existed."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return True
    hydra_cfg = HydraConfig.get()
    if is_secondary_rank():
        return int(hydra_cfg.job.num) >= int(os.environ.get(SWEEP_JOB_ENV) or 0)
    pin = f'hydra.sweep.dir="{hydra_cfg.sweep.dir}"'
    if pin not in sys.argv:
        sys.argv.append(pin)
    os.environ[SWEEP_JOB_ENV] = str(hydra_cfg.job.num)
    return True


def hold_run_dir(path: str | Path) -> bool:
    """Take ``path``'s lock for this process (creating the folder); True when newly taken,
    False when this process already holds it or is a secondary rank. Raises
    :class:`RunDirInUse` or :class:`RunDirError` naming the folder and what to do."""
    if is_secondary_rank():
        return False
    folder = Path(path).resolve()
    if folder in _HELD:
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunDirError(f"cannot use {folder} as the run directory: {err.strerror or err}; "
                          f"give a writable hydra.run.dir") from None
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(f"cannot lock the run directory {folder}: {err.strerror or err}") from None
            raise RunDirInUse(f"{folder} is in use by another run{f' (pid {holder})' if holder else ''}: "
                              f"wait for it to end, or give another hydra.run.dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[folder] = fd
    return True


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def release_run_dir(path: str | Path) -> None:
    """Give up this process's lock on ``path`` (nothing if it holds none)."""
    fd = _HELD.pop(Path(path).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def holds_run_dir(path: str | Path) -> bool:
    """Whether this process holds ``path``'s lock."""
    return Path(path).resolve() in _HELD


@contextlib.contextmanager
def held_run_dir(path: str | Path) -> Iterator[None]:
    """Hold ``path`` for the body (released after it only if taken here)."""
    taken = hold_run_dir(path)
    try:
        yield
    finally:
        if taken:
            release_run_dir(path)


def failed_jobs(sweep_dir: str | Path) -> list[tuple[Path, str]]:
    """(job folder, first line of its ``failed.txt``) for each failed job of a sweep."""
    found = []
    for marker in sorted(Path(sweep_dir).glob("*/failed.txt")):
        text = marker.read_text(errors="replace").strip().splitlines()
        found.append((marker.parent, text[0] if text else "failed"))
    return found


#: files that show a directory holds a run's or an evaluation's results
RESULT_FILES = ("results.json", "results.md", "results.csv", "run.json")


class RunDirHoldsResults(RunDirError, FileExistsError):
    """The run directory already holds another run's (or evaluation's) results or checkpoints."""


def held_results(folder: str | Path) -> list[str]:
    """What of a run ``folder`` already holds: its results files and ``checkpoints/*.ckpt``."""
    out = Path(folder)
    found = [name for name in RESULT_FILES if (out / name).is_file()]
    found += [f"checkpoints/{p.name}" for p in sorted((out / "checkpoints").glob("*.ckpt"))]
    return found


def refuse_held_results(folder: str | Path, *, allowed: bool, what: str, remedy: str) -> list[str]:
    """:class:`RunDirHoldsResults` when ``folder`` already holds results or checkpoints and they
    may not be used (``allowed``: resuming that run, adding to those results); ``what`` names them
    ("a run", "results") and ``remedy`` the option that allows it. Returns what it holds."""
    found = held_results(folder)
    if found and not allowed:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise RunDirHoldsResults(f"{Path(folder)} already holds {what} ({shown}): {remedy}, "
                                 f"or give another hydra.run.dir")
    return found


def _refuse(err: RunDirError, prog: str = "taid_car.run") -> None:
    print(f"{prog}: error: {err}", file=sys.stderr)
    raise SystemExit(USAGE_EXIT)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra is a dependency
    _HydraCallback = object


class RunDirGuard(_HydraCallback):
    """Hydra callback: hold the run (or job) directory before Hydra writes into it, and refuse
    one that already holds another run's results (``prog`` ``taid_car.run``: unless resuming it
    with ``ckpt_path``; ``taid_car.evaluate``: unless ``add_results=true``, whose Hydra config then
    goes to ``.hydra/added_<time>_<id>/`` beside the earlier one's); summarise failed jobs at the
    end of a multirun (exit status 1 when any failed)."""

    def __init__(self, prog: str = "taid_car.run") -> None:
        self.prog = prog

    def on_run_start(self, config, **kwargs) -> None:
        try:
            hold_run_dir(config.hydra.run.dir)
            if not is_secondary_rank():
                self._check_results(config)
        except RunDirError as err:
            _refuse(err, self.prog)

    def _check_results(self, config) -> None:
        folder = config.hydra.run.dir
        if self.prog == "taid_car.evaluate":
            adding = bool(config.get("add_results"))
            if refuse_held_results(folder, allowed=adding, what="results",
                                   remedy="add this evaluation's rows to them with add_results=true"):
                from omegaconf import read_write

                with read_write(config.hydra):  # keep the earlier evaluation's .hydra/ as it is
                    config.hydra.output_subdir = f"{config.hydra.output_subdir or '.hydra'}/added_{_stamp()}"
            return
        refuse_held_results(folder, allowed=bool(config.get("ckpt_path")), what="a run",
                            remedy="resume it with ckpt_path=last")

    def on_run_end(self, config, **kwargs) -> None:
        release_run_dir(config.hydra.run.dir)

    def on_job_start(self, config, **kwargs) -> None:
        try:
            hold_run_dir(config.hydra.runtime.output_dir)
        except RunDirError as err:
            _refuse(err, self.prog)
        self._sweep_record(config)  # the sweep's own, before a DDP rank's sweep writes its copy

    def on_job_end(self, config, job_return=None, **kwargs) -> None:
        from hydra.types import RunMode

        if config.hydra.mode == RunMode.MULTIRUN:
            release_run_dir(config.hydra.runtime.output_dir)
        record = self._sweep_record(config)
        if record is not None and (not record[0].is_file() or record[0].read_bytes() != record[1]):
            from taid_car.atomic_write import write_atomically

            write_atomically(record[0], record[1])  # a DDP rank's sweep (its own overrides) wrote over it

    _record: tuple[Path, bytes] | None = None

    def _sweep_record(self, config) -> tuple[Path, bytes] | None:
        """(``<sweep>/multirun.yaml``, its text as the main process wrote it) in a sweep's main
        process; None elsewhere. The DDP ranks Lightning starts run the same sweep and rewrite
        that file with their own launch overrides: the main process puts its own back."""
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN or is_secondary_rank():
            return None
        path = Path(config.hydra.sweep.dir) / "multirun.yaml"
        if self._record is None and path.is_file():
            self._record = (path, path.read_bytes())
        return self._record

    def on_multirun_end(self, config, **kwargs) -> None:
        if is_secondary_rank():  # a DDP rank's copy of the sweep: rank 0 reports (and sets the exit status)
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = failed_jobs(sweep_dir)
        jobs = sum(1 for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()) if sweep_dir.is_dir() else 0
        if not failed:
            print(f"sweep {sweep_dir}: {jobs} job(s), none failed; compare them with: "
                  f"python -m taid_car.compare {sweep_dir}", file=sys.stderr)
            return
        print(f"sweep {sweep_dir}: {len(failed)} of {jobs} job(s) failed:", file=sys.stderr)
        for folder, reason in failed:
            print(f"  {folder.name}: {reason}", file=sys.stderr)
        raise SystemExit(1)


def _stamp() -> str:
    """``<date>_<time>_<run id>``: a name no other process of this host takes at the same time."""
    import time

    from taid_car.config import run_id

    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{run_id()}"
