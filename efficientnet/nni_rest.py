"""A small client for a running NNI experiment's REST API (``http://HOST:PORT/api/v1/nni``): it reads, and can
cancel a trial as the WebUI does.

NNI stores metric data JSON-encoded twice (the trial reports a JSON string, which the manager stores as a JSON
string again); :func:`decode_metric` undoes both. Used by the end-to-end tests and the ``report`` command.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["NNIClient", "Trial", "decode_metric", "NNIUnavailable"]


class NNIUnavailable(RuntimeError):
    """The experiment's REST server did not answer."""


def decode_metric(data: Any) -> Any:
    """A metric value as the trial reported it: a number or a dict (``{"default": ...}``)."""
    while isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            return data
    return data


@dataclass
class Trial:
    """One trial job as the WebUI shows it."""

    id: str
    status: str
    parameters: dict[str, Any]
    parameter_id: int | None
    final: Any = None
    intermediate: list[Any] = field(default_factory=list)
    log_path: str | None = None

    @property
    def folder(self) -> Path | None:
        """The trial's folder, from NNI's ``logPath`` (``file://localhost:/path`` for a local trial)."""
        return Path(self.log_path.split(":")[-1]) if self.log_path else None

    @property
    def default(self) -> float | None:
        """The trial's final ``default`` metric, if it reported one."""
        if isinstance(self.final, dict):
            return self.final.get("default")
        return self.final if isinstance(self.final, (int, float)) else None


class NNIClient:
    """Read an experiment's status, trials and metrics over HTTP."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0, url_prefix: str | None = None) -> None:
        prefix = f"/{url_prefix.strip('/')}" if url_prefix and url_prefix.strip("/") else ""
        self.base = f"http://{host}:{port}{prefix}/api/v1/nni"
        self.timeout = timeout

    def get(self, path: str) -> Any:
        """GET ``path`` (relative to the API root) and decode the JSON answer."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode())
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise NNIUnavailable(f"no answer from {self.base}{path}: {exc}") from None
        except json.JSONDecodeError:
            raise NNIUnavailable(f"{self.base}{path} did not answer with JSON: is an NNI experiment on that port?") from None

    def text(self, path: str) -> str:
        """GET ``path`` (relative to the API root) as text (a trial's log files)."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=self.timeout) as resp:
                return resp.read().decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise NNIUnavailable(f"no answer from {self.base}{path}: {exc}") from None

    def cancel(self, trial_id: str) -> None:
        """Cancel one trial, as the WebUI's kill button does (``DELETE /trial-jobs/ID``)."""
        request = urllib.request.Request(f"{self.base}/trial-jobs/{trial_id}", method="DELETE")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                resp.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise NNIUnavailable(f"no answer from {self.base}/trial-jobs/{trial_id}: {exc}") from None

    def status(self) -> str:
        """The experiment status: RUNNING, DONE, NO_MORE_TRIAL, STOPPED, ERROR, ..."""
        return self.get("/check-status")["status"]

    def profile(self) -> dict[str, Any]:
        """The experiment profile (id, params incl. the config, execDuration, ...)."""
        return self.get("/experiment")

    def trials(self) -> list[Trial]:
        """Every trial with its parameters, final result and intermediate results, in submission order."""
        intermediate: dict[str, list[Any]] = {}
        for m in self.get("/metric-data"):
            if m.get("type") == "PERIODICAL":
                intermediate.setdefault(m["trialJobId"], []).append((m.get("sequence", 0), decode_metric(m["data"])))
        out = []
        for job in self.get("/trial-jobs"):
            params: dict[str, Any] = {}
            pid = None
            if job.get("hyperParameters"):
                hp = decode_metric(job["hyperParameters"][-1])
                params, pid = hp.get("parameters", {}), hp.get("parameter_id")
            finals = [decode_metric(m["data"]) for m in job.get("finalMetricData", [])]
            out.append(
                Trial(
                    id=job["trialJobId"],
                    status=job["status"],
                    parameters=params,
                    parameter_id=pid,
                    final=finals[-1] if finals else None,
                    intermediate=[v for _, v in sorted(intermediate.get(job["trialJobId"], []), key=lambda t: t[0])],
                    log_path=job.get("logPath"),
                )
            )
        return sorted(out, key=lambda t: (t.parameter_id is None, t.parameter_id or 0))

    def wait(self, predicate: Callable[["NNIClient"], bool], timeout: float, interval: float = 2.0) -> bool:
        """Poll until ``predicate(self)`` is true or ``timeout`` seconds pass; True when it became true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate(self):
                    return True
            except NNIUnavailable:
                pass
            time.sleep(interval)
        return False
