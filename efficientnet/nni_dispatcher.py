"""What this project changes in NNI 3.0's dispatcher, the process that runs the tuner and the assessor, in one place.

NNI starts the dispatcher with ``SDK_PROCESS=dispatcher``; the tuner calls these from its constructor there, and
nothing here changes NNI in any other process (by hand, tests, benchmarks).

- :func:`hear_stopped_trials`: NNI hands an assessor-stopped trial's last intermediate result to the tuner (NNI 1.x's
  ``includeIntermediateResults``, which NNI 3.0's config can no longer set).
- :func:`report_errors`: an exception while the dispatcher handles a command (the tuner's ``update_search_space``,
  ``trial_end`` ...) ends the experiment with that exception's one line. NNI's command worker logs it and stops,
  and the experiment stayed RUNNING, with no error, for good.
- :func:`stop_promptly`: on a stop (``nnictl stop``) the dispatcher ends at once: NNI's manager waits for it before it
  stops the trials and itself, and it waited for NNI's command workers' 3 s poll and for Python's teardown of torch.
- :func:`manager` and :func:`trial_error`: the experiment's REST API, to read a failed trial's error line.
- :func:`guarded`: whether NNI's manager runs with ``nni_guard.js`` (``python -m efficientnet create``).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
from typing import Any

__all__ = ["in_dispatcher", "hear_stopped_trials", "report_errors", "stop_promptly", "guarded", "manager",
           "trial_error", "error_line", "ExperimentError"]

_logger = logging.getLogger(__name__)


class ExperimentError(RuntimeError):
    """Raised by the tuner to end the experiment: its message becomes the experiment's error (see
    :func:`report_errors`)."""


def in_dispatcher() -> bool:
    """Whether this process is NNI's dispatcher."""
    try:
        from nni.runtime import msg_dispatcher

        return msg_dispatcher.dispatcher_env_vars.SDK_PROCESS == "dispatcher"
    except (ImportError, AttributeError):
        return False


def guarded() -> bool:
    """Whether NNI's manager was started with the guard (it sets ``EFFICIENTNET_NNI_GUARD`` for its children)."""
    return os.environ.get("EFFICIENTNET_NNI_GUARD") == "1"


def hear_stopped_trials() -> bool:
    """Inside NNI's dispatcher, have NNI hand an early-stopped trial's last intermediate result to the tuner.

    This is NNI's own notification (``MsgDispatcher._earlystop_notify_tuner``), switched by the dispatcher's
    ``NNI_INCLUDE_INTERMEDIATE_RESULTS``, which NNI 3.0's experiment config cannot set. Returns whether it is on.
    Outside the dispatcher nothing is changed and the result is False.
    """
    try:
        from nni.runtime import msg_dispatcher

        env = msg_dispatcher.dispatcher_env_vars
        if env.SDK_PROCESS != "dispatcher":
            return False
        if env.NNI_INCLUDE_INTERMEDIATE_RESULTS != "true":
            msg_dispatcher.dispatcher_env_vars = env._replace(NNI_INCLUDE_INTERMEDIATE_RESULTS="true")
    except (ImportError, AttributeError, ValueError) as exc:  # an NNI whose dispatcher works differently
        _logger.warning("early-stopped trials count as failed: this NNI's dispatcher cannot hand their last "
                        "intermediate result to the tuner (%s)", exc)
        return False
    return True


def report_errors() -> bool:
    """Inside NNI's dispatcher, make an exception in a command handler end the experiment with its one line.

    ``MsgDispatcherBase.process_command`` is wrapped: the exception is sent to NNI's manager as the dispatcher's
    error command (``ER``, what NNI itself sends when ``dispatcher.run()`` raises), so the experiment turns to ERROR
    instead of running on with a dead tuner; then it propagates as before (NNI logs it in ``dispatcher.log``).
    Returns whether the wrapper is in place.
    """
    if not in_dispatcher():
        return False
    try:
        from nni.runtime.msg_dispatcher_base import MsgDispatcherBase

        process = MsgDispatcherBase.process_command
        if getattr(process, "_reports_errors", False):
            return True
        if not callable(getattr(MsgDispatcherBase, "report_error", None)):
            raise AttributeError("MsgDispatcherBase.report_error")
    except (ImportError, AttributeError) as exc:
        _logger.warning("a tuner error will not end the experiment: this NNI's dispatcher differs (%s)", exc)
        return False

    def process_command(self, command, data):
        try:
            return process(self, command, data)
        except Exception as exc:
            line = error_line(f"{type(exc).__name__}: {exc}") if not isinstance(exc, (ExperimentError, ValueError)) \
                else error_line(str(exc))
            _logger.error("the experiment stops: %s", line)
            self.report_error(line)
            raise

    process_command._reports_errors = True  # type: ignore[attr-defined]
    MsgDispatcherBase.process_command = process_command
    return True


