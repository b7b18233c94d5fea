"""Checks of NNI classArgs shared by the tuner, its strategies and the assessor: one line naming the argument."""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Iterable

__all__ = ["positive_int", "boolean", "class_arg_names", "unknown_class_args"]

NOT_CLASS_ARGS = frozenset({"self", "profiler", "failure_reader"})  # constructor arguments for code, not configs


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an integer (not a bool) >= ``minimum``; else ``ValueError`` naming classArg ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"classArg {name} must be an integer >= {minimum}, got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is a bool; else ``ValueError`` naming classArg ``name``."""
    if not isinstance(value, bool):
        raise ValueError(f"classArg {name} must be true or false, got {value!r}")
    return value


def class_arg_names(init: Callable[..., Any]) -> list[str]:
    """The classArgs a constructor takes by name (its keyword parameters, less those meant for code)."""
    return [name for name, p in inspect.signature(init).parameters.items()
            if name not in NOT_CLASS_ARGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def unknown_class_args(unknown: Iterable[str], known: Iterable[str], owner: str) -> str:
    """One line naming the unknown classArgs, each with the closest known one when there is one."""
    known = sorted(known)
    parts, guessed = [], True
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        guessed = guessed and bool(close)
    return f"{owner} has no classArg {', '.join(parts)}" + ("" if guessed else f"; its classArgs: {', '.join(known)}")
