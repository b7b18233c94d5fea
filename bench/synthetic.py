"""Synthetic "accuracy" objectives over the search space, for benchmarks and tests of the search strategies.

Each objective is a family: a kind and a seed draw its details (where the peaks are, which block choices help), so
a benchmark over many seeds measures a strategy on many functions of one kind, not on one lucky landscape. Values
are top-1 percentages around 60 to 80. Every objective reads ``alpha``, ``beta``, ``gamma``; the terms for block
choices (``stage4_kernel``, ``stage4_expand``, ``stage6_kernel``, ``stage6_se``, ``stage6_repeats``) and for
hyperparameters (``lr``, ``batch_size``) apply only when the proposal has those keys, so the same family works on the
legacy 3-D space (``search_space_legacy.json``) and on ``search_space.json``.

Kinds (:data:`KINDS`):

* ``smooth``: one quadratic peak in the coefficients, additive block-choice effects, a log-quadratic lr optimum;
* ``multimodal``: four Gaussian bumps of different heights plus a ripple; the best bump differs per seed;
* ``interactions``: what a choice is worth depends on the coefficients and on other choices (a bigger kernel pays
  only at high resolution, expansion only in shallow networks, SE only with the bigger kernel; the best lr depends on
  batch size and depth);
* ``plateaus``: ``smooth`` rounded down to terraces of 0.25 points, with everything more than 5 points below the
  peak flat at that level (a large region that says nothing about where to go, as when training diverges);
* ``noisy``: ``smooth``, observed with Gaussian noise of 0.5 % of the value from trial to trial (:meth:`observe`);
  the true value, not the observed one, decides whether a trial reached a target;
* ``choices``: the block choices (with interactions between them) matter several times more than the coefficients;
* ``rugged``: ``smooth`` plus a fixed pseudo-random offset of up to ±0.4 points per architecture (the seed-to-seed
  spread of real training, frozen): neighbours differ, nothing is smooth at the finest scale.

:func:`learning_curve` turns a final value into per-epoch values for the assessor benchmark.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

__all__ = ["KINDS", "SyntheticObjective", "learning_curve"]

KINDS = ("smooth", "multimodal", "interactions", "plateaus", "noisy", "choices", "rugged")
CHOICE_KEYS = ("stage4_kernel", "stage4_expand", "stage6_kernel", "stage6_se", "stage6_repeats")
NOISE = 0.005  # relative, trial to trial, for kind "noisy"


def _unit(p: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """alpha in [1, 2], beta and gamma in [1, 1.4] (the feasible range of the legacy grid) -> [0, 1]."""
    return (np.asarray(p["alpha"], float) - 1.0, (np.asarray(p["beta"], float) - 1.0) / 0.4,
            (np.asarray(p["gamma"], float) - 1.0) / 0.4)


@dataclass
class SyntheticObjective:
    """One member of the family ``kind``, drawn by ``seed``: ``value(params)`` is the true value of a proposal.

    ``lr_range`` and ``batch_sizes`` are the search space's ranges (those of ``search_space.json`` by default): the
    best lr is drawn inside the range, and the smaller batch size is the one with an effect.
    """

    kind: str
    seed: int = 0
    lr_range: tuple[float, float] = (0.002, 0.008)
    batch_sizes: tuple[int, int] = (32, 64)
    _p: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown objective kind {self.kind!r}: use one of {', '.join(KINDS)}")
        rng = np.random.default_rng([self.seed, zlib.crc32(self.kind.encode())])
        p = self._p
        p["peak"] = rng.uniform([0.15, 0.1, 0.1], [0.85, 0.8, 0.8])
        p["curv"] = rng.uniform(8.0, 20.0, size=3)
        # additive block-choice effects: one per value of each choice (2, 2, 2, 2, 3 values)
        p["effects"] = [rng.uniform(-0.6, 0.6, size=n) for n in (2, 2, 2, 2, 3)]
        lo, hi = np.log(self.lr_range[0]), np.log(self.lr_range[1])
        p["lr0"] = float(np.exp(rng.uniform(lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo))))
        p["batch"] = rng.uniform(-0.3, 0.3)
        p["bumps"] = rng.uniform([0.05, 0.0, 0.0], [0.95, 0.9, 0.9], size=(4, 3))
        p["heights"] = np.sort(rng.uniform(2.0, 5.0, size=4))[::-1] * rng.permutation([1.0, 0.8, 0.7, 0.6])
        p["widths"] = rng.uniform(0.12, 0.25, size=4)
        p["ripple"] = rng.uniform(0, 2 * np.pi, size=3)
        p["interact"] = rng.uniform(0.8, 1.6, size=5) * rng.choice([-1.0, 1.0], size=5)
        p["strong"] = [rng.uniform(-2.0, 2.0, size=n) for n in (2, 2, 2, 2, 3)]
        p["pair"] = rng.uniform(-1.5, 1.5, size=(2, 2))
        p["salt"] = int(rng.integers(2**31))

    # ------------------------------------------------------------------------------------------- terms
    def _smooth(self, a: np.ndarray, b: np.ndarray, g: np.ndarray) -> np.ndarray:
        (a0, b0, g0), (ca, cb, cg) = self._p["peak"], self._p["curv"]
        return 78.0 - ca * (a - a0) ** 2 - cb * (b - b0) ** 2 - cg * (g - g0) ** 2

    def _choices(self, p: Mapping[str, np.ndarray], effects: list[np.ndarray]) -> np.ndarray:
        out = np.zeros(np.shape(p["alpha"]))
        if not all(k in p for k in CHOICE_KEYS):
            return out
        index = [
            (np.asarray(p["stage4_kernel"]) == 5).astype(int), (np.asarray(p["stage4_expand"]) == 6).astype(int),
            (np.asarray(p["stage6_kernel"]) == 5).astype(int), np.asarray(p["stage6_se"]).astype(int),
            np.asarray(p["stage6_repeats"]).astype(int) + 1,
        ]
        for eff, idx in zip(effects, index):
            out = out + eff[idx]
        return out

    def _hyper(self, p: Mapping[str, np.ndarray], a: np.ndarray, depth_shift: bool = False) -> np.ndarray:
        out = np.zeros(np.shape(p["alpha"]))
        if "lr" in p:
            lr0 = self._p["lr0"] * np.ones_like(out)
            if "batch_size" in p and depth_shift:  # bigger batches want a higher lr, deeper networks a lower one
                ratio = np.asarray(p["batch_size"], float) / min(self.batch_sizes)
                lr0 = lr0 * np.sqrt(ratio) * (1.15 - 0.3 * a)
            out = out - 2.0 * (np.log(np.asarray(p["lr"], float) / lr0) / np.log(4.0)) ** 2
        if "batch_size" in p:
            out = out + self._p["batch"] * (np.asarray(p["batch_size"], float) == min(self.batch_sizes))
        return out

    # ------------------------------------------------------------------------------------------- values
    def value(self, params: Mapping[str, Any]) -> np.ndarray | float:
        """The true value of a proposal (a dict of scalars) or of many (a dict of equal-length arrays)."""
        scalar = np.ndim(params["alpha"]) == 0
        p = {k: np.atleast_1d(np.asarray(v)) for k, v in params.items() if not isinstance(v, str)}
        a, b, g = _unit(p)
        q, kind = self._p, self.kind
        if kind in ("smooth", "noisy", "plateaus", "rugged"):
            v = self._smooth(a, b, g) + self._choices(p, q["effects"]) + self._hyper(p, a)
            if kind == "plateaus":
                v = np.floor(np.maximum(v, 73.0) / 0.25) * 0.25
            elif kind == "rugged":
                v = v + self._frozen_offset(p)
        elif kind == "multimodal":
            x = np.stack([a, b, g], -1)
            d2 = ((x[:, None, :] - q["bumps"][None]) ** 2).sum(-1)
            v = 72.0 + (q["heights"] * np.exp(-d2 / (2 * q["widths"] ** 2))).sum(-1)
            r = q["ripple"]
            v = v + 0.3 * np.cos(7 * a + r[0]) * np.cos(6 * b + r[1]) * np.cos(6 * g + r[2])
            v = v + self._choices(p, q["effects"]) + self._hyper(p, a)
        elif kind == "interactions":
            (a0, b0, g0) = q["peak"]
            c = q["interact"]
            v = 78.0 - 10 * (a - a0) ** 2 - 14 * (b - b0) ** 2 - 12 * (g - g0) ** 2 + 6 * c[0] * (a - a0) * (g - g0)
            if all(k in p for k in CHOICE_KEYS):
                k4 = (p["stage4_kernel"] == 5).astype(float)
                e4 = (p["stage4_expand"] == 6).astype(float)
                k6 = (p["stage6_kernel"] == 5).astype(float)
                se = p["stage6_se"].astype(float)
                r6 = p["stage6_repeats"].astype(float)
                v = v + 3.0 * c[1] * k4 * (g - 0.5) + 2.5 * c[2] * e4 * (0.5 - a)
                v = v + 1.2 * se * k6 * np.sign(c[3]) - 0.6 * se * (1 - k6) + 0.8 * c[4] * r6 * (0.5 - a)
            v = v + self._hyper(p, a, depth_shift=True)
        elif kind == "choices":
            v = 76.0 + 0.35 * self._smooth(a, b, g) - 0.35 * 78.0 + self._choices(p, q["strong"])
            if all(k in p for k in CHOICE_KEYS):
                k4 = (p["stage4_kernel"] == 5).astype(int)
                se = p["stage6_se"].astype(int)
                v = v + q["pair"][k4, se]
            v = v + self._hyper(p, a)
        else:  # pragma: no cover - KINDS is checked in __post_init__
            raise AssertionError(kind)
        return float(v[0]) if scalar else v

    def _frozen_offset(self, p: Mapping[str, np.ndarray]) -> np.ndarray:
        keys = ["alpha", "beta", "gamma"] + [k for k in CHOICE_KEYS if k in p]
        cols = np.stack([np.round(np.asarray(p[k], float) * 1000).astype(np.int64) for k in keys], -1)
        h = np.full(len(cols), self._p["salt"], dtype=np.uint64)
        for j in range(cols.shape[1]):  # a small integer hash (splitmix-like), the same for the same architecture
            h = (h ^ cols[:, j].astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
        return 0.4 * (2.0 * (h % np.uint64(10_000)).astype(float) / 10_000 - 1.0)

    def observe(self, params: Mapping[str, Any], rng: np.random.Generator) -> float:
        """What a trial reports: the true value, plus noise for kind ``noisy``."""
        v = float(self.value(params))
        return v * (1.0 + NOISE * float(rng.normal())) if self.kind == "noisy" else v


def learning_curve(final: float, tau: float, epochs: int, rng: np.random.Generator, start: float = 10.0,
                   noise: float = 0.3) -> np.ndarray:
    """Validation accuracy after epochs 1..``epochs``: from ``start`` towards ``final`` at rate 1/``tau``, reaching
    exactly ``final`` at the last epoch before noise of ``noise`` points per epoch."""
    e = np.arange(1, epochs + 1)
    shape = (1 - np.exp(-e / tau)) / (1 - np.exp(-epochs / tau))
    return start + (final - start) * shape + rng.normal(0.0, noise, size=epochs)
