"""The architectures of a search space, as the tuner enumerates them: for the tools that measure a whole space (the
``latency-table`` command, the benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..spec import ArchSpec
from .options import TunerOptions

__all__ = ["search_space_specs"]


def search_space_specs(search_space: Any, base: str = "lite0", base_resolution: int | None = None,
                       num_classes: int = 1000, phi: float = 1.0, sample: int | None = None,
                       seed: int = 0) -> list[ArchSpec]:
    """The distinct architectures of a search space, as the tuner enumerates them (every candidate, or ``sample``
    random ones drawn with ``seed``)."""
    options = TunerOptions.read(base=base, base_resolution=base_resolution, num_classes=num_classes, phi=phi)
    space = options.candidate_space(search_space)
    if sample is None or sample >= space.size:
        candidates: Iterable[Any] = (space.at(i) for i in range(space.size))
    else:
        rng = np.random.default_rng(seed)
        candidates = [space.at(int(i)) for i in rng.choice(space.size, size=sample, replace=False)]
    return list(dict.fromkeys(space.spec(c) for c in candidates))
