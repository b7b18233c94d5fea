"""Parse and validate an NNI search space (``_type``/``_value`` format) for the EfficientNet tuner.

Three kinds of keys are understood:

* ``alpha``, ``beta``, ``gamma``: the compound-scaling coefficients, as ``quniform`` ``[low, high, q]`` (or a
  ``choice`` of numbers). A coefficient left out stays at 1.0.
* ``stage{N}_kernel|expand|se|repeats`` (N = 1 ... number of stages of the base, 1-based): block choices, as
  ``choice`` lists; ``se`` is 0/1 and ``repeats`` is a delta added to the base stage's repeats.
* anything else is a training hyperparameter (``lr``, ``batch_size``, ...) in any of NNI's common types; it is
  sampled with NNI's own semantics and passed through to the trial untouched.

Keys the tuner writes itself (``phi``, ``arch``, ``params``, ``macs``, ...) are refused, as is every malformed
entry; :class:`SearchSpaceError` names the key and the fix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from nni.algorithms.hpo import random_tuner
from nni.common.hpo_utils import deformat_parameters, format_search_space, validate_search_space

from ..proposal import COEFFICIENT_KEYS, PROFILE_KEYS, STAGE_KEY
from ..spec import EXPANSION_RATIOS, KERNEL_SIZES, ArchSpec

__all__ = [
    "COEFFICIENTS",
    "SearchSpaceError",
    "CoefficientDim",
    "ChoiceDim",
    "ParsedSearchSpace",
    "parse_search_space",
]

COEFFICIENTS = ("alpha", "beta", "gamma")
GRID_DECIMALS = 10  # grid values are rounded to this many decimals, so 1.0 + 3 * 0.05 == 1.15 exactly
_RESERVED = set(COEFFICIENT_KEYS) - set(COEFFICIENTS) | set(PROFILE_KEYS)


class SearchSpaceError(ValueError):
    """A search space the tuner cannot use; the message names the key and the fix."""


@dataclass(frozen=True)
class CoefficientDim:
    """One compound coefficient and the values it may take (sorted ascending)."""

    name: str
    values: tuple[float, ...]
    low: float
    high: float
    q: float | None = None  # None for a ``choice``

    def index_of(self, value: float) -> int | None:
        """Index of ``value`` in :attr:`values` (within a float tolerance), or None when it is off the grid."""
        return _find(self.values, float(value))


@dataclass(frozen=True)
class ChoiceDim:
    """One block choice: ``stage`` (0-based), ``field`` (kernel/expand/se/repeats), sorted allowed values."""

    key: str
    stage: int
    field: str
    values: tuple[int, ...]


@dataclass(frozen=True)
class ParsedSearchSpace:
    """A validated search space: coefficient grids, block-choice dimensions and hyperparameter sub-space."""

    coefficients: tuple[CoefficientDim, CoefficientDim, CoefficientDim]
    choices: tuple[ChoiceDim, ...]
    hyperparameters: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hp_formatted", format_search_space(dict(self.hyperparameters)))

    def sample_hyperparameters(self, rng: np.random.Generator) -> dict[str, Any]:
        """One draw of the hyperparameters with NNI's semantics (as NNI's random tuner does)."""
        return draw_formatted(self._hp_formatted, rng)  # type: ignore[attr-defined]


def draw_formatted(formatted: Mapping[Any, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One draw of a search space in NNI's formatted form (``format_search_space``), with NNI's semantics (as NNI's
    random tuner does); ``{}`` for an empty one."""
    if not formatted:
        return {}
    return deformat_parameters(random_tuner.suggest(rng, formatted), formatted)


def _find(values: tuple[float, ...], value: float) -> int | None:
    for i, v in enumerate(values):
        if math.isclose(v, value, rel_tol=1e-9, abs_tol=1e-9):
            return i
    return None


def quniform_grid(low: float, high: float, q: float) -> tuple[float, ...]:
    """Every value NNI's ``quniform`` can produce: ``clip(round(x / q) * q, low, high)`` for x in [low, high]."""
    values = {round(low, GRID_DECIMALS), round(high, GRID_DECIMALS)}
    k = math.ceil(low / q - 1e-9)
    while k * q < high - 1e-9:
        if k * q > low + 1e-9:
            values.add(round(k * q, GRID_DECIMALS))
        k += 1
    return tuple(sorted(values))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _entry(name: str, entry: Any) -> tuple[str, list]:
    if not isinstance(entry, Mapping) or "_type" not in entry or "_value" not in entry:
        raise SearchSpaceError(f'search space key "{name}" needs {{"_type": ..., "_value": [...]}}, got {entry!r}')
    if not isinstance(entry["_value"], list) or not entry["_value"]:
        raise SearchSpaceError(f'search space key "{name}": "_value" must be a non-empty list, got {entry["_value"]!r}')
    return entry["_type"], entry["_value"]


