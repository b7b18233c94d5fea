"""Stop a search whose first trials all fail the same way (a wrong data path, a missing package, a full disk...).

Without it an experiment spends its whole ``maxTrialNumber`` on trials that fail in seconds, then ends DONE with no
error. :class:`FirstFailures` watches the trials as they end, until one succeeds: once ``limit`` of them have failed
with the same error line (the trial's last ``error:`` line), the search stops with that line.
"""

from __future__ import annotations

__all__ = ["FirstFailures"]


class FirstFailures:
    """``observe`` each ended trial; a message to stop with comes back once the first ``limit`` failures (before any
    success) share one error line. ``limit`` 0 turns it off."""

    def __init__(self, limit: int = 3) -> None:
        self.limit = limit
        self.errors: list[tuple[str | None, str | None]] = []  # (error line, trial id) of each failure so far
        self.succeeded = False
        self.stopped: str | None = None

    @property
    def watching(self) -> bool:
        """Still watching: on, no trial succeeded yet, and not stopped."""
        return self.limit > 0 and not self.succeeded and self.stopped is None

    def observe(self, succeeded: bool, error: str | None = None, trial_id: str | None = None) -> str | None:
        """Record an ended trial (``error``: its error line, None when unknown); the stop message, or None."""
        if not self.watching:
            return None
        if succeeded:
            self.succeeded = True
            return None
        self.errors.append((error, trial_id))
        last = self.errors[-self.limit:]
        if len(last) < self.limit or error is None or any(e != error for e, _ in last):
            return None
        trials = ", ".join(t for _, t in last if t)
        self.stopped = (f"{self.limit} trials in a row failed, and none succeeded, with: {error}"
                        + (f" (trial.stderr of {trials})" if trials else "")
                        + "; the search is stopped: fix that, then start the experiment again")
        return self.stopped
