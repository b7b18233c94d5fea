"""The parameter dict that travels from the tuner to a trial (what ``nni.get_next_parameter()`` returns).

A proposal is a flat dict, so the NNI WebUI shows it as a table::

    {"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "phi": 1.0,          # compound coefficients (the seed's keys)
     "stage3_kernel": 5, "stage3_expand": 4, "stage3_se": 1, "stage3_repeats": 1,   # block choices, 1-based
     "arch": "act=swish,stem=scaled,w=...,r=.../ir_r1_k3_...",     # the full ArchSpec: authoritative when present
     "params": 5288548, "macs": 385859952, ...                     # profiled costs, for display
     "lr": 0.01, "batch_size": 32}                                  # training hyperparameters, passed through

A trial rebuilds the spec with :func:`spec_from_parameters`: from ``arch`` when given, otherwise from the
coefficients and block choices applied to the trial's base architecture (so the old seed's tuner, which sent only
alpha/beta/gamma, still works).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .spec import ArchSpec, SpecError, StageChoice

__all__ = [
    "STAGE_KEY",
    "COEFFICIENT_KEYS",
    "PROFILE_KEYS",
    "stage_choices_from_parameters",
    "spec_from_parameters",
    "hyperparameters",
]

STAGE_KEY = re.compile(r"^stage(\d+)_(kernel|expand|se|repeats)$")
COEFFICIENT_KEYS = ("alpha", "beta", "gamma", "phi")
PROFILE_KEYS = ("arch", "params", "macs", "model_size_mb", "peak_memory_mb", "latency_ms", "budget")
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


def spec_from_parameters(
    params: Mapping[str, Any], base: ArchSpec, base_resolution: int | None = None
) -> ArchSpec:
    """The architecture a proposal describes (see the module docstring)."""
    if params.get("arch"):
        return ArchSpec.parse(str(params["arch"]))
    spec = base
    if any(k in params for k in ("alpha", "beta", "gamma")):
        spec = ArchSpec.from_compound(
            float(params.get("alpha", 1.0)),
            float(params.get("beta", 1.0)),
            float(params.get("gamma", 1.0)),
            float(params.get("phi", 1.0)),
            base=base,
            base_resolution=base_resolution,
        )
    elif base_resolution is not None:
        spec = spec.replace(resolution=base_resolution)
    choices = stage_choices_from_parameters(params)
    return spec.with_stage_choices(choices) if choices else spec


def hyperparameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """The training hyperparameters of a proposal: everything that describes neither the model nor its costs."""
    return {
        k: v
        for k, v in params.items()
        if k not in COEFFICIENT_KEYS and k not in PROFILE_KEYS and not STAGE_KEY.match(k)
    }
