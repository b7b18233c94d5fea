"""Read an NNI experiment from NNI's own database, read-only: ``<experiments dir>/<ID>/db/nni.sqlite``.

A stopped experiment has no REST server, but NNI keeps every trial event and metric in this SQLite file: the
tables ``TrialJobEvent`` (a row per status change: ``WAITING``, ``RUNNING``, then ``SUCCEEDED``, ``FAILED``,
``EARLY_STOPPED``, ``USER_CANCELED`` ...; the parameters travel with the first event) and ``MetricData``
(``PERIODICAL`` intermediate and ``FINAL`` results, JSON-encoded as the REST API serves them). The file is opened
in SQLite's read-only mode, so reading it never changes an experiment, running or not.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .nni_rest import Trial, decode_metric

__all__ = ["NNIDatabaseError", "DEFAULT_EXPERIMENTS_DIR", "experiment_db", "nnictl_record", "read_trials"]

DEFAULT_EXPERIMENTS_DIR = Path.home() / "nni-experiments"


class NNIDatabaseError(RuntimeError):
    """The database is missing or unreadable; the message names the path and the fix."""


def nnictl_record(experiment_id: str) -> dict:
    """What nnictl recorded for ``experiment_id`` (its REST ``port``, its ``logDir``, ...); ``{}`` when nnictl has no
    record of it, or its record file is missing or damaged."""
    try:
        from nni.tools.nnictl.config_utils import Experiments

        return dict(Experiments().get_all_experiments().get(experiment_id) or {})
    except Exception:  # the record file missing or damaged: callers fall back to their defaults
        return {}


def experiment_db(experiment_id: str, experiments_dir: str | Path | None = None) -> Path:
    """The database of ``experiment_id``: under ``experiments_dir``, else the folder nnictl recorded for it (the
    config's ``experimentWorkingDirectory``), else ``~/nni-experiments``."""
    if experiments_dir is None:
        experiments_dir = nnictl_record(experiment_id).get("logDir") or DEFAULT_EXPERIMENTS_DIR
    return Path(experiments_dir).expanduser() / experiment_id / "db" / "nni.sqlite"


def _connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise NNIDatabaseError(f"no NNI database at {path}; check the experiment ID, or pass --experiments-dir "
                               "(the experimentWorkingDirectory of its config)")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        con.execute("select count(*) from TrialJobEvent").fetchone()
        return con
    except sqlite3.Error as exc:
        raise NNIDatabaseError(f"cannot read the NNI database {path} ({exc}); is it an NNI experiment folder?") \
            from None


def read_trials(path: str | Path) -> list[Trial]:
    """Every trial of the experiment in the database at ``path``, in order of submission: status (its last
    event), parameters, final and intermediate results, log path."""
    con = _connect(Path(path))
    try:
        trials: dict[str, Trial] = {}
        order: dict[str, tuple[int, int]] = {}
        events = con.execute("select timestamp, trialJobId, event, data, logPath, sequenceId from TrialJobEvent "
                             "order by timestamp, rowid")
        for timestamp, trial_id, event, data, log_path, sequence in events:
            trial = trials.get(trial_id)
            if trial is None:
                trial = trials[trial_id] = Trial(trial_id, event, {}, None)
                order[trial_id] = (sequence if sequence is not None else 1 << 30, timestamp)
            trial.status = event
            trial.log_path = log_path or trial.log_path
            if data and not trial.parameters:
                try:
                    form = json.loads(data)
                except json.JSONDecodeError:
                    form = {}
                if isinstance(form, dict):
                    params = form.get("parameters")
                    trial.parameters = params if isinstance(params, dict) else {}
                    trial.parameter_id = form.get("parameter_id")
        metrics = con.execute("select trialJobId, type, sequence, data from MetricData order by timestamp, rowid")
        for trial_id, kind, _sequence, data in metrics:
            trial = trials.get(trial_id)
            if trial is None:
                continue
            value = decode_metric(data)
            if kind == "FINAL":
                trial.final = value
            elif kind == "PERIODICAL":
                trial.intermediate.append(value)
        return sorted(trials.values(), key=lambda t: order[t.id])
    finally:
        con.close()
