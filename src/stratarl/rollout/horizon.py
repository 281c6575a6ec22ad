"""Horizon schedules: how many steps an episode may take at a given iteration.

- `fixed`: always `max_steps`;
- `stepwise` (ScalingInter-RL, AgentGym-RL): `stages[i]` from iteration `i * every` on, e.g.
  [10, 20, 30] every 20 iterations;
- `adaptive`: start at `stages[0]`; move to the next stage once the success rate measured at the
  current horizon reaches `threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class HorizonConfig:
    """The horizon schedule."""

    kind: Literal["fixed", "stepwise", "adaptive"] = "fixed"
    """`fixed`, `stepwise` (by iteration) or `adaptive` (by success rate)."""
    max_steps: int = 20
    """The horizon of the `fixed` schedule."""
    stages: list[int] = field(default_factory=lambda: [10, 20, 30])
    """Horizons of the `stepwise` and `adaptive` schedules, in order."""
    every: int = 20
    """`stepwise`: iterations per stage."""
    threshold: float = 0.5
    """`adaptive`: success rate at the current horizon that unlocks the next stage."""


@dataclass
class Horizon:
    """The schedule with its state (the adaptive stage survives checkpoints via `stage`)."""

    cfg: HorizonConfig
    """The schedule."""
    stage: int = 0
    """Current stage of the adaptive schedule."""

    def at(self, iteration: int) -> int:
        """The horizon to use at `iteration`."""
        c = self.cfg
        if c.kind == "fixed":
            return c.max_steps
        if c.kind == "stepwise":
            return c.stages[min(iteration // max(1, c.every), len(c.stages) - 1)]
        return c.stages[min(self.stage, len(c.stages) - 1)]

    def observe(self, success_rate: float) -> None:
        """Feed the success rate measured at the current horizon (adaptive schedule only)."""
        if self.cfg.kind == "adaptive" and success_rate >= self.cfg.threshold:
            self.stage = min(self.stage + 1, len(self.cfg.stages) - 1)
