"""Proxy training budgets: cheap early trials (a stratified data subset, fewer epochs), the best promoted to full.

The first ``proxy_trials`` proposals carry ``budget: "proxy"`` with ``subset`` and ``epochs`` (the trial script reads
both; ``subset`` is a stratified fraction of the training set). After that, every proposal is ``budget: "full"``
(``subset: 1.0``, and ``epochs: full_epochs`` when given); the ``promote_top`` best proxy architectures known at the
time are re-proposed first, explicitly, under the full budget. Results are kept per budget and never ranked against
each other: the full-budget search starts afresh and learns only from full-budget results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..proposal import Budget
from .candidates import Candidate
from .class_args import positive_int

__all__ = ["PROXY", "FULL", "ProxySchedule"]

PROXY, FULL = "proxy", "full"


@dataclass
class ProxySchedule:
    """Which budget the next proposal gets, and the per-budget results that decide promotions."""

    subset: float | None = None
    epochs: int | None = None
    trials: int = 0
    promote_top: int = 0
    full_epochs: int | None = None
    proposed_proxy: int = 0
    results: dict[str, dict[Candidate, float]] = field(default_factory=lambda: {PROXY: {}, FULL: {}})
    promoted: set[Candidate] = field(default_factory=set)
    failed: set[tuple[Candidate, str]] = field(default_factory=set)

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

    def next_budget(self) -> str:
        """The budget of the next new architecture."""
        return PROXY if self.enabled and self.proposed_proxy < self.trials else FULL

    def budget(self, name: str) -> Budget | None:
        """The budget a proposal carries to the trial (None when proxy training is off and no ``full_epochs``)."""
        if not self.enabled:
            return None if self.full_epochs is None else Budget(None, epochs=self.full_epochs)
        if name == PROXY:
            return Budget(PROXY, 1.0 if self.subset is None else self.subset, self.epochs)
        return Budget(FULL, 1.0, self.full_epochs)

    def record(self, candidate: Candidate, budget: str, score: float | None) -> None:
        """A result (None: the trial failed; its result, if any, is dropped)."""
        if score is None:
            self.failed.add((candidate, budget))
            self.results[budget].pop(candidate, None)
        elif (candidate, budget) not in self.failed:
            self.results[budget][candidate] = score

    def promotions(self) -> list[Candidate]:
        """Proxy architectures to re-propose under the full budget now: the ``promote_top`` best proxy results known
        so far that have not been promoted yet (empty while the proxy phase lasts)."""
        if not self.enabled or self.next_budget() == PROXY or not self.promote_top:
            return []
        ranked = sorted(self.results[PROXY].items(), key=lambda kv: -kv[1])[: self.promote_top]
        return [c for c, _ in ranked if c not in self.promoted]
