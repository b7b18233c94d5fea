"""EfficientNet architecture search on Microsoft NNI: specs, builder, pretrained weights, profiler.

Names are imported on first use (PEP 562), so ``import efficientnet.spec`` and the NNI tuner, which need no torch
at start-up, stay light; ``from efficientnet import build_model`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ArchSpec": "spec",
    "Compound": "spec",
    "PRESETS": "spec",
    "SpecError": "spec",
    "StageChoice": "spec",
    "StageSpec": "spec",
    "preset": "spec",
    "resolve_arch": "spec",
    "SpecEfficientNet": "builder",
    "build_model": "weights",
    "Profile": "profiler",
    "profile": "profiler",
    "InheritanceReport": "weights",
    "WeightsError": "weights",
    "inherit_weights": "weights",
    "load_weights": "weights",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
