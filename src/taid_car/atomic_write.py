"""Writing any output file: whole or not at all, and never through what already sits at its name.

:func:`write_atomically` writes into a new hidden file beside the target
(``.<name>.<random>.tmp``, created with ``O_EXCL`` and mode 0666, so the umask gives the final
mode exactly as ``open(name, "w")`` would), flushes and fsyncs it, and then moves it onto the
name (``os.replace``), then fsyncs the folder. An existing file at the name is *replaced*, never
opened for writing: a hard link or a symlink there keeps its target untouched, and a kill or a
failed write (no space, a file-size limit) leaves the previous file whole and no temporary file
(the error is raised; a SIGKILL can leave only the hidden ``.tmp`` file, never half a target).

``overwrite=False`` publishes with ``os.link(tmp, name)``, which the kernel refuses when the name
is taken in any way (a file, a folder, a symlink, dangling or not), so there is no window between
a check and the write in which another process's file could be replaced. Only on a file system
without hard links does it fall back to an existence check followed by ``os.replace``.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["TMP_SUFFIX", "fsync_folder", "temporary_name", "write_atomically"]

TMP_SUFFIX = ".tmp"
"""How the names of the temporary files end (``.<name>.<random>.tmp``, hidden)."""

#: ``os.link`` errors that mean "no hard links here" (then: check, then ``os.replace``)
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}

Content = str | bytes | bytearray | memoryview | Callable[[BinaryIO], object]


def temporary_name(path: Path) -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.<16 hex digits>.tmp`` (the name cut to 200
    bytes, so the whole stays within the usual 255-byte limit)."""
    stem = os.fsdecode(os.fsencode(path.name)[:200])
    return path.with_name(f".{stem}.{secrets.token_hex(8)}{TMP_SUFFIX}")


def write_atomically(path: str | Path, content: Content, *, overwrite: bool = True) -> Path:
    """Write ``content`` to ``path`` whole or not at all; returns ``path``.

    ``content``: ``str`` (written as UTF-8), bytes, or a callable that writes to the binary file
    handle it is given (``lambda f: image.save(f, format="PNG")``,
    ``lambda f: figure.savefig(f, format="png")``, ``lambda f: torch.save(obj, f)``). Parent
    folders are created. ``overwrite=False`` raises ``FileExistsError`` naming ``path`` when the
    name is taken (a file, a folder or a symlink, dangling or not). Any error leaves the previous
    file at ``path`` (if any) as it was and removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(content, str):
                handle.write(content.encode("utf-8"))
            elif isinstance(content, (bytes, bytearray, memoryview)):
                handle.write(content)
            else:
                content(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def _create_temporary(path: Path) -> tuple[Path, int]:
    """A new hidden file beside ``path`` (mode 0666 less the umask) and its open descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = temporary_name(path)
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name beside it", str(path))


def _publish_new(tmp: Path, path: Path) -> None:
    """Give the complete ``tmp`` the name ``path`` unless that name is taken; drop ``tmp``."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as err:
        if err.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(path):
            raise _exists(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def _exists(path: Path) -> FileExistsError:
    link = f" (a symlink to {os.readlink(path)})" if path.is_symlink() else ""
    return FileExistsError(f"{path}: already exists{link}; pass overwrite=True to replace it")


def fsync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
