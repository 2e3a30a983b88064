"""Signals that tell the truth: SIGTERM (a scheduler's preemption, ``kill``) and Ctrl-C (SIGINT)
end a command with one message naming the phase it was in and the exit status a shell or
scheduler expects: 143 (128 + 15) for SIGTERM, 130 (128 + 2) for Ctrl-C. Never 0.

:func:`handled` installs the handlers for the command's life and turns whatever the signal led to
into that message and status:

* SIGTERM outside a Lightning ``fit``/``test`` raises :class:`Terminated` at once (nothing is
  half-done there). Inside one, Lightning's own handler runs first and calls this one as the
  handler it found: then the signal is only recorded, Lightning stops at the next batch boundary
  (``SIGTERMException``, a ``SystemExit`` with status 0 of its own) and the run's
  ``SaveOnException`` callback saves the resume point, ``checkpoints/interrupted.ckpt``.
* SIGINT is recorded and raises ``KeyboardInterrupt`` as Python's default does (Lightning turns
  that into ``sys.exit(1)`` after saving; the status is made 130 here).

:func:`stop_if_signalled` is for the points between phases (after a ``fit`` that reached its
end while the signal came in, before the baseline), so no phase starts after a SIGTERM.
Imports no torch.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

#: signal number -> exit status (128 + the number, as a shell reports a process killed by it)
EXIT_STATUS = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 128 + signal.SIGINT}

_received: list[int] = []  # signals received while handled() is active, in order
_phase: list[str] = ["starting"]


class Terminated(BaseException):
    """Raised where SIGTERM arrives outside a Lightning loop (a BaseException, as
    ``KeyboardInterrupt`` is, so no ``except Exception`` swallows it)."""


def received() -> int | None:
    """The first signal received while :func:`handled` is active (None when none)."""
    return _received[0] if _received else None


def set_phase(phase: str) -> None:
    """What the command is doing now (``"training car & edsr_tiny"``), for the message."""
    _phase[0] = phase


def stop_if_signalled() -> None:
    """Raise :class:`Terminated` when a signal came in (e.g. during a ``fit`` that finished
    anyway), so the next phase does not start."""
    if received() is not None:
        raise Terminated()


def _on_sigterm(signum, frame) -> None:
    _received.append(signum)
    if signal.getsignal(signum) is _on_sigterm:  # not inside Lightning's handler: stop here
        raise Terminated()


def _on_sigint(signum, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def _name(signum: int) -> str:
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


@contextlib.contextmanager
def handled(prog: str, after: str | Callable[[], str] = "") -> Iterator[None]:
    """Run the body with the SIGTERM/SIGINT handlers of this module; when a signal ended it
    (whatever exception or ``SystemExit`` that became), print ``<prog>: stopped by SIGTERM while
    <phase>[; <after>]`` on stderr and exit 143 (SIGINT: 130). ``after`` (a text, or a function
    asked for it then) may say what was kept and what to do next, e.g. how to resume; outside the
    main thread nothing is installed."""
    _received.clear()
    _phase[0] = "starting"
    try:
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm),
                    signal.SIGINT: signal.signal(signal.SIGINT, _on_sigint)}
    except ValueError:  # not the main thread: signals go to the main thread's handlers
        yield
        return
    try:
        yield
    except BaseException:
        signum = received()
        if signum is None:
            raise
        _report(prog, signum, after)
        raise SystemExit(EXIT_STATUS[signum]) from None
    else:
        signum = received()
        if signum is not None:  # the body finished its work although a signal came in
            _report(prog, signum, after)
            raise SystemExit(EXIT_STATUS[signum])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _report(prog: str, signum: int, after: str | Callable[[], str]) -> None:
    message = f"{prog}: stopped by {_name(signum)} while {_phase[0]}"
    try:
        after = after() if callable(after) else after
    except Exception as err:  # noqa: BLE001 (the stop itself must still be said)
        after = f"({type(err).__name__} while describing what was kept: {err})"
    print(f"{message}; {after}" if after else message, file=sys.stderr, flush=True)
