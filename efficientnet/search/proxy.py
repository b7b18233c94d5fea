"""Proxy training budgets: cheap early trials (a stratified data subset, fewer epochs), the best promoted to full.

The first ``proxy_trials`` proposals carry ``budget: "proxy"`` with ``subset`` and ``epochs`` (the trial script reads
both; ``subset`` is a stratified fraction of the training set). After that, every proposal is ``budget: "full"``
(``subset: 1.0``, and ``epochs: full_epochs`` when given); the ``promote_top`` best proxy architectures known at the
time are re-proposed first, explicitly, under the full budget. Results are kept per budget and never ranked against
each other: the full-budget search starts afresh and learns only from full-budget results.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..proposal import Budget
from .class_args import positive_int
from .ledger import Ledger, Record

__all__ = ["PROXY", "FULL", "ProxySchedule"]

PROXY, FULL = "proxy", "full"


@dataclass(frozen=True)
class ProxySchedule:
    """Which budget the next proposal gets, and which proxy architectures to promote (read from the tuner's
    :class:`~efficientnet.search.ledger.Ledger`)."""

    subset: float | None = None
    epochs: int | None = None
    trials: int = 0
    promote_top: int = 0
    full_epochs: int | None = None

    @classmethod
    def from_class_args(
        cls, subset: float | None, epochs: int | None, trials: int | None, promote_top: int | None,
        full_epochs: int | None,
    ) -> "ProxySchedule":
        if subset is None and epochs is None and not trials:
            if promote_top:
                raise ValueError("classArg promote_top needs proxy_trials and proxy_subset and/or proxy_epochs")
            return cls(full_epochs=None if full_epochs is None else positive_int("full_epochs", full_epochs))
        if subset is not None and (
            not isinstance(subset, (int, float)) or isinstance(subset, bool) or not 0 < subset <= 1
        ):
            raise ValueError(f"classArg proxy_subset must be a fraction in (0, 1], got {subset!r}")
        if epochs is not None:
            positive_int("proxy_epochs", epochs)
        if subset is None and epochs is None:
            raise ValueError("classArg proxy_trials needs proxy_subset and/or proxy_epochs")
        trials = positive_int("proxy_trials", trials)
        promote_top = positive_int("promote_top", 3 if promote_top is None else promote_top, 0)
        if promote_top > trials:
            raise ValueError(f"classArg promote_top ({promote_top}) cannot exceed proxy_trials ({trials})")
        return cls(
            None if subset is None else float(subset), epochs, trials, promote_top,
            None if full_epochs is None else positive_int("full_epochs", full_epochs),
        )

    @property
    def enabled(self) -> bool:
        return self.trials > 0

    def next_budget(self, ledger: Ledger) -> str:
        """The budget of the next new architecture."""
        return PROXY if self.enabled and ledger.proposed(PROXY) < self.trials else FULL

    def budget(self, name: str, continue_from: str | None = None) -> Budget | None:
        """The budget a proposal carries to the trial (None when proxy training is off, with no ``full_epochs`` and
        nothing to continue); ``continue_from``: the trial whose checkpoint it continues (a second chance)."""
        if not self.enabled:
            if continue_from is not None:  # named: Proposal.from_parameters reads continue_from as part of a budget
                return Budget(name, epochs=self.full_epochs, continue_from=continue_from)
            return None if self.full_epochs is None else Budget(None, epochs=self.full_epochs)
        if name == PROXY:
            return Budget(PROXY, 1.0 if self.subset is None else self.subset, self.epochs, continue_from=continue_from)
        return Budget(FULL, 1.0, self.full_epochs, continue_from=continue_from)

    def promotions(self, ledger: Ledger) -> list[Record]:
        """Proxy records to re-propose under the full budget now: the ``promote_top`` best proxy results known so
        far that have not been promoted yet (none while the proxy phase lasts)."""
        if not self.enabled or self.next_budget(ledger) == PROXY or not self.promote_top:
            return []
        ranked = sorted(ledger.heard(PROXY), key=lambda r: -r.score)[: self.promote_top]
        return [r for r in ranked if not r.promoted]
