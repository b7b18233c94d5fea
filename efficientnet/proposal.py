"""The proposal: what the tuner asks one trial to train. The tuner (with its candidate space and proxy schedule)
writes it; the trial, its final result, the report and the tuner's result handling read it.

NNI carries it as a flat dict, so the WebUI shows it as a table. :meth:`Proposal.to_parameters` writes that dict
and :meth:`Proposal.from_parameters` reads any dict NNI hands a trial: this tuner's, the legacy tuner's
coefficients-only one, or a plain hyperparameter search's::

    {"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "phi": 1.0,          # compound coefficients (the legacy keys)
     "stage3_kernel": 5, "stage3_expand": 4, "stage3_se": 1, "stage3_repeats": 1,   # block choices, 1-based
     "arch": "act=swish,stem=scaled,w=...,r=.../ir_r1_k3_...",     # the full ArchSpec: authoritative when present
     "params": 5288548, "macs": 385859952, ...                     # profiled costs, for display and the report
     "lr": 0.01, "batch_size": 32,                                  # training hyperparameters, passed through
     "budget": "proxy", "subset": 0.3, "epochs": 1}                 # the training budget (proxy training only)
    # successive halving: {"budget": "rung0", "epochs": 1, "schedule_epochs": 4, "continue_from": "<trial id>"}

A trial builds its architecture with :meth:`Proposal.spec_on`: the ``arch`` when given, otherwise the coefficients
and block choices applied to the trial's base architecture (what the legacy tuner, which sent only alpha, beta and
gamma, relies on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .spec import ArchSpec, SpecError, StageChoice

__all__ = [
    "STAGE_KEY",
    "COEFFICIENT_KEYS",
    "COST_KEYS",
    "PROFILE_KEYS",
    "Budget",
    "Proposal",
    "stage_choices_from_parameters",
]

STAGE_KEY = re.compile(r"^stage(\d+)_(kernel|expand|se|repeats)$")
COEFFICIENT_KEYS = ("alpha", "beta", "gamma", "phi")
COST_KEYS = ("params", "macs", "model_size_mb", "peak_memory_mb", "latency_ms", "predicted_latency_ms")
PROFILE_KEYS = ("arch", *COST_KEYS, "budget")  # written by the tuner: a search space may not name them
_CHOICE_FIELD = {"kernel": "kernel", "expand": "expand", "se": "se", "repeats": "repeats_delta"}


def stage_choices_from_parameters(params: Mapping[str, Any]) -> dict[int, StageChoice]:
    """``stageN_kernel/expand/se/repeats`` keys -> ``{N - 1: StageChoice}``."""
    fields: dict[int, dict[str, Any]] = {}
    for key, value in params.items():
        m = STAGE_KEY.match(key)
        if not m:
            continue
        stage = int(m.group(1)) - 1
        if stage < 0:
            raise SpecError(f"stage numbers start at 1, got {key!r}")
        name = _CHOICE_FIELD[m.group(2)]
        fields.setdefault(stage, {})[name] = bool(int(value)) if name == "se" else int(value)
    return {stage: StageChoice(**kw) for stage, kw in sorted(fields.items())}


@dataclass(frozen=True)
class Budget:
    """How much training a proposal gets: ``name`` (``proxy`` or ``full`` for proxy training, ``rungN`` below
    ``full`` for successive halving; None when only ``epochs`` is set), the training ``subset`` fraction and the
    ``epochs`` (None: the trial's own flags). Successive halving adds ``schedule_epochs`` (every rung trains on the
    full budget's learning-rate schedule and stops early) and, on a promotion, ``continue_from``: the trial id whose
    checkpoint the trial continues, so it trains only the epochs that one did not."""

    name: str | None
    subset: float | None = None
    epochs: int | None = None
    schedule_epochs: int | None = None
    continue_from: str | None = None

    KEYS = ("subset", "epochs", "schedule_epochs", "continue_from")

    def to_parameters(self) -> dict[str, Any]:
        """The proposal keys of this budget."""
        out: dict[str, Any] = {} if self.name is None else {"budget": self.name}
        out.update({k: getattr(self, k) for k in self.KEYS if getattr(self, k) is not None})
        return out


@dataclass(frozen=True)
class Proposal:
    """One trial's assignment. Every field is optional: a legacy proposal has coefficients only, a plain
    hyperparameter search only ``hyper``."""

    coefficients: Mapping[str, float] = field(default_factory=dict)  # alpha, beta, gamma, phi
    choices: Mapping[str, int] = field(default_factory=dict)  # stageN_field -> value, as in the search space
    spec: ArchSpec | None = None  # the whole architecture (authoritative)
    costs: Mapping[str, float] = field(default_factory=dict)  # params, macs, model_size_mb, peak_memory_mb, ...
    hyper: Mapping[str, Any] = field(default_factory=dict)  # training hyperparameters, by the search space's names
    budget: Budget | None = None

    # ------------------------------------------------------------------------------------------ the wire format
    def to_parameters(self) -> dict[str, Any]:
        """The flat dict NNI carries (see the module docstring)."""
        out: dict[str, Any] = dict(self.coefficients)
        out.update(self.choices)
        if self.spec is not None:
            out["arch"] = str(self.spec)
        out.update(self.costs)
        out.update(self.hyper)
        if self.budget is not None:
            out.update(self.budget.to_parameters())
        return out

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any] | None) -> "Proposal":
        """Read the dict NNI hands a trial (``{}`` or None: an empty proposal). ``arch`` is parsed here, so a
        damaged one is a :class:`SpecError` at once."""
        params = dict(params or {})
        budget = None
        if "budget" in params:
            budget = Budget(str(params.pop("budget")), *(params.pop(k, None) for k in Budget.KEYS))
        arch = params.pop("arch", None)
        coefficients = {k: params.pop(k) for k in COEFFICIENT_KEYS if k in params}
        choices = {k: params.pop(k) for k in list(params) if STAGE_KEY.match(k)}
        costs = {k: params.pop(k) for k in COST_KEYS if k in params}
        return cls(coefficients, choices, ArchSpec.parse(str(arch)) if arch else None, costs, params, budget)

    # ------------------------------------------------------------------------------------------ readings
    @property
    def empty(self) -> bool:
        """No proposal at all (a hand run, or NNI sent nothing)."""
        return not (self.coefficients or self.choices or self.spec or self.costs or self.hyper or self.budget)

    @property
    def names_architecture(self) -> bool:
        """Whether the proposal decides the architecture (an ``arch``, or compound coefficients)."""
        return self.spec is not None or any(k in self.coefficients for k in COEFFICIENT_KEYS[:3])

    @property
    def budget_name(self) -> str:
        """``proxy`` or ``full`` (a proposal without a budget is a full one)."""
        return self.budget.name if self.budget is not None and self.budget.name else "full"

    def training(self) -> dict[str, Any]:
        """The settings the trial takes from the proposal, by name: the hyperparameters, then the budget's
        ``subset``, ``epochs``, ``schedule_epochs`` and ``continue_from``."""
        out = dict(self.hyper)
        if self.budget is not None:
            out.update({k: v for k, v in self.budget.to_parameters().items() if k != "budget"})
        return out

    def stage_choices(self) -> dict[int, StageChoice]:
        """The block choices as ``{stage index: StageChoice}``."""
        return stage_choices_from_parameters(self.choices)

    def spec_on(self, base: ArchSpec, base_resolution: int | None = None) -> ArchSpec:
        """The architecture to train: ``spec`` when the proposal has one; otherwise ``base`` scaled by the
        coefficients (at ``base_resolution``) with the block choices applied."""
        if self.spec is not None:
            return self.spec
        spec = base
        if any(k in self.coefficients for k in COEFFICIENT_KEYS[:3]):
            c = self.coefficients
            spec = ArchSpec.from_compound(float(c.get("alpha", 1.0)), float(c.get("beta", 1.0)),
                                          float(c.get("gamma", 1.0)), float(c.get("phi", 1.0)), base=base,
                                          base_resolution=base_resolution)
        elif base_resolution is not None:
            spec = spec.replace(resolution=base_resolution)
        choices = self.stage_choices()
        return spec.with_stage_choices(choices) if choices else spec
