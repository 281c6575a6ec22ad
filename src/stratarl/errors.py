"""Errors meant for the user: the CLI prints their message and exits non-zero, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input (an id, a key, a path); the message says what to do."""


class ConfigError(UserError):
    """An unknown or malformed configuration key or value."""


class UnknownNameError(UserError):
    """A name that is not in a registry; the message lists the closest valid names."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        choices = sorted(set(choices))
        self.kind, self.name, self.choices = kind, name, choices
        super().__init__(unknown_message(kind, name, choices))


class SplitSizeError(UserError):
    """More tasks asked of an environment's split than it holds."""

    def __init__(self, env: str, split: str, size: int, n: int | None, start: int = 0):
        self.env, self.split, self.size, self.n, self.start = env, split, size, n, start
        msg = f"{env} has only {size} {split} tasks"
        if n is None or start >= size:
            msg += f" (asked to start at {start}): start below {size}"
        else:
            msg += f"; asked for {n}" + (f" from index {start}" if start else "") + f": ask for at most {size - start}"
        super().__init__(msg + ", or use another split")


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The valid names most similar to `name` (case-insensitive), best first."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.4)
    if not hits:  # fall back to substring matches ("cooking" -> "twx:cookingworld")
        hits = [c for c in lowered if name.lower() in c or c in name.lower()][:n]
    return [lowered[h] for h in hits]


def unknown_message(kind: str, name: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    near = closest(name, choices)
    msg = f"unknown {kind} '{name}'."
    if near:
        msg += " Did you mean: " + ", ".join(f"'{c}'" for c in near) + "?"
    elif len(choices) <= 12:
        msg += " Valid choices: " + ", ".join(choices) + "."
    return msg


def lookup(kind: str, name: str, registry: dict):
    """`registry[name]`, or an UnknownNameError naming the closest valid names."""
    try:
        return registry[name]
    except KeyError:
        raise UnknownNameError(kind, name, registry) from None
