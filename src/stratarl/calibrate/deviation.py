"""Deviation detection (STeCa, seed 003; ALGORITHMS.md, STeCa calibration 2): pure functions over
step values.

At step t of an expert trajectory the agent acts at the expert prefix (greedy) and takes â_t. With
r_step the Monte-Carlo step value (`step_value.py`), â_t is a *deviation* when

    r_step(s_t, â_t) − r_step(s_{t−1}, a^e_{t−1}) < δ        (δ = 0)
    and â_t ≠ a^e_t  and  the agent's own continuation from â_t fails,

checked for t ≥ 2 (0-based step index: steps 0 and 1 are never checked, as in the released code, which
skips iterations 0 and 1). Only the first deviation of a trajectory is kept.

Departure from the released code, as a config key: it tests `≤` (`agent_step_reward <=
gpt_last_step_reward`), ALGORITHMS.md tests `<`; `DeviationConfig.inclusive` picks `≤`. The released
code also drops pairs whose BERT [CLS] cosine is ≥ 0.95; here actions differ when their normalised texts
differ (case and whitespace ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..agent.parse import normalize


@dataclass
class DeviationConfig:
    """When an agent's step counts as a deviation."""

    delta: float = 0.0
    """δ: a deviation when r_step(agent) − r_step(previous expert) < δ."""
    min_step: int = 2
    """First step checked (0-based index in the expert trajectory); needs ≥ 1 (a previous expert action)."""
    inclusive: bool = False
    """Test ≤ δ instead of < δ (the released code's comparison)."""
    expert_margin: float = 0.01
    """D_s: an expert sub-trajectory is kept when r_step(expert) − r_step(agent) > this margin."""


@dataclass
class StepComparison:
    """The agent and the expert at step t of one expert trajectory."""

    t: int
    """0-based index of the step in the expert trajectory (= length of the expert prefix)."""
    expert_action: str
    """a^e_t: the expert's action at this step."""
    agent_action: str
    """â_t: the agent's (greedy) action at the expert prefix."""
    agent_value: float
    """r_step(s_t, â_t): MC value of the agent's action."""
    expert_value: float
    """r_step(s_t, a^e_t): MC value of the expert's action at the same state."""
    previous_expert_value: float
    """r_step(s_{t−1}, a^e_{t−1}): MC value of the expert's previous action."""
    agent_won: bool
    """The agent's own continuation after â_t succeeded."""


def same_action(a: str, b: str) -> bool:
    """Equal after case folding and whitespace collapsing."""
    return normalize(a).lower() == normalize(b).lower()


def is_deviation(c: StepComparison, cfg: DeviationConfig) -> bool:
    """r_step(s_t, â_t) − r_step(s_{t−1}, a^e_{t−1}) < δ (≤ with `inclusive`), â_t ≠ a^e_t, and the agent's
    continuation failed; only for t ≥ `min_step`."""
    gap = c.agent_value - c.previous_expert_value
    below = gap <= cfg.delta if cfg.inclusive else gap < cfg.delta
    return c.t >= max(1, cfg.min_step) and below and not same_action(c.agent_action, c.expert_action) and not c.agent_won


def first_deviation(comparisons: list[StepComparison], cfg: DeviationConfig) -> StepComparison | None:
    """The earliest step (by t) that is a deviation, or None: STeCa calibrates only the first one."""
    return next((c for c in sorted(comparisons, key=lambda c: c.t) if is_deviation(c, cfg)), None)


def expert_beats_agent(c: StepComparison, cfg: DeviationConfig) -> bool:
    """D_s: r_step(s_t, a^e_t) − r_step(s_t, â_t) > margin (0.01), for the steps checked (t ≥ `min_step`)."""
    return c.t >= max(1, cfg.min_step) and c.expert_value - c.agent_value > cfg.expert_margin
