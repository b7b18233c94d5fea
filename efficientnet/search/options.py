"""The tuner's classArgs, read and checked once: :class:`TunerOptions`. A wrong one is a ``ValueError`` whose one
line names the classArg (an unknown one, the closest known one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..spec import ArchSpec, SpecError, resolve_arch
from .budgets import Budgets
from .candidates import CandidateSpace
from .class_args import boolean, class_arg_names, positive_int, unknown_class_args
from .constraint import DEFAULT_PRODUCT, DEFAULT_TOLERANCE, CompoundConstraint
from .pareto import MultiObjective
from .halving import SuccessiveHalving
from .proxy import ProxySchedule
from .space import parse_search_space
from .strategy_table import STRATEGIES

__all__ = ["TunerOptions"]


@dataclass(frozen=True)
class TunerOptions:
    """Every setting of the tuner (see ``tuner.EfficientNetTuner`` for what each classArg means)."""

    constraint: CompoundConstraint
    phi: float
    strategy: str
    strategy_options: Mapping[str, Any]  # what the strategy is built with (population_size, n_init, ...)
    maximize: bool
    base: ArchSpec
    base_resolution: int | None
    num_classes: int
    objectives: MultiObjective
    proxy: ProxySchedule
    halving: SuccessiveHalving
    startup_s: float  # a trial's fixed start-up, for the cost of a proposal
    cost_aware: bool  # bo weighs expected improvement against predicted seconds
    budgets: Budgets
    seed: int
    learn_from_stopped: bool
    stop_after_failures: int  # 0: never

    @classmethod
    def from_class_args(cls, **class_args: Any) -> "TunerOptions":
        """Read classArgs (NNI passes them as keyword arguments); see :meth:`read` for the names and defaults."""
        known = class_arg_names(cls.read)
        unknown = [k for k in class_args if k not in known]
        if unknown:
            raise ValueError(unknown_class_args(unknown, known, "the tuner"))
        return cls.read(**class_args)

    @classmethod
    def read(
        cls,
        product: float = DEFAULT_PRODUCT,
        tolerance: float = DEFAULT_TOLERANCE,
        phi: float = 1.0,
        strategy: str = "bo",
        n_init: int | None = None,
        population_size: int = 20,
        sample_size: int = 5,
        seed: int | None = None,
        optimize_mode: str = "maximize",
        base: str = "lite0",
        base_resolution: int | None = None,
        num_classes: int = 1000,
        max_params: float | None = None,
        max_macs: float | None = None,
        max_model_size_mb: float | None = None,
        max_peak_memory_mb: float | None = None,
        max_latency_ms: float | None = None,
        latency_table: str | None = None,
        pool_size: int = 200,
        explore: float = 0.2,
        warmup: int | None = None,
        objectives: list[str] | None = None,
        multi_objective: str | None = None,
        target_latency_ms: float | None = None,
        target_macs: float | None = None,
        reward_exponent: float = -0.07,
        proxy_subset: float | None = None,
        proxy_epochs: int | None = None,
        proxy_trials: int | None = None,
        promote_top: int | None = None,
        full_epochs: int | None = None,
        min_epochs: int | None = None,
        eta: int | None = None,
        startup_s: float = 5.0,
        cost_aware: bool = True,
        learn_from_stopped: bool = True,
        stop_after_failures: int | None = 3,
    ) -> "TunerOptions":
        """The classArgs with their defaults, checked."""
        if not isinstance(phi, (int, float)) or phi < 0:
            raise ValueError(f"classArg phi must be a number >= 0, got {phi!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"classArg strategy {strategy!r} is unknown: use one of {', '.join(STRATEGIES)}")
        if optimize_mode not in ("maximize", "minimize"):
            raise ValueError(f"classArg optimize_mode must be 'maximize' or 'minimize', got {optimize_mode!r}")
        try:
            base_spec = resolve_arch(str(base))
        except SpecError as exc:
            raise ValueError(f"classArg base: {exc} (use lite0 or b0 to match the pretrained weights)") from None
        if base_resolution is not None and (not isinstance(base_resolution, int) or base_resolution < 16):
            raise ValueError(f"classArg base_resolution must be an integer >= 16 or null, got {base_resolution!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"classArg num_classes must be a positive integer, got {num_classes!r}")
        boolean("cost_aware", cost_aware)
        if not isinstance(startup_s, (int, float)) or isinstance(startup_s, bool) or not startup_s >= 0:
            raise ValueError(f"classArg startup_s must be a number of seconds >= 0, got {startup_s!r}")
        table = None
        if latency_table is not None:
            from ..latency_table import LatencyTable, LatencyTableError

            if not isinstance(latency_table, str) or not latency_table:
                raise ValueError(f"classArg latency_table must be a file path or null, got {latency_table!r}")
            try:
                table = LatencyTable.load(latency_table)
            except LatencyTableError as exc:
                raise ValueError(f"classArg latency_table: {exc}") from None
        halving = SuccessiveHalving.from_class_args(min_epochs, eta, full_epochs)
        if halving.enabled and (proxy_subset is not None or proxy_epochs is not None or proxy_trials):
            raise ValueError("classArgs min_epochs (successive halving) and proxy_* (proxy training) exclude each "
                             "other: keep one")
        boolean("learn_from_stopped", learn_from_stopped)
        objective = MultiObjective.from_class_args(objectives, multi_objective, target_latency_ms, target_macs,
                                                   reward_exponent)
        if objective.mode != "single" and optimize_mode != "maximize":
            raise ValueError("classArg objectives: accuracy is maximised; use optimize_mode maximize")
        strategy_options: dict[str, Any] = {"population_size": int(population_size), "sample_size": int(sample_size),
                                            "num_classes": num_classes}
        if strategy == "predictor":
            strategy_options.update(pool_size=pool_size, explore=explore, warmup=warmup)
        if n_init is not None:
            if strategy != "bo":
                raise ValueError(f"classArg n_init is for strategy bo, not {strategy!r}: remove it or use strategy bo")
            strategy_options["n_init"] = positive_int("n_init", n_init)
        return cls(
            constraint=CompoundConstraint(float(product), float(tolerance)),
            phi=float(phi),
            strategy=strategy,
            strategy_options=strategy_options,
            maximize=optimize_mode == "maximize",
            base=base_spec,
            base_resolution=base_resolution,
            num_classes=num_classes,
            objectives=objective,
            proxy=ProxySchedule.from_class_args(proxy_subset, proxy_epochs, proxy_trials, promote_top,
                                                None if halving.enabled else full_epochs),
            halving=halving,
            startup_s=float(startup_s),
            cost_aware=cost_aware,
            budgets=Budgets(max_params, max_macs, max_model_size_mb, max_peak_memory_mb, max_latency_ms, table),
            seed=int(np.random.default_rng().integers(2**31)) if seed is None else int(seed),
            learn_from_stopped=learn_from_stopped,
            stop_after_failures=0 if stop_after_failures is None
            else positive_int("stop_after_failures", stop_after_failures, minimum=0),
        )

    def candidate_space(self, search_space: Mapping[str, Any]) -> CandidateSpace:
        """The candidates of ``search_space`` (NNI's format) under these options: the feasible coefficient grid
        of the constraint, times the block choices and hyperparameters, on the base architecture. Raises
        :class:`~efficientnet.search.space.SearchSpaceError` naming what is wrong with the space."""
        parsed = parse_search_space(search_space, self.base)
        return CandidateSpace(parsed, self.constraint, self.base, self.phi, self.base_resolution)
