"""The tuner's one record of what it proposed and what it heard: a :class:`Record` per (candidate, training budget).

A candidate is *known* once it has a record under any budget (proposed, imported, or found over budget), and is
never proposed again, except once more after an assessor stopped its trial (a second chance). Nor is its *twin*, a
candidate whose coefficients differ only below the rounding of repeats and channels, so that it builds the same
network (see :func:`~efficientnet.builder.network_key`): training it would repeat a trial. Scores are what the
strategies rank (higher is better). Results of the two budgets of proxy training are never mixed: each record
belongs to one budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterator

from ..proposal import Proposal
from .candidates import Candidate

__all__ = ["PROPOSED", "SCORED", "PARTIAL", "FAILED", "OVER_BUDGET", "Record", "Ledger"]

PROPOSED, SCORED, PARTIAL, FAILED, OVER_BUDGET = "proposed", "scored", "partial", "failed", "over budget"


@dataclass
class Record:
    """What the tuner knows of one candidate under one training budget."""

    candidate: Candidate
    budget: str
    state: str = PROPOSED  # proposed, scored, partial (stopped early), failed, over budget
    score: float | None = None  # the score the strategy ranks (for a partial result: capped, see fidelity)
    raw: float | None = None  # a partial result's own score, before capping
    promoted: bool = False  # proposed again under a higher budget (proxy -> full, or the next rung)
    second_chance: str = ""  # "" | "granted": may be proposed once more | "used"
    trial: str | None = None  # NNI's id of the trial whose result this is (promotions and second chances continue it)
    stopped_at: int | None = None  # a partial result's epoch: where a second chance continues the stopped trial

    @property
    def heard(self) -> bool:
        """A score the strategy may rank: a full result, or a partial one."""
        return self.state in (SCORED, PARTIAL)


class Ledger:
    """Every record, and the trials in flight (NNI's parameter ids) with the proposal each was given."""

    def __init__(self) -> None:
        self.records: dict[tuple[Candidate, str], Record] = {}
        self.trials: dict[int, tuple[Candidate, str]] = {}  # parameter id -> its record's key
        self.proposals: dict[int, Proposal] = {}  # parameter id -> what the trial was given
        self.running: set[int] = set()  # parameter ids proposed and not ended yet
        self.costs: dict[Candidate, tuple[float, ...]] = {}  # observed cost objectives (multi-objective search)
        self.ms_per_mac: list[float] = []  # observed latency per closed-form MAC
        self._known: set[Candidate] = set()  # kept beside the records: strategies ask about thousands at a time
        self._granted: set[Candidate] = set()
        self._networks: dict[Hashable, Candidate] = {}  # what a proposed or imported candidate builds -> it

    # ------------------------------------------------------------------------------------------ writing
    def record(self, candidate: Candidate, budget: str) -> Record:
        """The record of (candidate, budget), made when it is new."""
        key = (candidate, budget)
        if key not in self.records:
            self.records[key] = Record(candidate, budget)
            self._known.add(candidate)
        return self.records[key]

    def builds(self, candidate: Candidate, network: Hashable) -> None:
        """``candidate``, proposed or imported, builds ``network``: from now on its twins are not proposed."""
        self._networks.setdefault(network, candidate)

    def grant_second_chance(self, record: Record) -> None:
        """Let ``record``'s candidate be proposed once more (its trial was stopped early)."""
        record.second_chance = "granted"
        self._granted.add(record.candidate)

    def spend_second_chance(self, candidate: Candidate) -> Record:
        """The candidate's second chance is taken (it is proposed again now, or found over budget); the record of
        its stopped trial, which holds that trial's id and hyperparameters."""
        self._granted.discard(candidate)
        stopped = []
        for record in self.records.values():
            if record.candidate == candidate and record.second_chance == "granted":
                record.second_chance = "used"
                stopped.append(record)
        return stopped[0]

    def propose(self, parameter_id: int, candidate: Candidate, budget: str, proposal: Proposal) -> Record:
        """A trial is given ``proposal``."""
        record = self.record(candidate, budget)
        self.trials[parameter_id] = (candidate, budget)
        self.proposals[parameter_id] = proposal
        self.running.add(parameter_id)
        return record

    # ------------------------------------------------------------------------------------------ reading
    def of_trial(self, parameter_id: int | None) -> Record | None:
        """The record of the trial NNI knows as ``parameter_id`` (None: not proposed by this tuner)."""
        key = self.trials.get(parameter_id) if parameter_id is not None else None
        return self.records.get(key) if key is not None else None

    def known(self, candidate: Candidate) -> bool:
        """Proposed, imported or over budget, under any budget."""
        return candidate in self._known

    def has_twin(self, candidate: Candidate, network: Hashable) -> bool:
        """Whether another candidate, proposed or imported, builds ``network`` (what ``candidate`` builds)."""
        other = self._networks.get(network)
        return other is not None and other != candidate

    def free_again(self, candidate: Candidate) -> bool:
        """Granted a second chance that has not been used yet."""
        return candidate in self._granted

    def second_chances(self) -> int:
        """Second chances granted and not used yet."""
        return len(self._granted)

    def granted(self) -> Iterator[Record]:
        """The records of stopped trials whose second chance is granted and not used yet."""
        return (r for r in self.records.values() if r.second_chance == "granted")

    def candidates(self) -> int:
        """How many candidates are known."""
        return len(self._known)

    def heard(self, budget: str) -> Iterator[Record]:
        """The records of ``budget`` with a score (full or partial)."""
        return (r for r in self.records.values() if r.budget == budget and r.heard)

    def full_scores(self, budget: str) -> list[float]:
        """The scores of ``budget``'s completed trials (what a partial result is capped against)."""
        return [r.score for r in self.records.values() if r.budget == budget and r.state == SCORED]

    def proposed(self, budget: str) -> int:
        """How many candidates were proposed (or imported) under ``budget``."""
        return sum(r.budget == budget and r.state != OVER_BUDGET for r in self.records.values())
