"""Where training tasks come from, and the dynamic-sampling buffer.

`TaskSampler` walks seeded permutations of the train split (epoch after epoch); its position is part
of a checkpoint, so a resumed run draws the same tasks as an uninterrupted one.

Dynamic sampling / adaptive batch filling (DAPO; ASTRA's adaptive batch filling): groups whose
rewards have zero variance carry no learning signal under group-normalised estimators, so they are
dropped; surplus valid groups wait in a buffer for the next iteration; more tasks are rolled out
until the batch holds `n` valid groups or the round limit is hit.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field

from ..types import Group, Task


@dataclass
class TaskSampler:
    """Seeded epochs over a fixed list of tasks."""

    tasks: list[Task]
    """The task pool (e.g. the first K tasks of the train split)."""
    seed: int
    """Seed of the permutations."""
    position: int = 0
    """How many tasks were drawn so far (restored on resume)."""

    def next(self, n: int) -> list[Task]:
        out = [self._at(self.position + i) for i in range(n)]
        self.position += n
        return out

    def _at(self, k: int) -> Task:
        epoch, i = divmod(k, len(self.tasks))
        order = list(range(len(self.tasks)))
        random.Random(f"{self.seed}/{epoch}").shuffle(order)
        return self.tasks[order[i]]


@dataclass
class DynamicSamplingConfig:
    """Adaptive batch filling."""

    enabled: bool = False
    """Drop zero-variance groups and roll out more tasks until the batch is full."""
    min_std: float = 0.0
    """δ: a group is kept when the std of its rollouts' returns is greater than this."""
    max_rounds: int = 3
    """At most this many rollout rounds per iteration (the batch may stay short)."""
    buffer_size: int = 16
    """Most surplus valid groups kept for later iterations."""


def group_returns(group: Group) -> list[float]:
    return [t.outcome - sum(s.penalty for s in t.steps) for t in group.flat]


def has_signal(group: Group, min_std: float) -> bool:
    r = group_returns(group)
    return len(r) > 1 and statistics.pstdev(r) > min_std


@dataclass
class FillState:
    """What one iteration's batch filling saw."""

    kept: list[Group] = field(default_factory=list)
    """Groups with signal going into this iteration's batch."""
    rolled: int = 0
    """Groups rolled out this iteration."""
    dropped: int = 0
    """Zero-variance groups dropped."""
    from_buffer: int = 0
    """Groups taken from the buffer."""


def fill_batch(buffer: list[Group], new_groups: list[Group], n: int, cfg: DynamicSamplingConfig,
               state: FillState) -> None:
    """Add `new_groups` to the batch in `state` (dropping zero-variance ones when enabled); surplus
    goes to `buffer` (bounded)."""
    state.rolled += len(new_groups)
    for g in new_groups:
        if cfg.enabled and not has_signal(g, cfg.min_std):
            state.dropped += 1
        elif len(state.kept) < n:
            state.kept.append(g)
        elif len(buffer) < cfg.buffer_size:
            buffer.append(g)


def take_from_buffer(buffer: list[Group], n: int, state: FillState) -> None:
    while buffer and len(state.kept) < n:
        state.kept.append(buffer.pop(0))
        state.from_buffer += 1
