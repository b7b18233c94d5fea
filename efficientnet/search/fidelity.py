"""Results of trials that an assessor stopped early: how to tell them apart, and what they are worth.

When an assessor (NNI's Medianstop, or :class:`~efficientnet.search.assessor.CurveAssessor`) stops a trial and
the dispatcher's ``NNI_INCLUDE_INTERMEDIATE_RESULTS`` is ``true``, NNI's dispatcher hands the trial's *last
intermediate result* to the tuner's ``receive_trial_result`` as if it were final, then ends the trial as not
successful. NNI 1.x set it from the config's ``includeIntermediateResults``; NNI 3.0's experiment config has no such
field, so without help the tuner only hears that the trial did not succeed.
:func:`efficientnet.nni_dispatcher.hear_stopped_trials`, called by the tuner inside NNI's dispatcher process, turns
NNI's own hand-over on. This project's trial reports intermediate results as ``{"default", "loss", "top5", "f1",
"epoch"}`` and final results with more keys (``epochs``, ``best_epoch``, ``arch``, ``budget``, ``params``, ``macs``),
so the two can be told apart by shape; ``epoch`` says how far the stopped trial's checkpoint got, which is what a
second chance, continuing it, does not train again (:func:`partial_epoch`).

Such a result is a lower-fidelity observation of a candidate that was judged weak: not a failure (it says something
about the candidate), and not a full-budget result either (an accuracy after a few epochs, next to final ones). Its
score is therefore moved into ``[lowest, median]`` of the full-budget scores known at the time: the assessor stopped
it for trailing the others, so it cannot outrank a completed trial's median, and a low early-epoch accuracy does not
make it the worst architecture ever seen.
"""

from __future__ import annotations

import json
import statistics
from typing import Any, Iterable, Mapping

__all__ = ["FINAL_ONLY_KEYS", "INTERMEDIATE_KEYS", "is_partial_result", "partial_epoch", "partial_score",
           "result_mapping"]

FINAL_ONLY_KEYS = frozenset({"epochs", "best_epoch", "arch", "budget", "params", "macs", "subset"})
INTERMEDIATE_KEYS = frozenset({"loss", "top5", "f1"})


def result_mapping(value: Any) -> Mapping[str, Any] | None:
    """A result as NNI hands it to the tuner (a dict, its JSON, or a bare number): the dict, or None."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, Mapping) else None


def is_partial_result(value: Any) -> bool:
    """Whether a result handed over as final has the shape of an intermediate one (see the module docstring): a
    dict (or its JSON) with ``loss``, ``top5`` or ``f1`` and none of the keys only a final result has. A bare
    number or ``{"default": x}`` counts as final."""
    result = result_mapping(value)
    keys = set(result) if result is not None else set()
    return bool(keys & INTERMEDIATE_KEYS) and not keys & FINAL_ONLY_KEYS


def partial_epoch(value: Any) -> int | None:
    """The epoch a partial result was reported at (the trial's per-epoch ``epoch``); None when it does not say
    (a trial of an older version of this project, or a result of another shape)."""
    result = result_mapping(value)
    epoch = result.get("epoch") if result is not None else None
    return int(epoch) if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) and epoch >= 1 else None


def partial_score(score: float, full_scores: Iterable[float]) -> float:
    """``score`` moved into ``[min, median]`` of ``full_scores`` (unchanged while there are none)."""
    full = list(full_scores)
    if not full:
        return float(score)
    return float(min(max(score, min(full)), statistics.median(full)))
