"""Checks of NNI classArgs shared by the tuner, its strategies and the assessor: one line naming the argument."""

from __future__ import annotations

from typing import Any

__all__ = ["positive_int"]


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an integer (not a bool) >= ``minimum``; else ``ValueError`` naming classArg ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"classArg {name} must be an integer >= {minimum}, got {value!r}")
    return value
