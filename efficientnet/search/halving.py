"""Successive halving over epochs, asynchronous (ASHA, Li et al. 2018), with promotions that continue a checkpoint.

With ``min_epochs`` (and ``full_epochs``), every new candidate is trained ``min_epochs`` epochs first (rung 0). The
rungs grow by ``eta``: ``min_epochs``, ``min_epochs·eta``, ... up to ``full_epochs``, the last rung (budget
``full``). Whenever a trial slot is free, the best ``1/eta`` of a rung's results that have not been promoted yet are
proposed again at the next rung, highest rung first; otherwise a new candidate starts at rung 0. A promoted trial
continues the checkpoint of the trial that trained the candidate at the rung below (``continue_from``: its NNI trial
id), so a promotion costs only the epochs that trial did not train. Every rung trains on the full budget's
learning-rate schedule (``schedule_epochs``) and stops early, so a continued run is the same run as one trained to
that rung from the start (``docs/tuner.md`` has the measurement).

The strategy models full-budget results. A lower rung's result reaches it as a partial observation (a hint, see
:func:`rung_hint`) until the candidate has a full one: where it ranks among its rung, at the same rank among the
full-budget results, but never above their median (an early epoch ranks networks only roughly). Results of different
rungs are never ranked against each other; the final pick is always a full-budget result.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from ..proposal import Budget
from .class_args import positive_int
from .ledger import SCORED, Ledger, Record

__all__ = ["SuccessiveHalving", "rung_hint"]

FULL = "full"


@dataclass(frozen=True)
class SuccessiveHalving:
    """The rungs (epochs) and ``eta``; which record to promote next, read from the tuner's ledger."""

    rungs: tuple[int, ...] = ()
    eta: int = 3

    @classmethod
    def from_class_args(cls, min_epochs: int | None, eta: int | None, full_epochs: int | None) -> "SuccessiveHalving":
        """``min_epochs`` turns successive halving on; it needs ``full_epochs`` (the last rung)."""
        if min_epochs is None:
            if eta is not None:
                raise ValueError("classArg eta needs min_epochs and full_epochs (successive halving)")
            return cls()
        min_epochs = positive_int("min_epochs", min_epochs)
        eta = positive_int("eta", 3 if eta is None else eta, 2)
        if full_epochs is None:
            raise ValueError("classArg min_epochs needs full_epochs: the epochs of the full budget (the last rung)")
        full_epochs = positive_int("full_epochs", full_epochs)
        if min_epochs >= full_epochs:
            raise ValueError(f"classArg min_epochs ({min_epochs}) must be below full_epochs ({full_epochs})")
        rungs = [min_epochs]
        while rungs[-1] * eta < full_epochs:
            rungs.append(rungs[-1] * eta)
        return cls((*rungs, full_epochs), eta)

    @property
    def enabled(self) -> bool:
        return bool(self.rungs)

    @property
    def first(self) -> str:
        """The budget of a new candidate."""
        return self.name(0)

    def name(self, rung: int) -> str:
        """``rung0``, ``rung1``, ... and ``full`` for the last rung."""
        return FULL if rung == len(self.rungs) - 1 else f"rung{rung}"

    def rung(self, name: str) -> int | None:
        """The rung of a budget name (None: not one of these rungs)."""
        for k in range(len(self.rungs)):
            if self.name(k) == name:
                return k
        return None

    def budget(self, name: str, continue_from: str | None = None) -> Budget:
        """What a trial at budget ``name`` is given (``continue_from``: the trial whose checkpoint it continues)."""
        k = self.rung(name)
        assert k is not None, name
        return Budget(name, 1.0, self.rungs[k], self.rungs[-1], continue_from)

    def promotion(self, ledger: Ledger, top_only: bool = True) -> tuple[Record, str] | None:
        """The next (record, budget to promote it to): the best not yet promoted among the top ``1/eta`` of a rung's
        results (any of them when not ``top_only``: the search space is used up), highest rung first; None when no
        rung has one."""
        for k in range(len(self.rungs) - 2, -1, -1):
            name = self.name(k)
            done = sorted((r for r in ledger.heard(name) if r.state == SCORED), key=lambda r: -r.score)
            for record in done[: len(done) // self.eta] if top_only else done:
                if not record.promoted:
                    return record, self.name(k + 1)
        return None

    def mark_promoted(self, ledger: Ledger, record: Record) -> None:
        """``record`` (an imported result) is a promotion: its record at the rung below was promoted."""
        k = self.rung(record.budget)
        below = ledger.records.get((record.candidate, self.name(k - 1))) if k else None
        if below is not None:
            below.promoted = True


def rung_hint(score: float, rung_scores: list[float], full_scores: list[float]) -> float | None:
    """A lower rung's ``score`` on the full budget's scale: its quantile among ``rung_scores`` (its rung's results)
    taken among ``full_scores``, capped at their median; None before any full-budget result."""
    if not full_scores or not rung_scores:
        return None
    below = sum(s < score for s in rung_scores) + 0.5 * sum(s == score for s in rung_scores)
    q = below / len(rung_scores)
    full = sorted(full_scores)
    value = full[min(len(full) - 1, int(q * len(full)))]
    return float(min(value, statistics.median(full)))
