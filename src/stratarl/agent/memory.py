"""Per-episode agent state: the step view (task, strategy, history, observation) and the context
budget that drops the oldest history first when a prompt would not fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .prompts import HistoryItem, PromptConfig, StepView, render, step_messages, step_prime


@dataclass
class Budget:
    """The model's context and what a step may use of it."""

    context: int
    """Maximum tokens the model attends over."""
    max_new_tokens: int
    """Tokens reserved for the response."""

    @property
    def prompt_limit(self) -> int:
        return self.context - self.max_new_tokens


def fit_step_prompt(tokenizer: Any, view: StepView, cfg: PromptConfig, budget: Budget) -> list[int] | None:
    """Prompt ids for the step, dropping the oldest shown history until it fits; None if even an
    empty history does not fit (the episode then ends with `context_overflow`)."""
    shown = len(view.history) if cfg.history < 0 else min(cfg.history, len(view.history))
    for drop in range(shown + 1):
        ids = render(tokenizer, step_messages(view, cfg, drop_history=drop), step_prime(cfg))
        if len(ids) <= budget.prompt_limit:
            return ids
    return None


def remember(view: StepView, action: str, valid: bool, next_observation: str, admissible: list[str] | None) -> None:
    """Advance the view by one step."""
    view.history.append(HistoryItem(observation=view.observation, action=action, valid=valid))
    view.observation = next_observation
    view.step += 1
    if admissible is not None:
        view.admissible = admissible
