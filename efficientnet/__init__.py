"""EfficientNet architecture search on Microsoft NNI: specs, builder, pretrained weights, profiler."""

from .builder import SpecEfficientNet, build_model
from .profiler import Profile, profile
from .spec import PRESETS, ArchSpec, Compound, SpecError, StageChoice, StageSpec, preset, resolve_arch
from .weights import InheritanceReport, WeightsError, inherit_weights, load_weights

__all__ = [
    "ArchSpec",
    "Compound",
    "InheritanceReport",
    "PRESETS",
    "Profile",
    "SpecEfficientNet",
    "SpecError",
    "StageChoice",
    "StageSpec",
    "WeightsError",
    "build_model",
    "inherit_weights",
    "load_weights",
    "preset",
    "profile",
    "resolve_arch",
]
__version__ = "0.1.0"
