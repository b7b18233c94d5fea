"""Numeric features in [0, 1] for the candidates of a :class:`CandidateSpace` and for training hyperparameters.

Architecture features: alpha, beta and gamma scaled by their grid ranges, then every block choice as its position
among the sorted allowed values (kernel 3/5/7 -> 0, 0.5, 1). They are computed for whole index arrays at once, so a
surrogate can score every candidate of a space of thousands.

Hyperparameter features follow NNI's own reading of the search space (``nni.common.hpo_utils``): ``choice`` of
numbers and ``randint`` are ordinal, ``choice`` of anything else is one-hot, ``(q)uniform`` is linear,
``(q)loguniform`` is linear in the logarithm, and normal types go through the normal CDF. Nested choices are not
encoded (``supported`` is False): a strategy then leaves those hyperparameters to NNI's random sampling.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from nni.common.hpo_utils import deformat_parameters, format_parameters, format_search_space
from scipy.special import ndtr

from .candidates import Candidate, CandidateSpace
from .space import draw_formatted

__all__ = ["ArchEncoding", "HyperparameterEncoding"]


class ArchEncoding:
    """Features of candidate indices of ``space`` (see the module docstring)."""

    def __init__(self, space: CandidateSpace) -> None:
        self.space = space
        points = np.asarray(space.points, dtype=float)
        lows = np.array([d.values[0] for d in space.parsed.coefficients], dtype=float)
        highs = np.array([d.values[-1] for d in space.parsed.coefficients], dtype=float)
        searched = highs > lows
        self._coef_columns = np.flatnonzero(searched)
        self._points = (points[:, searched] - lows[searched]) / (highs[searched] - lows[searched])
        self._radix = np.array([len(d.values) for d in space.choice_dims], dtype=np.int64)
        self._choice_columns = np.flatnonzero(self._radix > 1)
        self.dim = self._points.shape[1] + len(self._choice_columns)

    def digits(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(coefficient point index, block-choice digits) of candidate indices, as :meth:`CandidateSpace.at`."""
        rest = np.asarray(indices, dtype=np.int64)
        digits = np.zeros((len(rest), len(self._radix)), dtype=np.int64)
        for k in range(len(self._radix) - 1, -1, -1):
            rest, digits[:, k] = np.divmod(rest, self._radix[k])
        return rest, digits

    def features(self, indices: np.ndarray) -> np.ndarray:
        """One row of features per candidate index."""
        return self._from_digits(*self.digits(indices))

    def features_of(self, candidates: list[Candidate]) -> np.ndarray:
        """Features of candidates given as objects (any space size: no index arithmetic)."""
        space = self.space
        point = np.array([space.point_index(c.coefficients) for c in candidates], dtype=np.int64)
        digits = np.array([[d.values.index(v) for d, v in zip(space.choice_dims, c.choices)] for c in candidates],
                          dtype=np.int64).reshape(len(candidates), len(self._radix))
        return self._from_digits(point, digits)

    def _from_digits(self, point: np.ndarray, digits: np.ndarray) -> np.ndarray:
        cols = [self._points[point]]
        if len(self._choice_columns):
            radix = self._radix[self._choice_columns]
            cols.append(digits[:, self._choice_columns] / (radix - 1))
        return np.hstack(cols)


class HyperparameterEncoding:
    """Encode, sample and perturb the training hyperparameters of a search space (NNI semantics)."""

    def __init__(self, hyperparameters: Mapping[str, Any]) -> None:
        self.raw = dict(hyperparameters)
        self.formatted = format_search_space(self.raw) if self.raw else {}
        self.supported = all(len(key) == 1 for key in self.formatted)
        self._columns: list[tuple[Any, str, int]] = []  # (key, kind, width)
        if self.supported:
            for key, spec in self.formatted.items():
                if spec.categorical and spec.type == "choice" and not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec.values
                ):
                    self._columns.append((key, "onehot", spec.size))
                elif spec.categorical:
                    self._columns.append((key, "ordinal", 1))
                else:
                    self._columns.append((key, "normal" if spec.normal_distributed else "uniform", 1))
        self.dim = sum(width for _, _, width in self._columns) if self.supported else 0
        self._order: dict[Any, np.ndarray] = {}
        for key, kind, _ in self._columns:
            spec = self.formatted[key]
            if kind == "ordinal" and spec.type == "choice":  # rank of each choice index by its value
                ranks = np.argsort(np.argsort([float(v) for v in spec.values], kind="stable"), kind="stable")
                self._order[key] = ranks.astype(float)

    # ------------------------------------------------------------------------------------------- encoding
    def _formatted_of(self, values: Mapping[str, Any]) -> dict:
        try:
            return format_parameters(dict(values), self.formatted)
        except (KeyError, ValueError, TypeError):
            out = {}
            for key in self.formatted:  # one at a time: a missing or off-grid value gets the middle of its range
                try:
                    out.update(format_parameters({key[0]: values[key[0]]}, {key: self.formatted[key]}))
                except (KeyError, ValueError, TypeError):
                    pass
            return out

    def encode(self, values: Mapping[str, Any]) -> np.ndarray:
        """Features in [0, 1] of one hyperparameter dict (missing or unreadable values: the middle of the range)."""
        if not self.dim:
            return np.zeros(0)
        formatted = self._formatted_of(values)
        out: list[float] = []
        for key, kind, width in self._columns:
            spec = self.formatted[key]
            x = formatted.get(key)
            if kind == "onehot":
                row = [0.0] * width
                if x is not None:
                    row[int(x)] = 1.0
                out.extend(row)
            elif x is None:
                out.append(0.5)
            elif kind == "ordinal":
                size = max(spec.size - 1, 1)
                out.append(float(self._order[key][int(x)]) / size if key in self._order else float(x) / size)
            elif kind == "normal":
                out.append(float(ndtr((float(x) - spec.mu) / spec.sigma)))
            else:
                width_ = spec.high - spec.low
                out.append(min(max((float(x) - spec.low) / width_, 0.0), 1.0) if width_ > 0 else 0.5)
        return np.asarray(out, dtype=float)

    # ------------------------------------------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One draw with NNI's semantics (as NNI's random tuner)."""
        return draw_formatted(self.formatted, rng)

    def perturb(self, values: Mapping[str, Any], rng: np.random.Generator, scale: float = 0.1) -> dict[str, Any]:
        """A neighbour of ``values``: numerical values moved by ``scale`` of their range (in NNI's, possibly log,
        units), one categorical value redrawn with probability ``scale`` per parameter."""
        formatted = self._formatted_of(values)
        if len(formatted) != len(self.formatted):
            return self.sample(rng)
        out = {}
        for key, spec in self.formatted.items():
            x = formatted[key]
            if spec.categorical:
                out[key] = int(rng.integers(spec.size)) if rng.random() < scale else int(x)
            elif spec.normal_distributed:
                out[key] = float(x) + rng.normal(0.0, scale * spec.sigma * 3)
            else:
                out[key] = float(np.clip(float(x) + rng.normal(0.0, scale * (spec.high - spec.low)), spec.low,
                                         spec.high))
        values = deformat_parameters(out, self.formatted)
        for key, spec in self.formatted.items():  # exp(log(high)) may overshoot high by a rounding error
            if not spec.categorical and not spec.normal_distributed and spec.type in ("uniform", "loguniform"):
                values[key[0]] = min(max(values[key[0]], float(spec.values[0])), float(spec.values[1]))
        return values