class _WakingStop:
    """``MsgDispatcherBase.stopping`` as a data descriptor: setting it true also puts NNI's no-op command (Ping) into
    both command queues, so that each worker returns from ``queue.get`` and sees that the dispatcher stops."""

    _key = "_efficientnet_stopping"

    def __get__(self, dispatcher: Any, owner: type | None = None) -> Any:
        if dispatcher is None:
            return self
        return dispatcher.__dict__.get(self._key, False)

    def __set__(self, dispatcher: Any, value: Any) -> None:
        from nni.runtime.tuner_command_channel import CommandType

        dispatcher.__dict__[self._key] = value
        if value:  # set after NNI's run loop ended: a worker that wakes sees it (no race with the check)
            for name in ("default_command_queue", "assessor_command_queue"):
                queue = dispatcher.__dict__.get(name)
                if queue is not None:
                    queue.put((CommandType.Ping, None))


def stop_promptly() -> bool:
    """Inside NNI's dispatcher, have a stop end the dispatcher at once.

    NNI's manager stops an experiment by sending the dispatcher its terminate command, then polls each second until
    the dispatcher's process has ended, and only then stops the trials and itself. Two waits made that 2-4 s:

    - ``MsgDispatcherBase.run`` sets ``self.stopping`` and joins its two command workers, which look at it only when
      their ``queue.get(timeout=3)`` returns. Setting ``stopping`` now also wakes them (:class:`_WakingStop`); a worker
      busy with a command finishes it first, as before.
    - Python's teardown of torch's modules, after the dispatcher's work is done (about 1 s on a 2-core CPU). Once
      ``run`` has returned from a stop in the process's main thread (where NNI's dispatcher runs it), the process
      ends without it (:func:`_exit_without_teardown`): at exit, so after the rest of NNI's dispatcher code and after
      any exit handler registered later.

    Returns whether this is in place; outside the dispatcher nothing changes.
    """
    if not in_dispatcher():
        return False
    try:
        from nni.runtime import msg_dispatcher_base
        from nni.runtime.tuner_command_channel import CommandType

        base = msg_dispatcher_base.MsgDispatcherBase
        if isinstance(base.__dict__.get("stopping"), _WakingStop):
            return True
        if "stopping" in base.__dict__ or not callable(getattr(base, "handle_ping", None)) \
                or not hasattr(CommandType, "Ping") or not callable(getattr(base, "run", None)):
            raise AttributeError("MsgDispatcherBase.stopping/handle_ping/run")
    except (ImportError, AttributeError) as exc:
        _logger.warning("a stop may wait up to 4 s for NNI's dispatcher: this NNI's dispatcher differs (%s)", exc)
        return False
    run = base.run

    def run_then_exit_promptly(self):
        run(self)
        if threading.current_thread() is threading.main_thread():
            atexit.register(_exit_without_teardown)  # the last registered: the first to run at exit

    base.stopping = _WakingStop()
    base.run = run_then_exit_promptly
    return True


def _exit_without_teardown() -> None:
    """At exit, end the process with its status (1 after an uncaught exception, else 0) without tearing down its
    modules: logs and stdio flushed, the exit handlers registered before this one skipped."""
    from .stopping import exit_now

    exit_now(1 if getattr(sys, "last_value", None) is not None else 0)


def error_line(text: str) -> str:
    """The one line that says what went wrong: the last ``error:`` line of a trial's stderr, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    marked = [line for line in lines if line.startswith("error:")]
    return (marked or lines or [""])[-1][:500]


def manager():
    """A REST client of this experiment's manager (from the dispatcher's ``NNI_TUNER_COMMAND_CHANNEL``), or None."""
    from .nni_rest import NNIClient

    url = os.environ.get("NNI_TUNER_COMMAND_CHANNEL", "")
    match = re.match(r"wss?://[^:/]+:(\d+)/(.*)tuner$", url)
    if not match:
        return None
    return NNIClient(int(match.group(1)), url_prefix=match.group(2).strip("/") or None, timeout=20.0)


def trial_error(parameter_id: int, client: Any = None) -> tuple[str, str, str] | None:
    """``(trial id, status, error line)`` of the trial NNI ran for ``parameter_id``, read through the REST API; the
    trial's own id and folder are replaced by ``<trial>`` so that the same error reads the same in every trial.
    None when the manager cannot tell."""
    from .nni_rest import NNIUnavailable, decode_metric

    client = client or manager()
    if client is None:
        return None
    try:
        for job in client.get("/trial-jobs"):
            forms = [decode_metric(h) for h in job.get("hyperParameters") or []]
            if any(isinstance(f, dict) and f.get("parameter_id") == parameter_id for f in forms):
                trial_id = job["trialJobId"]
                text = client.text(f"/trial-file/{trial_id}/stderr") if job.get("status") == "FAILED" else ""
                line = error_line(text)
                for own in filter(None, (job.get("logPath", "").split(":")[-1], trial_id)):
                    line = line.replace(own, "<trial>")
                return trial_id, job.get("status", ""), line
    except (NNIUnavailable, KeyError, TypeError, ValueError) as exc:
        _logger.warning("cannot read trial %s from NNI's manager: %s", parameter_id, exc)
    return None
