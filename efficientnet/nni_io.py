"""The trial's side of NNI: whether NNI started this process, the proposal it hands over, the metrics sent back.

By hand (no ``NNI_TRIAL_JOB_ID``) nothing here talks to NNI. ``nni`` is imported only when it is used, so the ranks
of a torchrun trial other than rank 0 never import it.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

from .proposal import Proposal

__all__ = ["under_nni", "output_dir", "get_proposal", "report"]

log = logging.getLogger("efficientnet.trial")


def under_nni() -> bool:
    """True when NNI launched this process: it sets ``NNI_TRIAL_JOB_ID`` (``STANDALONE`` by hand)."""
    return (os.environ.get("NNI_TRIAL_JOB_ID") or "STANDALONE") != "STANDALONE"


def output_dir() -> Path | None:
    """NNI's folder for this trial's outputs (``$NNI_OUTPUT_DIR``); None by hand."""
    folder = os.environ.get("NNI_OUTPUT_DIR") if under_nni() else None
    return Path(folder) if folder else None


def get_proposal(request: bool = False) -> Proposal:
    """The tuner's proposal under NNI (or by hand with ``request``, the legacy ``--request-from-nni``, which
    standalone NNI answers with nothing); an empty proposal by hand."""
    if not (under_nni() or request):
        return Proposal()
    import nni

    with warnings.catch_warnings():  # standalone NNI warns that no tuner is running: the flags apply then
        warnings.simplefilter("ignore", RuntimeWarning)
        params = nni.get_next_parameter()
    return Proposal.from_parameters(params)


def report(metrics: Mapping[str, Any], final: bool = False) -> None:
    """``nni.report_intermediate_result`` / ``report_final_result`` under NNI; nothing by hand.

    When NNI no longer answers (``nnictl stop`` closes the channel before it stops the trials), the result is
    already in the checkpoint and ``result.json``: say so in one line and go on, until the stop signal comes.
    """
    if not under_nni():
        return
    import nni

    try:
        (nni.report_final_result if final else nni.report_intermediate_result)(dict(metrics))
    except OSError as exc:  # requests' connection errors are OSErrors
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        log.warning("warning: NNI did not take the %s result (%s); it is kept in the output folder",
                    "final" if final else "epoch's", first)