def _coefficient(name: str, entry: Any) -> CoefficientDim:
    type_, value = _entry(name, entry)
    if type_ == "quniform":
        if len(value) != 3 or not all(_is_number(v) for v in value):
            raise SearchSpaceError(f'search space key "{name}": quniform needs [low, high, q] numbers, got {value!r}')
        low, high, q = (float(v) for v in value)
        if q <= 0:
            raise SearchSpaceError(f'search space key "{name}": quniform step q must be > 0, got {q}')
        if low >= high:
            raise SearchSpaceError(f'search space key "{name}": empty or inverted range [{low}, {high}]; use low < high')
        if low <= 0:
            raise SearchSpaceError(f'search space key "{name}": coefficients must be positive; use low > 0, got {low}')
        return CoefficientDim(name, quniform_grid(low, high, q), low, high, q)
    if type_ == "choice":
        if not all(_is_number(v) and v > 0 for v in value):
            raise SearchSpaceError(f'search space key "{name}": choice values must be positive numbers, got {value!r}')
        values = tuple(sorted({round(float(v), GRID_DECIMALS) for v in value}))
        return CoefficientDim(name, values, values[0], values[-1])
    if type_ in validation_types():
        raise SearchSpaceError(
            f'search space key "{name}": type "{type_}" has no grid to meet the product constraint; use quniform'
        )
    raise SearchSpaceError(f'search space key "{name}": unknown _type "{type_}"; use quniform or choice')


def _choice(name: str, entry: Any, base: ArchSpec) -> ChoiceDim:
    m = STAGE_KEY.match(name)
    assert m is not None
    stage, field = int(m.group(1)) - 1, m.group(2)
    if not 0 <= stage < len(base.stages):
        raise SearchSpaceError(
            f'search space key "{name}": the base architecture has stages 1..{len(base.stages)}'
        )
    type_, value = _entry(name, entry)
    if type_ != "choice":
        raise SearchSpaceError(f'search space key "{name}": block choices must be "choice" lists, got "{type_}"')
    if field == "se":
        value = [int(v) if isinstance(v, bool) else v for v in value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise SearchSpaceError(f'search space key "{name}": choices must be integers, got {value!r}')
    if len(set(value)) != len(value):
        raise SearchSpaceError(f'search space key "{name}": duplicate values in {value!r}')
    allowed = {"kernel": KERNEL_SIZES, "expand": EXPANSION_RATIOS, "se": (0, 1)}.get(field)
    if allowed is not None and not set(value) <= set(allowed):
        raise SearchSpaceError(f'search space key "{name}": {field} must be among {list(allowed)}, got {value!r}')
    if field == "repeats":
        repeats = base.stages[stage].repeats
        if min(value) < 1 - repeats:
            raise SearchSpaceError(
                f'search space key "{name}": stage {stage + 1} has {repeats} repeat(s), so the smallest delta is '
                f"{1 - repeats}, got {min(value)}"
            )
    return ChoiceDim(name, stage, field, tuple(sorted(value)))


def validation_types() -> tuple[str, ...]:
    """NNI's common search-space types."""
    from nni.common.hpo_utils.validation import common_search_space_types

    return tuple(common_search_space_types)


def parse_search_space(search_space: Mapping[str, Any], base: ArchSpec) -> ParsedSearchSpace:
    """Validate ``search_space`` against ``base`` (for stage numbers and repeats) and split it into its parts."""
    if not isinstance(search_space, Mapping):
        raise SearchSpaceError(f"the search space must be a JSON object, got {type(search_space).__name__}")
    coefficients = {}
    choices = []
    hyper: dict[str, Any] = {}
    for name, entry in search_space.items():
        if name in COEFFICIENTS:
            coefficients[name] = _coefficient(name, entry)
        elif name in _RESERVED:
            hint = "set phi with the tuner's classArgs" if name == "phi" else "the tuner fills it in"
            raise SearchSpaceError(f'search space key "{name}" is reserved: {hint}; remove it from the search space')
        elif STAGE_KEY.match(name):
            choices.append(_choice(name, entry, base))
        elif re.match(r"^stage\d*_", name):
            raise SearchSpaceError(
                f'search space key "{name}" is not a block choice: use stage<N>_kernel, _expand, _se or _repeats'
            )
        else:
            _entry(name, entry)
            try:
                validate_search_space({name: entry}, raise_exception=True)
            except ValueError as exc:
                raise SearchSpaceError(f"{exc.args[0]}; fix that hyperparameter's entry") from None
            hyper[name] = entry
    dims = tuple(coefficients.get(n) or CoefficientDim(n, (1.0,), 1.0, 1.0) for n in COEFFICIENTS)
    choices.sort(key=lambda d: (d.stage, ("kernel", "expand", "se", "repeats").index(d.field)))
    return ParsedSearchSpace(dims, tuple(choices), hyper)  # type: ignore[arg-type]
