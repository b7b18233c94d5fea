"""Stopping a trial is not failing it: SIGINT and SIGTERM end the trial at a safe point, by the signal itself.

NNI stops a trial (its assessor, ``nnictl stop``, a cancelled trial in the WebUI) with SIGINT, then SIGKILL five
seconds later, and records EARLY_STOPPED or USER_CANCELED only when the process died of a signal: any exit status
makes the trial FAILED. Python turns SIGINT into ``KeyboardInterrupt``, which a program that catches it and
returns a status would report as a failure. So, while a trial runs:

* SIGINT and SIGTERM raise :class:`TrialStopped` in the main thread, except inside :func:`critical` sections (the
  checkpoint and the NNI report of an epoch), where the signal waits until the section ends, so an epoch is saved
  and reported whole or not at all. Checkpoints are written atomically anyway, so the last completed epoch's
  checkpoint is always on disk;
* the trial then says in one line what it kept, and :func:`die_by` restores the default handler and raises the
  signal again: the process ends by that signal, as NNI (and a shell, which shows 130 for Ctrl-C) expects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Iterator

__all__ = ["TrialStopped", "StopSignals", "critical", "die_by", "exit_now"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_active: "StopSignals | None" = None


class TrialStopped(BaseException):
    """The trial received a stop signal (a ``BaseException``, like ``KeyboardInterrupt``, so that no ``except
    Exception`` swallows it). ``detail`` is filled in by the training loop: what was kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.detail = ""

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class StopSignals:
    """Context manager: SIGINT/SIGTERM -> :class:`TrialStopped` while it is active (main thread only; elsewhere
    it does nothing). Restores the previous handlers on exit."""

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}
        self._depth = 0
        self._pending: int | None = None

    def __enter__(self) -> "StopSignals":
        global _active
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
            _active = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if _active is self:
            _active = None

    def _handle(self, signum: int, frame: object) -> None:
        if self._depth:
            self._pending = signum
            return
        raise TrialStopped(signum)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A section that a stop signal does not interrupt: it is raised when the section ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending is not None:
                signum, self._pending = self._pending, None
                raise TrialStopped(signum)


def critical() -> contextlib.AbstractContextManager[None]:
    """The active :class:`StopSignals`' critical section (nothing to defer when none is active)."""
    return _active.critical() if _active is not None else contextlib.nullcontext()


def die_by(signum: int) -> None:
    """End this process by ``signum`` with its default action (after flushing stdout and stderr)."""
    _flush_stdio()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])  # in case it was blocked: deliver it now
    raise SystemExit(128 + signum)  # not reached when the default action terminates the process


def exit_now(code: int) -> None:
    """End a finished trial's process with ``code`` at once, after flushing its logs, stdout and stderr.

    Python's own teardown of torch's thousands of modules took about 1 s per trial on a 2-core CPU (NNI waits for
    it before the slot takes the next trial). Nothing is left to write: checkpoints and results were written and
    closed, NNI's metrics were sent (synchronously), and the training loop released its loader processes.
    """
    logging.shutdown()
    _flush_stdio()
    os._exit(code)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
