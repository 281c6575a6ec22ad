"""The `Env` protocol and the records that describe a registered environment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..types import Task

# Keys every env puts in `info`:
#   won (bool), score (float, 0..1), outcome (float: the episode reward if it ended now),
#   task_description (str), moves (int), action_valid (bool: the env understood the action),
#   admissible_actions (list[str], only where the env has a manageable list).
INFO_KEYS = ("won", "score", "outcome", "task_description", "moves", "action_valid")


@runtime_checkable
class Env(Protocol):
    """Gymnasium-like text environment. One instance runs one episode at a time."""

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        """Start `task`; returns the first observation and info. Same task, same state."""
        ...

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        """Apply an action (any text); returns observation, reward, done, info."""
        ...

    def expert_actions(self, task: Task) -> list[str] | None:
        """The gold action sequence for `task`, or None where the env has none."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Param:
    """One environment parameter, validated before it reaches the environment."""

    type: type
    """int, float, str or bool."""
    default: Any
    """Value used when the env id does not set it."""
    doc: str = ""
    """What it controls."""
    low: float | None = None
    """Smallest allowed value (numbers)."""
    high: float | None = None
    """Largest allowed value (numbers)."""
    choices: tuple[str, ...] | None = None
    """Allowed values (strings)."""


@dataclass(frozen=True)
class EnvSpec:
    """A registered environment id and how to build it."""

    id: str
    """e.g. `twx:cookingworld`."""
    family: str
    """`twx`, `sciworld`, `alfworld`, `webshop`, `tools`, `search`, ..."""
    description: str
    """One line for `stratarl envs`."""
    factory: Callable[[dict[str, Any]], Env]
    """Builds an env instance from validated parameters."""
    params: dict[str, Param] = field(default_factory=dict)
    """Accepted parameters."""
    split_sizes: Callable[[dict[str, Any]], dict[str, int]] | None = None
    """Number of tasks per split for given parameters (may start a JVM)."""
    seeds: Callable[[str, dict[str, Any]], list[int]] | None = None
    """The env's own seeds / variation ids of a split, in order."""
    has_expert: bool = True
    """The env can produce gold action sequences."""
    max_steps: int = 50
    """A sensible default horizon."""
    outcome: str = "won"
    """How the episode reward is read: `won` (1/0) or `score` (score in 0..1)."""


def sanitize_action(text: str) -> str:
    """Any Python string made safe to send to a JVM env: lone surrogates (which cannot be
    encoded as UTF-8) become '?'. Everything else reaches the env unchanged."""
    return text.encode("utf-8", "replace").decode("utf-8")
